"""Which driver errors at the first statement of a transaction mean "the server closed this kept
connection" (replace it once, the request goes on) and which mean the database is busy or refusing
(answer retryable, keep nothing). Real pymssql and psycopg exception objects, classified by the real
dialects; the PostgreSQL, MariaDB and SQL Server sessions killed for real are in
tests/integration/test_reconnect.py."""

from __future__ import annotations

import psycopg
import pymssql
import pytest
from psycopg import errors as pg_errors

from powersync_upload.database import Database

MSSQL = Database.from_url("mssql://sa:x@127.0.0.1:1433/db")
POSTGRES = Database.from_url("postgresql://postgres@127.0.0.1:5432/db")


LOST, LIVE = True, False
"""Whether an error means the server ended the session (replace the connection) or not (keep it)."""

CASES = [
    # the errors pymssql raises on a session the server ended
    pytest.param(
        MSSQL, pymssql.exceptions.OperationalError(20047, b"DBPROCESS is dead or not enabled"), LOST, id="mssql-20047"
    ),
    pytest.param(
        MSSQL, pymssql.exceptions.OperationalError(20006, b"Write to the server failed"), LOST, id="mssql-20006"
    ),
    pytest.param(
        MSSQL, pymssql.exceptions.OperationalError(20004, b"Read from the server failed"), LOST, id="mssql-20004"
    ),
    pytest.param(MSSQL, pymssql.exceptions.InterfaceError("Connection is closed."), LOST, id="mssql-closed"),
    # errors from a live session
    pytest.param(
        MSSQL,
        pymssql.exceptions.OperationalError(1222, b"Lock request time out period exceeded."),
        LIVE,
        id="mssql-lock-timeout",
    ),
    pytest.param(MSSQL, pymssql.exceptions.OperationalError(1205, b"deadlock victim"), LIVE, id="mssql-deadlock"),
    pytest.param(
        MSSQL,
        pymssql.exceptions.IntegrityError(2627, b"Violation of PRIMARY KEY constraint"),
        LIVE,
        id="mssql-duplicate-key",
    ),
    pytest.param(
        MSSQL, pymssql.exceptions.OperationalError(40501, b"The service is currently busy."), LIVE, id="mssql-busy"
    ),
    # the errors psycopg raises on a backend the server ended
    pytest.param(
        POSTGRES, pg_errors.AdminShutdown("terminating connection due to administrator command"), LOST, id="pg-57P01"
    ),
    pytest.param(
        POSTGRES,
        pg_errors.IdleSessionTimeout("terminating connection due to idle-session timeout"),
        LOST,
        id="pg-57P05",
    ),
    pytest.param(
        POSTGRES,
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        LOST,
        id="pg-closed",
    ),
    pytest.param(POSTGRES, pg_errors.ConnectionFailure("connection failure"), LOST, id="pg-08006"),
    # errors from a live backend, or one refusing new work
    pytest.param(POSTGRES, pg_errors.LockNotAvailable("canceling statement due to lock timeout"), LIVE, id="pg-55P03"),
    pytest.param(
        POSTGRES, pg_errors.QueryCanceled("canceling statement due to statement timeout"), LIVE, id="pg-57014"
    ),
    pytest.param(POSTGRES, pg_errors.TooManyConnections("too many clients already"), LIVE, id="pg-53300"),
    pytest.param(POSTGRES, pg_errors.NotNullViolation("null value"), LIVE, id="pg-23502"),
]


@pytest.mark.parametrize(("database", "exc", "lost"), CASES)
def test_only_a_session_the_server_ended_is_a_lost_connection(database: Database, exc: Exception, lost: bool) -> None:
    # Given / When an error at the first statement of a transaction
    # Then the kept connection is replaced exactly when the server ended the session
    assert database.is_lost_connection(exc) is lost


class RecordingDialect:
    """A dialect double that records the timeouts each connection was opened with."""

    name = "mssql"

    def __init__(self) -> None:
        self.opened: list[tuple[float, float | None]] = []

    def connect(self, url: str, timeout_s: float, statement_s: float | None = None) -> object:
        self.opened.append((timeout_s, statement_s))
        return object()


def test_a_connection_opened_late_in_a_request_keeps_the_whole_deadline_for_its_statements() -> None:
    # Given a function whose requests may take 28 s, and a connection opened with 1.5 s left
    from powersync_upload.settings import Settings

    db = Database.from_url("mssql://sa:x@127.0.0.1:1433/db", Settings.model_validate({"deadline_s": 28}))
    fake = RecordingDialect()
    db.dialect = fake  # type: ignore[assignment]

    # When it connects
    db.connection(1.5)

    # Then the login gets what is left, and the statement cap (kept for the connection's life by
    # SQL Server's driver) is the request deadline
    assert fake.opened == [(1.5, 28.0)]
