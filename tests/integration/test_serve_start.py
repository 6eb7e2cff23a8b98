"""``make serve`` starting up: a broken configuration or a taken port stops it at once with a message
that says what to fix (never a server that answers nothing, never a raw traceback), and a good start
says which database it writes to."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from tests.support import ROOT, running_serve


def _python(args: list[str], env_overrides: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in the project with the given environment; it must exit by itself."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "functions" / "upload"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite'}",
        **env_overrides,
    }
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _local(command: list[str], env_overrides: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m powersync_upload.local COMMAND`` (``demo``/``invoke``/``serve``)."""
    return _python(["-m", "powersync_upload.local", *command], env_overrides, tmp_path)


def _serve(env_overrides: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m powersync_upload.local serve`` with the given environment; it must exit by itself."""
    return _local(["serve"], {"JWT_SECRET": "s" * 40, **env_overrides}, tmp_path)


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


def test_a_table_listed_twice_stops_serve_naming_it(tmp_path: Path) -> None:
    # Given an upload.yaml with two `lists:` blocks (the first one's owner would be dropped)
    config = tmp_path / "upload.yaml"
    config.write_text("tables:\n  lists:\n    owner: owner_id\n  lists:\n    columns: [name]\n", encoding="utf-8")
    # When serve starts with it
    result = _serve({"UPLOAD_CONFIG": str(config), "PORT": str(_free_port())}, tmp_path)
    # Then it exits 2 naming the key and both lines
    assert result.returncode == 2
    assert "tables.lists is given twice (lines 2 and 4)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_jwks_file_stops_serve_naming_the_variable(tmp_path: Path) -> None:
    # Given / When serve starts with a JWKS file that does not exist
    result = _serve(
        {"JWT_SECRET": "", "JWT_JWKS_FILE": str(tmp_path / "nope.json"), "PORT": str(_free_port())}, tmp_path
    )
    # Then it exits 2 naming JWT_JWKS_FILE (never a server that answers 401 to everything)
    assert result.returncode == 2
    assert "JWT_JWKS_FILE" in result.stderr and "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_short_hs256_secret_stops_serve(tmp_path: Path) -> None:
    # Given / When serve starts with a 31-byte secret
    result = _serve({"JWT_SECRET": "s" * 31, "PORT": str(_free_port())}, tmp_path)
    # Then it exits 2 naming the variable and the rule
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr and "32 bytes" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["demo"], ["invoke", "events/01-shape-a-two-transactions.json"], ["serve"]])
def test_an_unknown_log_level_stops_each_local_command_naming_it(command: list[str], tmp_path: Path) -> None:
    # Given / When a local command starts with POWERTOOLS_LOG_LEVEL=verbose
    result = _local(command, {"POWERTOOLS_LOG_LEVEL": "verbose", "PORT": str(_free_port())}, tmp_path)
    # Then it exits 2 naming the variable, no traceback
    assert result.returncode == 2
    assert "POWERTOOLS_LOG_LEVEL" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_level_trace_works_as_debug(tmp_path: Path) -> None:
    # Given / When invoke runs an event with POWERTOOLS_LOG_LEVEL=trace (Lambda's advanced logging name)
    result = _local(["invoke", "events/01-shape-a-two-transactions.json"], {"POWERTOOLS_LOG_LEVEL": "trace"}, tmp_path)
    # Then it runs (the demo database is not loaded, so the answer itself does not matter here)
    assert result.returncode == 0, result.stderr
    assert "== 01-shape-a-two-transactions.json: HTTP" in result.stdout
    assert "Traceback" not in result.stderr


def test_invoke_of_a_rest_api_payload_v1_event_answers_unsupported(tmp_path: Path) -> None:
    # Given an API Gateway REST API (payload format 1.0) event
    v1 = {
        "resource": "/api/data",
        "path": "/api/data",
        "httpMethod": "POST",
        "headers": {"content-type": "application/json"},
        "requestContext": {"resourcePath": "/api/data", "httpMethod": "POST", "requestId": "r1"},
        "body": '{"batch": []}',
        "isBase64Encoded": False,
    }
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(v1), encoding="utf-8")
    # When invoke runs it
    result = _local(["invoke", str(path)], {}, tmp_path)
    # Then the answer says the event format is not supported (a 400, never a 503 for ever)
    assert "HTTP 400" in result.stdout
    assert "unsupported event format" in result.stdout


def test_serve_prints_a_development_token_carrying_the_configured_issuer_and_audience() -> None:
    # Given JWT_ISSUER and JWT_AUDIENCE without JWT_SECRET
    from powersync_upload.auth import verify_bearer
    from powersync_upload.local import DEV_SECRET, development_claims
    from powersync_upload.settings import Settings

    environ = {"JWT_ISSUER": "https://issuer.example/", "JWT_AUDIENCE": "app"}
    # When serve builds its development token
    token = jwt.encode(development_claims(environ), DEV_SECRET, algorithm="HS256")
    # Then serve's own verification accepts it
    settings = Settings(jwt_secret=DEV_SECRET, jwt_issuer=environ["JWT_ISSUER"], jwt_audience=environ["JWT_AUDIENCE"])
    assert verify_bearer(f"Bearer {token}", settings)["sub"] == "11111111-1111-1111-1111-111111111111"


def test_on_lambda_a_configuration_mistake_is_an_init_error_naming_the_key(tmp_path: Path) -> None:
    # Given the Lambda runtime's environment and an upload.yaml listing a table twice
    config = tmp_path / "upload.yaml"
    config.write_text("tables:\n  lists: {}\n  lists: {}\n", encoding="utf-8")
    env = {"AWS_LAMBDA_FUNCTION_NAME": "powersync-upload", "UPLOAD_CONFIG": str(config)}
    # When the runtime imports the entry module (its init phase: Handler app.lambda_handler)
    result = _python(["-c", "import app"], env, tmp_path)
    # Then the import fails (an init error: the function never answers) and the error names the key
    assert result.returncode != 0
    assert "tables.lists is given twice" in result.stderr
