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


@pytest.mark.parametrize(
    "exc",
    [
        pymssql.exceptions.OperationalError(20047, b"DBPROCESS is dead or not enabled"),
        pymssql.exceptions.OperationalError(20006, b"Write to the server failed"),
        pymssql.exceptions.OperationalError(20004, b"Read from the server failed"),
        pymssql.exceptions.InterfaceError("Connection is closed."),
    ],
    ids=["20047", "20006", "20004", "closed"],
)
def test_a_dead_sql_server_session_is_a_lost_connection(exc: Exception) -> None:
    # Given / When the error pymssql raises on a session the server ended
    # Then the kept connection is replaced
    assert MSSQL.is_lost_connection(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pymssql.exceptions.OperationalError(1222, b"Lock request time out period exceeded."),
        pymssql.exceptions.OperationalError(1205, b"deadlock victim"),
        pymssql.exceptions.IntegrityError(2627, b"Violation of PRIMARY KEY constraint"),
        pymssql.exceptions.OperationalError(40501, b"The service is currently busy."),
    ],
    ids=["lock-timeout", "deadlock", "duplicate-key", "busy"],
)
def test_a_busy_or_refusing_sql_server_is_not_a_lost_connection(exc: Exception) -> None:
    # Given / When an error from a live session
    # Then the connection is not replaced (the engine answers as usual)
    assert not MSSQL.is_lost_connection(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pg_errors.AdminShutdown("terminating connection due to administrator command"),
        pg_errors.IdleSessionTimeout("terminating connection due to idle-session timeout"),
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        pg_errors.ConnectionFailure("connection failure"),
    ],
    ids=["57P01", "57P05", "closed", "08006"],
)
def test_a_terminated_postgresql_backend_is_a_lost_connection(exc: Exception) -> None:
    # Given / When the error psycopg raises on a backend the server ended
    # Then the kept connection is replaced
    assert POSTGRES.is_lost_connection(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pg_errors.LockNotAvailable("canceling statement due to lock timeout"),
        pg_errors.QueryCanceled("canceling statement due to statement timeout"),
        pg_errors.TooManyConnections("too many clients already"),
        pg_errors.NotNullViolation("null value"),
    ],
    ids=["55P03", "57014", "53300", "23502"],
)
def test_a_busy_or_refusing_postgresql_is_not_a_lost_connection(exc: Exception) -> None:
    # Given / When an error from a live backend, or one refusing new work
    # Then the connection is not replaced
    assert not POSTGRES.is_lost_connection(exc)
