"""A kept connection that the server closed while the container sat idle costs no 503: the first
statement of the next request finds it dead, and the handler reconnects once within the same
request, before anything of the transaction was sent. Real servers, the session ended from a second
connection (PostgreSQL ``pg_terminate_backend``, MariaDB and SQL Server ``KILL``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload import dialects
from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from tests.support import ROOT, available_dialects, call, install_runtime, reset_database, stored_row

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
SERVERS = [d for d in available_dialects() if d != "sqlite"]
LIST = "a0000000-0000-4000-8000-000000000001"
LIST2 = "a0000000-0000-4000-8000-000000000002"
SESSION_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()", "mssql": "SELECT @@SPID"}


@pytest.fixture
def warm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, Runtime]]:
    """A fresh database of the parametrized dialect and a handler that has served one upload (its
    connection is kept, as in a warm Lambda container)."""
    dialect: str = request.param
    url = reset_database(dialect, schema_scripts(dialect), tmp_path)
    rt = install_runtime(url, CONFIG, deadline_s=10)
    assert call({"batch": [_put(LIST, "Groceries")]}).status == 200
    yield dialect, url, rt
    rt.db.discard()
    set_runtime(None)


def _put(list_id: str, name: str) -> dict[str, Any]:
    return {"op": "PUT", "type": "lists", "id": list_id, "tx_id": 1, "data": {"name": name}}


def _scalar(conn: Any, sql: str) -> Any:
    cursor = conn.cursor()
    cursor.execute(sql)
    value = cursor.fetchone()[0]
    conn.rollback()
    return value


def _kept_session(dialect: str, rt: Runtime) -> int:
    """The server session id of the handler's kept connection (opened if there is none)."""
    return int(_scalar(rt.db.connection(5), SESSION_ID[dialect]))


def _end_session(dialect: str, url: str, session: int) -> None:
    """End ``session`` from a second connection, as an idle timeout or an administrator would."""
    module = dialects.load(dialect)
    admin = module.connect(url, 5)
    try:
        cursor = admin.cursor()
        if dialect == "postgresql":  # the dialect's connections are in autocommit mode
            cursor.execute("SELECT pg_terminate_backend(%s)", (session,))
            assert cursor.fetchone()[0] is True
        else:  # KILL in autocommit mode, outside any transaction of the admin session
            admin.autocommit(True)
            cursor.execute(f"KILL {int(session)}")
    finally:
        admin.close()


@pytest.mark.parametrize("warm", SERVERS, indirect=True)
def test_a_kept_connection_killed_while_idle_is_replaced_within_the_same_request(
    warm: tuple[str, str, Runtime],
) -> None:
    dialect, url, rt = warm
    # Given the kept connection's server session was ended while the container was idle
    session = _kept_session(dialect, rt)
    _end_session(dialect, url, session)
    # When the next upload arrives
    response = call({"batch": [_put(LIST2, "after the kill")]})
    # Then it is applied in the same request (200, not a 503 to retry) on a new session
    assert response.status == 200, response.body
    assert response.body == {"results": [{"status": "success"}]}
    assert _kept_session(dialect, rt) != session
    assert stored_row(url, "lists", LIST2)["name"] == "after the kill"  # type: ignore[index]


@pytest.mark.parametrize("warm", ["postgresql"], indirect=True)
def test_a_database_that_stays_down_after_the_kill_is_503_not_a_rejection(
    warm: tuple[str, str, Runtime],
) -> None:
    dialect, url, rt = warm
    # Given the kept connection was killed and the database now refuses new connections
    _end_session(dialect, url, _kept_session(dialect, rt))
    rt.db.url = "postgresql://postgres@127.0.0.1:1/none"
    # When the next upload arrives
    response = call({"batch": [_put(LIST2, "x")]})
    # Then the one reconnect fails and the client is told to retry: nothing is dropped
    assert response.status == 503
    assert response.body["results"][0]["status"] == "retryable_error"
    assert stored_row(url, "lists", LIST2) is None


@pytest.mark.parametrize("warm", ["postgresql"], indirect=True)
def test_a_kept_connection_ended_by_idle_session_timeout_is_replaced_within_the_same_request(
    warm: tuple[str, str, Runtime],
) -> None:
    import psycopg

    dialect, url, rt = warm
    # Given the server ends the kept session after 200 ms idle (idle_session_timeout, SQLSTATE 57P05)
    conn = rt.db.connection(5)
    session = int(_scalar(conn, SESSION_ID[dialect]))
    conn.execute("SET idle_session_timeout = 200")
    with psycopg.connect(url, autocommit=True) as admin:
        _wait_until_gone(admin, session)
    # When the next upload arrives
    response = call({"batch": [_put(LIST2, "after the timeout")]})
    # Then it is applied in the same request
    assert response.status == 200, response.body
    assert response.body == {"results": [{"status": "success"}]}


def _wait_until_gone(admin: Any, session: int) -> None:
    """Poll pg_stat_activity until the session has ended (fails after 10 s if it never does)."""
    import time

    end = time.monotonic() + 10
    while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (session,)).fetchone()[0]:
        assert time.monotonic() < end, "the idle session was never ended"
        time.sleep(0.1)
