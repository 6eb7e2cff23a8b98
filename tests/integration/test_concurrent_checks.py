"""Read-check-write under concurrency, on every engine: real connections (runtimes, each with its own
database connection) send at the same moment a delta (four sessions), a version-checked update and a
previous-values-checked update (two sessions) of the same row, 10 rounds each.

The checks read the row with the dialect's locking read and write what they computed from it. If
that read did not lock (Babelfish ignores SQL Server's lock hints: the SQL Server dialect locks there
with a no-op UPDATE of the same rows first), both sessions would read the same row, a delta would be
lost and both checked updates would succeed; four sessions on one row also make each wait behind
more than one other. Here nothing is lost: every committed delta is in the
total, and of two updates that saw the same version (or the same previous value) exactly one wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.contract import Operation, Transaction, Upload
from powersync_upload.engine import Caller, Deadline, apply_upload
from powersync_upload.handler import Runtime, set_runtime
from tests.integration.test_faults import _together
from tests.support import FIXTURES, ROOT, USERS, RowReader, available_dialects, install_runtime, reset_database

ITEM = "c0000000-0000-0000-0000-000000000001"
NOTE = "d0000000-0000-0000-0000-000000000001"
ROUNDS = 10


@pytest.fixture
def shop(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, list[Runtime]]]:
    """The shared ``shop`` fixture in a fresh database, and four runtimes (four connections) on it."""
    dialect = request.param
    migrations = sorted((ROOT / "db" / "migrations" / dialect).glob("*.sql"))
    url = reset_database(dialect, [*migrations, FIXTURES / f"shop.{dialect}.sql"], tmp_path)
    rt = install_runtime(url, FIXTURES / "shop.upload.yaml", deadline_s=20)
    workers = [Runtime(rt.settings, rt.config) for _ in range(4)]
    yield url, workers
    for worker in [rt, *workers]:
        worker.db.discard()
    set_runtime(None)


def _both(workers: list[Runtime], operations: list[Operation]) -> list[str]:
    """Worker ``i`` applies ``operations[i]``, all at once; each one's result status (``retry`` for a 503)."""
    statuses = [""] * len(operations)

    def run(i: int) -> None:
        upload = Upload([Transaction((operations[i],))], "B")
        outcome = apply_upload(upload, Caller(USERS["U1"]), workers[i].config, workers[i].db, Deadline.after(20))
        statuses[i] = "retry" if outcome.retry_after_ms is not None else outcome.results[0].status

    _together([(run, (i,)) for i in range(len(operations))])
    return statuses


def _read(url: str, table: str, row_id: str, column: str) -> Any:
    reader = RowReader(url)
    try:
        row = reader.row(table, "id", row_id, {column: 0})
    finally:
        reader.close()
    assert row is not None
    return row[column]


@pytest.mark.parametrize("shop", available_dialects(), indirect=True)
def test_concurrent_deltas_lose_nothing(shop: tuple[str, list[Runtime]]) -> None:
    # Given an item whose quantity (a deltas column) is 10, and four sessions that each add 1 to it
    url, workers = shop
    expected = 10
    for _ in range(ROUNDS):
        add_one = Operation("PATCH", "items", ITEM, {"quantity": 11}, old={"quantity": 10})

        # When all four send their delta at the same moment
        statuses = _both(workers, [add_one] * 4)

        # Then every committed delta is in the total (a 503 is resent by the client: nothing applied)
        assert set(statuses) <= {"success", "retry"}, statuses
        expected += statuses.count("success")
        assert _read(url, "items", ITEM, "quantity") == expected


@pytest.mark.parametrize("shop", available_dialects(), indirect=True)
def test_two_updates_that_saw_the_same_version_never_both_win(shop: tuple[str, list[Runtime]]) -> None:
    # Given a note at version 1 (a version column the server increments)
    url, workers = shop
    version = 1
    for round_ in range(ROUNDS):
        # When two sessions update it at the same moment, both having seen the current version
        ops = [Operation("PATCH", "notes", NOTE, {"body": f"w{i}-{round_}", "version": version}) for i in range(2)]
        statuses = _both(workers, ops)

        # Then at most one wins (the other is a CONFLICT, or a 503 to resend), and the version moved once
        assert statuses.count("success") <= 1, statuses
        assert set(statuses) <= {"success", "fatal_error", "retry"}, statuses
        version += statuses.count("success")
        assert _read(url, "notes", NOTE, "version") == version


@pytest.mark.parametrize("shop", available_dialects(), indirect=True)
def test_two_updates_that_saw_the_same_previous_value_never_both_win(shop: tuple[str, list[Runtime]]) -> None:
    # Given an item named "widget" (detect: previous_values)
    url, workers = shop
    name = "widget"
    for round_ in range(ROUNDS):
        # When two sessions rename it at the same moment, both having seen the current name
        ops = [Operation("PATCH", "items", ITEM, {"name": f"w{i}-{round_}"}, old={"name": name}) for i in range(2)]
        statuses = _both(workers, ops)

        # Then at most one wins, and the name is the winner's (or unchanged)
        assert statuses.count("success") <= 1, statuses
        if "success" in statuses:
            name = f"w{statuses.index('success')}-{round_}"
        assert _read(url, "items", ITEM, "name") == name
