"""Fault tests on real servers, no mocks: each asserts the HTTP answer (or per-transaction result)
and the final database state. PostgreSQL and MariaDB always; SQLite where the fault exists there;
SQL Server when MSSQL_URL is set.

The promise under test: a change is committed, or kept queued on the device (503 / retryable), or
rejected with a reason; never silently dropped, never half written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.contract import Operation, Transaction, Upload
from powersync_upload.engine import Caller, Deadline, apply_upload
from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from tests.support import (
    ROOT,
    USERS,
    available_dialects,
    call,
    install_runtime,
    reset_database,
    stored_count,
    stored_row,
)

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000001"
LIST2 = "a0000000-0000-4000-8000-000000000002"
SERVERS = [d for d in available_dialects() if d != "sqlite"]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Runtime]]]:
    """Load the demo schema into a fresh database of a dialect and point the handler at it."""
    runtimes: list[Runtime] = []

    def make(dialect: str, **settings: Any) -> tuple[str, Runtime]:
        url = reset_database(dialect, schema_scripts(dialect), tmp_path)
        rt = install_runtime(url, CONFIG, **settings)
        runtimes.append(rt)
        return url, rt

    yield make
    for rt in runtimes:
        rt.db.discard()
    set_runtime(None)


def _put(list_id: str, name: str, tx: int = 1) -> dict[str, Any]:
    return {"op": "PUT", "type": "lists", "id": list_id, "tx_id": tx, "data": {"name": name}}


def _patch(list_id: str, name: str, tx: int = 1) -> dict[str, Any]:
    return {"op": "PATCH", "type": "lists", "id": list_id, "tx_id": tx, "data": {"name": name}}


@contextmanager
def _other_session(dialect: str, url: str, *, transaction: bool = True) -> Iterator[Any]:
    """A second connection of the same dialect, in a transaction (rolled back at the end) unless
    ``transaction`` is False."""
    from powersync_upload import dialects

    module = dialects.load(dialect)
    conn = module.connect(url, 5)
    if transaction:
        module.begin(conn, 30)
    try:
        yield conn
    finally:
        try:
            if transaction:
                module.rollback(conn)
        finally:
            conn.close()


def _lock_row(dialect: str, conn: Any, list_id: str) -> None:
    sql = {
        "postgresql": "SELECT 1 FROM lists WHERE id = %s FOR UPDATE",
        "mysql": "SELECT 1 FROM lists WHERE id = %s FOR UPDATE",
        # an exclusive row lock, not a locking read: Babelfish accepts and ignores lock hints
        "mssql": "UPDATE dbo.lists SET name = name WHERE id = %s",
    }[dialect]
    cursor = conn.cursor()
    cursor.execute(sql, (list_id,))
    if dialect != "mssql":
        cursor.fetchall()


def _session_id(dialect: str, conn: Any) -> int:
    cursor = conn.cursor()
    cursor.execute(
        {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()", "mssql": "SELECT @@SPID"}[dialect]
    )
    value = int(cursor.fetchone()[0])
    conn.rollback()
    return value


def _babelfish(conn: Any) -> bool:
    from powersync_upload.dialects import mssql

    return mssql.is_babelfish(conn)


def _is_waiting(dialect: str, admin: Any, session: int) -> bool:
    sql = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
        "mysql": "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = %s"
        " AND trx_state = 'LOCK WAIT'",
        "mssql": "SELECT count(*) FROM sys.dm_exec_requests WHERE session_id = %s AND blocking_session_id <> 0",
    }[dialect]
    if dialect == "mssql" and _babelfish(admin):  # no sys.dm_exec_requests there
        sql = "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
    cursor = admin.cursor()
    cursor.execute(sql, (session,))
    waiting = int(cursor.fetchone()[0]) > 0
    admin.rollback()
    return waiting


def _kill(dialect: str, admin: Any, session: int) -> None:
    cursor = admin.cursor()
    if dialect == "postgresql":
        cursor.execute("SELECT pg_terminate_backend(%s)", (session,))
    else:
        cursor.execute(f"KILL {int(session)}")
    admin.rollback()


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition (not a sleep for luck: the test fails if it never holds)."""
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, f"condition not reached: {condition}"
        time.sleep(0.15)  # InnoDB refreshes information_schema.innodb_trx at most every 0.1 s


def _groceries(fresh: Callable[..., tuple[str, Runtime]], dialect: str, deadline_s: float) -> tuple[str, Runtime]:
    """A fresh database of ``dialect`` holding one list (``LIST``, "Groceries"), the handler pointed at
    it with a request deadline of ``deadline_s`` seconds."""
    url, rt = fresh(dialect, deadline_s=deadline_s)
    assert call({"batch": [_put(LIST, "Groceries")]}).status == 200
    return url, rt


