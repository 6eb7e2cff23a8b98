"""What ships is pinned and precompiled: the SAM CLI is the same version in the Makefile (CI) and the
deploy workflow, deploys wait for the tests, and the function's package carries CPython 3.12 .pyc
files (Lambda's file system is read-only, so it cannot cache them)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def _workflow(name: str) -> dict[str, object]:
    document: dict[object, object] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    return {str("on" if key is True else key): value for key, value in document.items()}


def test_the_deploy_workflow_and_the_makefile_pin_the_same_sam_cli() -> None:
    # Given the Makefile's SAM_CLI_VERSION and the deploy workflow's
    makefile = re.search(r"^SAM_CLI_VERSION := (\S+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    deploy = _workflow("deploy-stack.yml")
    # Then both are one exact version, the same, and the workflow installs exactly it
    assert makefile and re.fullmatch(r"\d+\.\d+\.\d+", makefile.group(1))
    assert deploy["env"]["SAM_CLI_VERSION"] == makefile.group(1)  # type: ignore[index]
    steps = deploy["jobs"]["deploy"]["steps"]  # type: ignore[index]
    installs = [s["run"] for s in steps if "aws-sam-cli" in str(s.get("run", ""))]
    assert installs == ['python -m pip install --disable-pip-version-check "aws-sam-cli==$SAM_CLI_VERSION"']


def test_deploys_run_only_after_the_test_workflow_and_prod_waits_for_dev_and_its_environment() -> None:
    # Given the deploy workflow
    deploy = _workflow("deploy.yml")
    triggers = deploy["on"]
    jobs = deploy["jobs"]
    # Then it never deploys on a push: only after the test workflow completes on main, or by hand
    assert set(triggers) == {"workflow_run", "workflow_dispatch"}  # type: ignore[arg-type]
    assert triggers["workflow_run"] == {"workflows": ["test"], "types": ["completed"], "branches": ["main"]}  # type: ignore[index]
    assert _workflow("test.yml")["name"] == "test"
    # And every deploy job needs the gate; prod also needs dev, and runs in the `prod` environment
    assert jobs["dev"]["needs"] == "gate" and jobs["prod"]["needs"] == ["gate", "dev"]  # type: ignore[index]
    assert jobs["prod"]["with"]["environment"] == "prod"  # type: ignore[index]
    stack = _workflow("deploy-stack.yml")["jobs"]["deploy"]  # type: ignore[index]
    assert stack["environment"]["name"] == "${{ inputs.environment }}"  # type: ignore[index]
    gate = jobs["gate"]["steps"][0]["run"]  # type: ignore[index]
    assert '"$RUN_CONCLUSION" != success' in gate and '"$RUN_EVENT" != push' in gate


def test_the_function_package_ships_python_3_12_bytecode(tmp_path: Path) -> None:
    # Given the function's build recipe (what `sam build` runs), with the Python 3.12 it finds
    make = shutil.which("make")
    assert make is not None
    # When it builds into a scratch directory
    subprocess.run(
        [make, "-s", "-C", str(ROOT / "functions" / "upload"), "build-UploadFunction", f"ARTIFACTS_DIR={tmp_path}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then every module of the package has a CPython 3.12 .pyc beside it, and app.py too
    sources = sorted(p for p in tmp_path.rglob("*.py"))
    assert len(sources) > 10
    for source in sources:
        assert (source.parent / "__pycache__" / f"{source.stem}.cpython-312.pyc").is_file(), source
