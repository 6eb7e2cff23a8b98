"""``make serve`` starting up: a broken configuration or a taken port stops it at once with a message
that says what to fix (never a server that answers nothing, never a raw traceback), and a good start
says which database it writes to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, running_serve


def _serve(env_overrides: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m powersync_upload.local serve`` with the given environment; it must exit by itself."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "functions" / "upload"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite'}",
        "JWT_SECRET": "s" * 40,
        **env_overrides,
    }
    return subprocess.run(
        [sys.executable, "-m", "powersync_upload.local", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_refused(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    """Serve stopped before serving: exit status 2, each of ``phrases`` in its stderr, no traceback."""
    assert result.returncode == 2
    assert "serving" not in result.stdout
    for phrase in phrases:
        assert phrase in result.stderr
    assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_broken_upload_config_stops_serve_at_start_naming_the_key(tmp_path: Path) -> None:
    # Given an upload.yaml with a misspelt key
    config = tmp_path / "upload.yaml"
    config.write_text("tables:\n  lists:\n    colums: [name]\n", encoding="utf-8")
    # When serve starts with it
    result = _serve({"UPLOAD_CONFIG": str(config), "PORT": str(_free_port())}, tmp_path)
    # Then it exits with status 2 before serving, and the message names the file and the key
    _assert_refused(result, "configuration error, not started", str(config), "tables.lists.colums")


def test_an_invalid_environment_variable_stops_serve_at_start_naming_it(tmp_path: Path) -> None:
    # Given / When serve starts with a deadline that is not a number
    result = _serve({"DEADLINE_S": "soon", "PORT": str(_free_port())}, tmp_path)
    # Then it exits with status 2 and names the variable
    _assert_refused(result, "DEADLINE_S")


def test_a_port_in_use_stops_serve_with_what_to_do(tmp_path: Path) -> None:
    # Given another process listening on the port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When serve starts on it
        result = _serve({"PORT": str(port)}, tmp_path)
    # Then it exits with status 2, says the port is in use and how to pick another, no traceback
    _assert_refused(result, f"port {port} on 127.0.0.1 is already in use", f"PORT={port + 1} make serve")


def test_serve_prints_the_database_it_writes_to_without_a_password(tmp_path: Path) -> None:
    # Given / When serve is running against a SQLite file
    with running_serve(tmp_path) as (_base, database):
        output = (tmp_path / "serve.log").read_text(encoding="utf-8")
    # Then its start-up output names that database
    assert f"database: SQLite {database} (DATABASE_URL)" in output


def test_the_database_label_never_shows_the_password() -> None:
    from powersync_upload.local import database_label

    # Given / When a URL with a password is shown
    label = database_label("postgresql://app:s3cret@db.internal:5432/app")
    # Then user, host, port and database are named, the password is not
    assert label == "postgresql://app@db.internal:5432/app"


def test_a_port_that_is_no_port_number_stops_serve_with_a_message(tmp_path: Path) -> None:
    # Given PORT=abc / When serve starts / Then it exits 2 naming the setting, without a traceback
    result = _serve({"PORT": "abc"}, tmp_path)
    _assert_refused(result, "PORT='abc'")


def test_a_database_url_of_an_unknown_kind_stops_serve_with_a_message(tmp_path: Path) -> None:
    # Given DATABASE_URL=foo://bar / When serve starts / Then it exits 2 naming the schemes it knows
    result = _serve({"DATABASE_URL": "foo://bar", "PORT": str(_free_port())}, tmp_path)
    _assert_refused(result, "unsupported database URL scheme 'foo'")