def _assert_nothing_written(url: str) -> None:
    """Nothing of a transaction that creates ``LIST2`` and changes ``LIST`` was written."""
    assert stored_row(url, "lists", LIST2) is None
    assert stored_row(url, "lists", LIST)["name"] == "Groceries"  # type: ignore[index]


def _assert_resend_applies(url: str, body: dict[str, Any], name: str) -> None:
    """Sending ``body`` (create ``LIST2``, rename ``LIST`` to ``name``) again is applied in full."""
    again = call(body)
    assert again.status == 200, again.body
    assert stored_row(url, "lists", LIST2) is not None
    assert stored_row(url, "lists", LIST)["name"] == name  # type: ignore[index]


@pytest.mark.parametrize("dialect", SERVERS)
def test_session_killed_mid_transaction_is_503_and_the_resend_succeeds(
    dialect: str, fresh: Callable[..., tuple[str, Runtime]]
) -> None:
    # Given a list, and an upload whose transaction is inside the database, waiting for a row lock
    url, rt = _groceries(fresh, dialect, 15)
    session = _session_id(dialect, rt.db.connection(5))
    body = {"batch": [_put(LIST2, "new list"), _patch(LIST, "renamed")]}
    responses: list[Any] = []
    with _other_session(dialect, url) as holder, _other_session(dialect, url, transaction=False) as admin:
        _lock_row(dialect, holder, LIST)
        worker = threading.Thread(target=lambda: responses.append(call(body)))
        worker.start()
        _wait_until(lambda: _is_waiting(dialect, admin, session))
        # When its session is killed from another connection
        _kill(dialect, admin, session)
        worker.join(20)
    # Then the client is told to retry and nothing of the transaction was written
    assert responses and responses[0].status == 503
    _assert_nothing_written(url)
    # And the resend (on a new connection) succeeds in full
    _assert_resend_applies(url, body, "renamed")


@pytest.mark.parametrize("dialect", SERVERS)
def test_locked_row_is_503_within_the_deadline_then_resend_succeeds(
    dialect: str, fresh: Callable[..., tuple[str, Runtime]]
) -> None:
    # Given a row locked by another session and a 4 s request deadline
    url, _ = _groceries(fresh, dialect, 4)
    body = {"batch": [_put(LIST2, "other"), _patch(LIST, "new")]}
    with _other_session(dialect, url) as holder:
        _lock_row(dialect, holder, LIST)
        started = time.monotonic()
        # When an upload needs that row
        response = call(body)
        elapsed = time.monotonic() - started
    # Then it answers 503 before the deadline and writes nothing of the transaction
    assert response.status == 503
    assert elapsed < 4
    _assert_nothing_written(url)
    # And after the lock is released the resend succeeds
    _assert_resend_applies(url, body, "new")


