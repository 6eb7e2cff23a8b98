"""``tools/prereqs``, the first step of ``make test``: on a machine without what the client tests need
it stops at once with one line that says what to install (DESIGN.md section 6; README "Tests")."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support import ROOT

SCRIPT = ROOT / "tools" / "prereqs"


def _run(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    environment = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run([bash, str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=30, check=False)


def test_without_node_it_stops_at_once_with_one_line_saying_what_to_install(tmp_path: Path) -> None:
    # Given a PATH with the shell's basic tools but no node or npm
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "env"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    # When the check runs
    result = _run(str(bin_dir))
    # Then it fails with exactly one line, naming Node.js and npm and how to install them
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("make test: Node.js 20+ and npm are missing: install them")


def test_with_node_and_a_chromium_it_passes_silently(tmp_path: Path) -> None:
    # Given node and npm on PATH and CHROMIUM naming an executable
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node is not None and npm is not None, "the client tests need Node.js 20+ and npm on this machine"
    fake = tmp_path / "chrome"
    fake.write_text("#!/bin/sh\n", encoding="utf-8")
    fake.chmod(0o755)
    path = os.pathsep.join({str(Path(node).parent), str(Path(npm).parent), "/usr/bin", "/bin"})
    # When the check runs
    result = _run(path, CHROMIUM=str(fake))
    # Then it succeeds and prints nothing
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
