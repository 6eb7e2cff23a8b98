"""The layer is built from a lock: every package pinned with its wheel's sha256 for the layer's target
(CPython 3.12, manylinux aarch64), made from requirements.txt as it is now. Editing requirements.txt
without `make -C layers/deps lock` fails here, not in a deploy that picks whatever is newest."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

DEPS = ROOT / "layers" / "deps"
REQUIREMENTS = DEPS / "requirements.txt"
LOCK = DEPS / "requirements.lock"
ENTRY = re.compile(r"^([a-z0-9][a-z0-9-]*)==(\S+) \\\n\s+--hash=sha256:([0-9a-f]{64})$", re.MULTILINE)
EXTRAS = {("pyjwt", "crypto"): {"cryptography"}, ("psycopg", "binary"): {"psycopg-binary"}}
"""What each extra in requirements.txt brings, to find it in the lock (add a line for a new extra)."""


def _locked() -> dict[str, str]:
    text = LOCK.read_text(encoding="utf-8")
    entries = {name: version for name, version, _digest in ENTRY.findall(text)}
    names = re.findall(r"^([a-z0-9][a-z0-9-]*)==", text, re.MULTILINE)
    assert len(names) == len(entries), "every locked package needs exactly one version and a sha256 hash"
    return entries


def _requirements() -> list[Requirement]:
    lines = REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#", 1)[0].strip()) for line in lines if line.split("#", 1)[0].strip()]


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layer_lock", DEPS / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_was_made_from_requirements_txt_as_it_is_now() -> None:
    # Given the lock's record of the requirements it was made from
    recorded = re.search(r"^# requirements\.txt sha256: ([0-9a-f]{64})$", LOCK.read_text(encoding="utf-8"), re.M)
    assert recorded, "requirements.lock has no requirements.txt sha256 line"
    # Then it is the current file's: otherwise run `make -C layers/deps lock` and commit both
    assert recorded.group(1) == hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest(), (
        "layers/deps/requirements.txt changed after the lock was made: run `make -C layers/deps lock`"
    )


def test_every_requirement_and_its_extras_are_pinned_in_the_lock_within_its_bounds() -> None:
    locked = _locked()
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        # Then the package is locked at a version its bounds allow
        assert name in locked, f"{name} is required but not in requirements.lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}=={locked[name]} in the lock is outside {requirement.specifier} in requirements.txt"
        )
        # And what its extras bring is locked too
        for extra in requirement.extras:
            brought = EXTRAS.get((name, extra))
            assert brought is not None, f"add {name}[{extra}]'s packages to EXTRAS in this test"
            assert brought <= set(locked), f"{name}[{extra}] needs {brought - set(locked)} in the lock"


def test_the_lock_targets_lambdas_python_and_architecture() -> None:
    # Given the wheel each locked package was resolved to
    wheels = re.findall(r"^\s+# (\S+\.whl)$", LOCK.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(wheels) == len(_locked())
    # Then each is pure Python or built for CPython 3.12 (or the stable ABI) on manylinux aarch64
    for wheel in wheels:
        tags = wheel.removesuffix(".whl").split("-")[-3:]
        if tags[2] == "any":
            continue
        assert tags[0] in {"cp312"} or tags[1] == "abi3", wheel
        assert "aarch64" in tags[2] and "manylinux" in tags[2], wheel


def test_the_layer_build_installs_the_lock_only_with_hashes_required() -> None:
    # Given the layer's build recipe
    makefile = (DEPS / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("build-DepsLayer:", 1)[1].split("\n\n", 1)[0]
    # Then it installs requirements.lock, requiring hashes, with no dependency resolution of its own
    assert "--require-hashes --no-deps -r requirements.lock" in recipe
    assert "-r requirements.txt" not in recipe


def test_the_lock_generator_pins_each_reported_wheel_by_its_canonical_name() -> None:
    lock = _lock_module()
    # Given a pip installation report of two wheels
    report = {
        "install": [
            {
                "metadata": {"name": "typing_extensions", "version": "4.16.0"},
                "download_info": {
                    "url": "https://example.invalid/typing_extensions-4.16.0-py3-none-any.whl",
                    "archive_info": {"hashes": {"sha256": "a" * 64}},
                },
            },
            {
                "metadata": {"name": "PyJWT", "version": "2.15.1"},
                "download_info": {
                    "url": "https://example.invalid/pyjwt-2.15.1-py3-none-any.whl",
                    "archive_info": {"hashes": {"sha256": "b" * 64}},
                },
            },
        ]
    }
    # When the lock is written
    requirements = b"PyJWT>=2\n"
    text = lock.lock_text(report, requirements)
    # Then entries are sorted, canonical, pinned and hashed, and the header records the requirements' hash
    assert ENTRY.findall(text) == [("pyjwt", "2.15.1", "b" * 64), ("typing-extensions", "4.16.0", "a" * 64)]
    assert f"# requirements.txt sha256: {hashlib.sha256(requirements).hexdigest()}" in text