def _together(calls: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    """Run each ``(function, args)`` in a thread of its own, all at once; return when all have ended."""
    threads = [threading.Thread(target=function, args=args) for function, args in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@contextmanager
def _two_sessions(rt: Runtime) -> Iterator[list[Runtime]]:
    """Two runtimes with the configuration of ``rt`` and a database session each, discarded after."""
    workers = [Runtime(rt.settings, rt.config) for _ in range(2)]
    try:
        yield workers
    finally:
        for w in workers:
            w.db.discard()


def _apply_as_u1(worker: Runtime, upload: Upload) -> Any:
    """``upload`` applied by user U1 through ``worker``'s session, with a 10-second deadline."""
    return apply_upload(upload, Caller(USERS["U1"]), worker.config, worker.db, Deadline.after(10))


@pytest.mark.parametrize("dialect", available_dialects())
def test_opposite_order_uploads_both_apply_or_one_is_503(
    dialect: str, fresh: Callable[..., tuple[str, Runtime]]
) -> None:
    # Given two lists and two sessions that update them in opposite orders at the same time
    url, rt = fresh(dialect, deadline_s=10)
    assert call({"batch": [_put(LIST, "a"), _put(LIST2, "b", tx=2)]}).status == 200
    orders = [(LIST, LIST2), (LIST2, LIST)]
    with _two_sessions(rt) as workers:
        for round_ in range(20):
            outcomes: list[Any] = [None, None]

            def run(i: int, round_: int = round_, outcomes: list[Any] = outcomes) -> None:
                first, second = orders[i]
                ops = (
                    Operation("PATCH", "lists", first, {"name": f"w{i}-r{round_}:{first}"}),
                    Operation("PATCH", "lists", second, {"name": f"w{i}-r{round_}:{second}"}),
                )
                outcomes[i] = _apply_as_u1(workers[i], Upload([Transaction(ops)], "B"))

            _together([(run, (i,)) for i in range(2)])
            # Then each upload either committed, or answered 503 with nothing of it written
            applied = [o.committed == 1 for o in outcomes]
            for o in outcomes:
                assert o.committed == 1 or o.retry_after_ms is not None
            a = stored_row(url, "lists", LIST)["name"].partition(":")[0]  # type: ignore[index]
            b = stored_row(url, "lists", LIST2)["name"].partition(":")[0]  # type: ignore[index]
            assert a == b, f"round {round_}: half-applied transaction ({a!r}, {b!r})"
            assert a in {f"w{i}-r{round_}" for i, ok in enumerate(applied) if ok} or not any(applied)


@pytest.mark.parametrize("dialect", available_dialects())
def test_concurrent_puts_of_the_same_new_id_never_conflict(
    dialect: str, fresh: Callable[..., tuple[str, Runtime]]
) -> None:
    # Given two sessions that PUT the same new ids at the same time, 50 rounds
    url, rt = fresh(dialect)
    statuses: list[str] = []
    barrier = threading.Barrier(2)

    def run(worker: Runtime, round_: int) -> None:
        list_id = f"a0000000-0000-4000-8000-{round_:012d}"
        upload = Upload([Transaction((Operation("PUT", "lists", list_id, {"name": f"n{round_}"}),))], "B")
        barrier.wait()
        statuses.extend(r.status for r in _apply_as_u1(worker, upload).results)

    with _two_sessions(rt) as workers:
        for round_ in range(50):
            _together([(run, (w, round_)) for w in workers])
    # Then every PUT succeeded: no UNIQUE_VIOLATION, one row per id
    assert statuses == ["success"] * 100
    assert stored_count(url, "lists") == 50


@pytest.mark.parametrize("dialect", available_dialects())
def test_lost_response_then_resend_leaves_rows_as_if_sent_once(
    dialect: str, fresh: Callable[..., tuple[str, Runtime]]
) -> None:
    # Given an upload whose response was lost after COMMIT
    url, _ = fresh(dialect)
    todo = "b0000000-0000-4000-8000-000000000001"
    gone = "b0000000-0000-4000-8000-000000000002"
    body = {
        "batch": [
            _put(LIST, "Groceries"),
            {"op": "PUT", "type": "todos", "id": todo, "tx_id": 2, "data": {"list_id": LIST, "description": "a"}},
            {"op": "PATCH", "type": "todos", "id": todo, "tx_id": 2, "data": {"description": "b", "priority": 3}},
            {"op": "PUT", "type": "todos", "id": gone, "tx_id": 3, "data": {"list_id": LIST, "description": "x"}},
            {"op": "DELETE", "type": "todos", "id": gone, "tx_id": 4},
        ]
    }
    first = call(body)
    before = stored_row(url, "todos", todo)
    # When the client sends the same body again
    second = call(body)
    # Then both succeed and the rows are as if it had been sent once
    assert first.body == second.body
    assert [r["status"] for r in second.body["results"]] == ["success"] * 4
    assert stored_row(url, "todos", todo) == before
    assert before is not None and before["description"] == "b" and before["priority"] == 3
    assert stored_row(url, "todos", gone) is None
    assert stored_count(url, "todos") == 1
    assert stored_count(url, "lists") == 1


@pytest.mark.parametrize("dialect", available_dialects())
def test_unreachable_database_is_503_within_the_deadline(dialect: str) -> None:
    # Given a database address nothing listens on
    url = {
        "sqlite": "sqlite:////nonexistent-dir/for/sure/x.sqlite",
        "postgresql": "postgresql://postgres@127.0.0.1:1/none",
        "mysql": "mysql://root@127.0.0.1:1/none",
        "mssql": "mssql://sa:x@127.0.0.1:1/none",
    }[dialect]
    rt = install_runtime(url, CONFIG, deadline_s=5)
    try:
        started = time.monotonic()
        # When an upload arrives
        response = call({"batch": [_put(LIST, "x")]})
        # Then it is a 503 with Retry-After, well within the deadline
        assert response.status == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert response.body["results"][0]["status"] == "retryable_error"
        assert time.monotonic() - started < 5
        # And an empty batch needs no database at all
        assert call({"batch": []}).body == {"results": []}
    finally:
        rt.db.discard()
        set_runtime(None)


def test_busy_database_on_a_kept_connection_is_503_within_one_deadline(
    fresh: Callable[..., tuple[str, Runtime]],
) -> None:
    # Given a warm connection (one request done) and another process holding SQLite's write lock
    import sqlite3

    url, _ = fresh("sqlite", deadline_s=3)
    assert call({"batch": [_put(LIST, "Groceries")]}).status == 200
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        # When an upload arrives
        response = call({"batch": [_patch(LIST, "new")]})
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Then it is a 503 within the one deadline: a busy database is not a dead connection to replace
    assert response.status == 503
    assert elapsed < 3
