"""Logging hygiene (issue 5): no submitted value, row id, bearer token or database password reaches
the logs or the metrics, whatever happens to the request.

Uploads run through the real Lambda handler with distinctive markers in every submitted value and id,
a secret-looking token, and a database URL whose password is a marker (PostgreSQL with trust auth
ignores it; an unreachable server with one gives the connection-failure path). The outcomes cover
success, every fatal code the demo schema can produce (TOO_LARGE included), 400, 401, 413 and 503. Everything written is
captured at DEBUG level: every logging handler's stream (Powertools logs JSON to stdout through its
own handler), ``caplog`` and ``capsys`` (EMF metrics are printed), with metrics turned on. Responses
are checked too: results and messages name tables and columns, never values or ids.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from powersync_upload.handler import lambda_handler, set_runtime
from powersync_upload.local import LocalContext, schema_scripts
from tests.support import POSTGRES_URL, ROOT, SECRET, USERS, event, install_runtime, reset_database

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
MARK = "VALUE-LEAK-1234"
DB_PASSWORD = "DBPASS-LEAK-9876"
TOKEN_SECRET_CLAIM = "TOKEN-LEAK-5555"
# UUID-typed ids cannot carry the text marker: these are the distinctive ids looked for instead.
LIST_ID = "1eaf1eaf-0000-4000-8000-00000000beef"
OTHER_LIST_ID = "1eaf1eaf-0000-4000-8000-00000000cafe"
TODO_ID = "1eaf1eaf-0000-4000-8000-0000000d00d0"
MISSING_LIST_ID = "1eaf1eaf-0000-4000-8000-0000deadbeef"
FORBIDDEN = [MARK, DB_PASSWORD, TOKEN_SECRET_CLAIM, LIST_ID, OTHER_LIST_ID, TODO_ID, MISSING_LIST_ID]


def _with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, _, host = rest.rpartition("@")
    if not userinfo:
        userinfo, host = "postgres", rest
    return f"{scheme}://{userinfo.partition(':')[0]}:{password}@{host}"


def _token(user: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": USERS[user], "iat": now, "exp": now + 3600, "note": TOKEN_SECRET_CLAIM, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


class Capture:
    """Everything any logging handler writes, plus ``caplog`` and ``capsys``."""

    def __init__(self, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
        self.caplog = caplog
        self.capsys = capsys
        self.buffer = io.StringIO()
        self.stdout: list[str] = []
        self._restore: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._levels: list[tuple[logging.Logger, int]] = []

    def start(self) -> None:
        loggers = [
            logging.getLogger(),
            *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger)),
        ]
        for logger in loggers:
            if logger.name.startswith(("powersync", "aws_lambda_powertools")) or logger is logging.getLogger():
                self._levels.append((logger, logger.level))
                logger.setLevel(logging.DEBUG)
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    if handler is self.caplog.handler or any(handler is h for h, _ in self._restore):
                        continue
                    self._restore.append((handler, handler.setStream(self.buffer)))  # type: ignore[arg-type]
        self.caplog.set_level(logging.DEBUG)

    def stop(self) -> None:
        for handler, stream in self._restore:
            handler.setStream(stream)
        for logger, level in self._levels:
            logger.setLevel(level)

    def text(self) -> str:
        out, err = self.capsys.readouterr()
        self.stdout.append(out + err)
        records = "\n".join(f"{r.getMessage()} {r.__dict__} {r.exc_text or ''}" for r in self.caplog.records)
        return "\n".join([self.buffer.getvalue(), *self.stdout, records, self.caplog.text])


@pytest.fixture
def capture(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Capture]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.delenv("POWERTOOLS_LOGGER_LOG_EVENT", raising=False)
    cap = Capture(caplog, capsys)
    cap.start()
    yield cap
    cap.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    dialect = request.param
    url = reset_database(dialect, schema_scripts(dialect), tmp_path)
    if dialect == "postgresql":
        url = _with_password(url, DB_PASSWORD)  # trust auth: the password is ignored, but it is in the URL
    rt = install_runtime(url, CONFIG, max_body_bytes=64 * 1024)
    yield dialect
    rt.db.discard()
    set_runtime(None)


def send(body: Any, authorization: str | None, *, raw: str | None = None) -> dict[str, Any]:
    text = raw if raw is not None else json.dumps(body)
    return lambda_handler(event(text, authorization), LocalContext())  # type: ignore[arg-type]


def put(table: str, row_id: str, data: dict[str, Any], tx: int, op_id: int | None = None) -> dict[str, Any]:
    return {"op_id": op_id or tx, "op": "PUT", "type": table, "id": row_id, "tx_id": tx, "data": data}


Scenario = tuple[str, Any, str | None, str | None]
"""(name, body, authorization, raw text)."""


def scenarios() -> list[Scenario]:
    """(name, body, authorization, raw text) — each body full of markers."""
    u1, u2 = f"Bearer {_token('U1')}", f"Bearer {_token('U2')}"

    def one_put(name: str, table: str, row_id: str, data: dict[str, Any], tx: int, by: str | None = u1) -> Scenario:
        """A scenario whose body is one PUT, sent with the authorization ``by``."""
        return (name, {"batch": [put(table, row_id, data, tx)]}, by, None)

    todo = {"list_id": LIST_ID, "description": "d"}
    forged = jwt.encode(
        {"sub": MARK, "exp": int(time.time()) + 60, "note": TOKEN_SECRET_CLAIM},
        "wrong-secret-0123456789-abcdefghijklmno",
    )
    return [
        one_put("committed", "lists", LIST_ID, {"name": f"{MARK} groceries"}, 1),
        one_put(
            "committed todo",
            "todos",
            TODO_ID,
            {"list_id": LIST_ID, "description": MARK, "tags": [MARK], "priority": "7", "amount": "1.5"},
            1,
        ),
        one_put("unique violation", "lists", OTHER_LIST_ID, {"name": f"{MARK} groceries"}, 2),
        one_put("not null", "todos", TODO_ID, {"list_id": LIST_ID, "completed": MARK}, 3),
        one_put("missing description", "todos", TODO_ID, {"list_id": LIST_ID}, 3),
        one_put("foreign key", "todos", TODO_ID, {"list_id": MISSING_LIST_ID, "description": MARK}, 4),
        one_put("invalid integer", "todos", TODO_ID, {**todo, "priority": MARK}, 5),
        one_put("invalid decimal", "todos", TODO_ID, {**todo, "amount": MARK}, 5),
        one_put("invalid timestamp", "todos", TODO_ID, {**todo, "completed_at": MARK}, 5),
        one_put("too long", "lists", LIST_ID, {"name": MARK * 20}, 6),
        one_put("bad id", "lists", MARK, {"name": MARK}, 7),
        one_put("owner mismatch", "lists", OTHER_LIST_ID, {"name": MARK, "owner_id": USERS["U2"]}, 8),
        one_put("someone else's row", "lists", LIST_ID, {"name": MARK}, 9, by=u2),
        one_put("someone else's parent", "todos", TODO_ID, {"list_id": LIST_ID, "description": MARK}, 9, by=u2),
        one_put("column not allowed", "todos", TODO_ID, {**todo, "id_secret": MARK}, 10),
        one_put("unknown table", "unknown_table", LIST_ID, {"name": MARK}, 11),
        (
            "patch and delete",
            {
                "batch": [
                    {
                        "op_id": 12,
                        "op": "PATCH",
                        "type": "lists",
                        "id": MISSING_LIST_ID,
                        "tx_id": 12,
                        "data": {"name": MARK},
                    },
                    {
                        "op_id": 13,
                        "op": "DELETE",
                        "type": "todos",
                        "id": MISSING_LIST_ID,
                        "tx_id": 13,
                        "old": {"x": MARK},
                    },
                ]
            },
            u1,
            None,
        ),
        ("envelope: op", {"batch": [{"op": MARK, "type": "lists", "id": LIST_ID, "data": {"name": MARK}}]}, u1, None),
        ("envelope: types", {"batch": [{"op": "PUT", "type": [MARK], "id": {"x": LIST_ID}, "tx_id": MARK}]}, u1, None),
        ("envelope: both shapes", {"batch": [], "transactions": [{"crud": [{"id": MARK}]}]}, u1, None),
        ("not JSON", None, u1, f'{{"batch": [{{"id": "{MARK}", "op": "PUT"'),
        ("over the cap", None, u1, json.dumps({"batch": [put("lists", LIST_ID, {"name": MARK * 6000}, 1)]})),
        ("too large", None, u1, json.dumps({"batch": [put("lists", LIST_ID, {"name": MARK * 420_000}, 1)]})),
        one_put("no token", "lists", LIST_ID, {"name": MARK}, 1, by=None),
        one_put(
            "garbage token",
            "lists",
            LIST_ID,
            {"name": MARK},
            1,
            by=f"Bearer {MARK}.{TOKEN_SECRET_CLAIM}.SIGNATURE-LEAK-77",
        ),
        one_put("forged token", "lists", LIST_ID, {"name": MARK}, 1, by="Bearer " + forged),
        one_put(
            "expired token",
            "lists",
            LIST_ID,
            {"name": MARK},
            1,
            by=f"Bearer {_token('U1', exp=int(time.time()) - 3600)}",
        ),
    ]


def _assert_clean(text: str, where: str, tokens: list[str]) -> None:
    lowered = text.lower()
    for marker in FORBIDDEN:
        assert marker.lower() not in lowered, f"{marker!r} appears in {where}"
    for token in tokens:
        assert token not in text, f"a bearer token appears in {where}"
        signature = token.rpartition(".")[2]
        assert len(signature) < 16 or signature not in text, f"a token signature appears in {where}"


def test_nothing_submitted_reaches_logs_metrics_or_responses(database: str, capture: Capture) -> None:
    seen: dict[str, int] = {}
    codes: set[str] = set()
    for name, body, authorization, raw in scenarios():
        out = send(body, authorization, raw=raw)
        seen[name] = int(out["statusCode"])
        tokens = [authorization.partition(" ")[2]] if authorization else []
        _assert_clean(out.get("body") or "", f"the response to {name!r}", tokens)
        _assert_clean(json.dumps(out.get("headers") or {}), f"the headers of {name!r}", tokens)
        payload = json.loads(out.get("body") or "{}")
        for result in payload.get("results", []):
            if result["status"] == "fatal_error":
                codes.add(result["failed_operation"]["error_code"])
        _assert_clean(capture.text(), f"the logs after {name!r}", tokens)
    # the scenarios really covered what they claim
    assert seen["committed"] == 200 and seen["too large"] == 413 and seen["not JSON"] == 400
    assert {seen[n] for n in ("no token", "garbage token", "forged token", "expired token")} == {401}
    assert {seen[n] for n in ("envelope: op", "envelope: types", "envelope: both shapes")} == {400}
    assert seen["over the cap"] == 200  # answered per transaction (TOO_LARGE)
    expected = {"UNIQUE_VIOLATION", "NOT_NULL_VIOLATION", "FOREIGN_KEY_VIOLATION", "INVALID_DATA", "UNAUTHORIZED"}
    expected |= {"TOO_LARGE"}
    assert expected | {"SCHEMA_MISMATCH"} <= codes, codes
    text = capture.text()
    assert "transaction rejected" in text, "the logs were not captured"
    assert '"TransactionsRejected"' in text, "the EMF metrics were not captured"


def test_connection_failure_does_not_log_the_password(capture: Capture, tmp_path: Path) -> None:
    # Given a database URL with a password, pointing at a port where nothing listens
    url = _with_password(POSTGRES_URL.replace(":5432/", ":1/"), DB_PASSWORD)
    assert ":1/" in url
    rt = install_runtime(url, CONFIG)
    try:
        # When an upload needs the database
        token = _token("U1")
        out = send({"batch": [put("lists", LIST_ID, {"name": MARK}, 1)]}, f"Bearer {token}")
        # Then it is retryable, and neither the password nor any value is in the answer or the logs
        assert out["statusCode"] == 503
        _assert_clean(out["body"], "the 503 body", [token])
        text = capture.text()
        assert "database connection failed" in text
        _assert_clean(text, "the logs", [token])
    finally:
        rt.db.discard()
        set_runtime(None)


def test_unexpected_error_traceback_does_not_log_values(
    capture: Capture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an error the dialect cannot classify whose text carries the submitted value (as driver
    # messages do: PostgreSQL's DETAIL, SQL Server 2627), raised by whichever write the engine runs
    url = reset_database("sqlite", schema_scripts("sqlite"), tmp_path)
    rt = install_runtime(url, CONFIG)
    original = rt.db.dialect
    calls: list[str] = []

    class Odd(Exception):
        pass

    def boom(*args: Any, **kwargs: Any) -> Any:
        calls.append("boom")
        raise Odd(f"duplicate key value (name)=({MARK})")

    class Wrapped:
        def __getattr__(self, name: str) -> Any:
            if any(word in name for word in ("upsert", "update", "insert")):
                return boom
            return getattr(original, name)

        def classify(self, exc: BaseException) -> Any:
            return None if isinstance(exc, Odd) else original.classify(exc)

    monkeypatch.setattr(rt.db, "dialect", Wrapped())
    try:
        token = _token("U1")
        out = send({"batch": [put("lists", str(uuid.uuid4()), {"name": MARK}, 1)]}, f"Bearer {token}")
        if not calls:
            raise RuntimeError("the engine no longer writes through a method named upsert/update/insert")
        # Then the answer is retryable and the value is in neither the answer nor the logs
        assert out["statusCode"] == 503, out
        _assert_clean(out["body"], "the 503 body", [token])
        _assert_clean(capture.text(), "the logs", [token])
    finally:
        rt.db.discard()
        set_runtime(None)
