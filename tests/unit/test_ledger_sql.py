"""The ledger's and the conflicts table's statements as the dialects send them (no database).

These tests check statement text, parameters and the order of driver calls, with a recording
connection and, for SQL Server, a real pymssql exception object for the duplicate key (2627). They
do not stand in for a SQL Server: the integration tests run the same functions on real databases.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pymssql
import pytest

from powersync_upload import ledger
from powersync_upload.dialects import PRUNE_ROWS, _sql, mssql, mysql
from tests.unit.test_mssql_dialect import unwrap


@pytest.fixture(autouse=True)
def sql_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQL Server's statement texts, whatever server an earlier test in this process connected to."""
    monkeypatch.setattr(mssql, "SERVER", mssql.Server(babelfish=False, level=160))


ENTRY = ledger.entry(ledger.Identity("u1", "c1", 5, 9, "d" * 64), {"status": "success"}, datetime(2026, 12, 1, 12))


class Recording:
    """A DB-API connection double: records calls; ``fail`` raises once from the first INSERT."""

    def __init__(self, fail: BaseException | None = None, rows: list[tuple[Any, ...]] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail
        self.rows = rows or []
        self.rowcount = 0

    def cursor(self) -> Recording:
        return self

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.calls.append((sql, params))
        if self.fail is not None and "INSERT" in sql.split(" FROM ")[0]:
            fail, self.fail = self.fail, None
            raise fail

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def nextset(self) -> bool | None:
        return None

    def rollback(self) -> None:
        self.calls.append(("ROLLBACK", None))


def test_the_ledger_read_is_one_seek_on_user_client_and_digests() -> None:
    # Given a request with three identities, two of them with the same digest
    conn = Recording()

    # When its ledger rows are read
    mssql.ledger_read(conn, "u1", "c1", ["a" * 64, "b" * 64, "a" * 64])

    # Then one statement asks for the distinct digests of that user and client (one JSON parameter)
    ((sql, params),) = conn.calls
    assert unwrap(sql)[0] == (
        "SELECT first_op_id, last_op_id, digest, result, decided_at FROM powersync_upload_ledger "
        "WHERE user_id = @user AND client_id = @client AND digest IN "
        "(SELECT j.c0 FROM OPENJSON(@rows) WITH (c0 nchar(64) '$[0]') AS j)"
    )
    assert params[:2] == ("u1", "c1")
    assert json.loads(params[2]) == [["a" * 64], ["b" * 64]]


def test_the_ledger_claim_is_one_insert_of_every_row_with_its_result_and_time() -> None:
    # Given two decided transactions
    other = ledger.entry(ledger.Identity("u1", "c1", 10, 10, "e" * 64), {"status": "fatal_error"}, ENTRY.decided_at)
    conn = Recording()

    # When they are claimed
    claim = mssql.ledger_claim(conn, [ENTRY, other])

    # Then one INSERT carries both rows (7 cells each, one JSON parameter) and the claim holds
    ((sql, params),) = conn.calls
    statement = unwrap(sql)[0]
    assert statement.startswith("INSERT INTO powersync_upload_ledger (user_id, client_id, first_op_id, last_op_id, ")
    rows = json.loads(params[0])
    assert len(rows) == 2
    assert rows[0] == ["u1", "c1", 5, 9, "d" * 64, '{"status":"success"}', "2026-12-01T12:00:00.000"]
    assert claim == ledger.CLAIMED


def test_a_duplicate_identity_rolls_back_and_answers_the_stored_row_never_a_unique_violation() -> None:
    # Given the insert fails with SQL Server's duplicate key error, and the read then finds the row
    stored = (5, 9, "d" * 64, '{"status":"success"}', ENTRY.decided_at)
    duplicate = pymssql.exceptions.IntegrityError(2627, b"Violation of UNIQUE KEY constraint 'uq'. (secret)")
    conn = Recording(fail=duplicate, rows=[stored])

    # When the transaction is claimed
    claim = mssql.ledger_claim(conn, [ENTRY])

    # Then: INSERT, ROLLBACK, the read, ROLLBACK (each rollback guarded: IF @@TRANCOUNT > 0 ROLLBACK TRAN);
    # the stored row returned
    kinds = [unwrap(c[0])[0].split(" ")[0] if c[0].startswith("EXEC") else c[0].split(" ")[0] for c in conn.calls]
    assert kinds == ["INSERT", "IF", "SELECT", "IF"]
    assert all("ROLLBACK" in c[0] for c in conn.calls if c[0].startswith("IF"))
    assert claim == ledger.Claim(claimed=False, stored=(stored,))


def test_another_error_on_the_ledger_insert_is_raised_for_the_engine_to_classify() -> None:
    # Given the insert fails with a deadlock (1205)
    conn = Recording(fail=pymssql.exceptions.OperationalError(1205, b"deadlock"))

    # When / Then the error propagates and nothing was rolled back here
    with pytest.raises(pymssql.exceptions.OperationalError) as caught:
        mssql.ledger_claim(conn, [ENTRY])
    assert caught.value.args[0] == 1205
    assert [c for c in conn.calls if c[0] == "ROLLBACK"] == []


def test_pruning_deletes_at_most_a_bounded_number_of_old_rows() -> None:
    # Given a cutoff / When each dialect's prune statement is built / Then it is bounded and oldest-first
    cutoff = datetime(2026, 11, 24)
    conn = Recording()
    mssql.ledger_prune(conn, cutoff)
    mysql.ledger_prune(conn, cutoff)
    assert unwrap(conn.calls[0][0]) == (
        f"DELETE TOP ({PRUNE_ROWS}) FROM powersync_upload_ledger WHERE decided_at < @before",
        "@before datetime2(3)",
    )
    assert conn.calls[0][1] == ("2026-11-24T00:00:00.000",)
    assert conn.calls[1][0].endswith(f"WHERE decided_at < %s ORDER BY seq LIMIT {PRUNE_ROWS}")
    assert _sql.prune_in_sql("?", 3) == (
        "DELETE FROM powersync_upload_ledger WHERE seq IN "
        "(SELECT seq FROM powersync_upload_ledger WHERE decided_at < ? ORDER BY seq LIMIT 3)"
    )


def test_a_conflict_row_is_inserted_with_every_column_and_resolved_0() -> None:
    # Given a conflict row without `resolved`
    row = {name: f"v-{name}" for name in _sql.CONFLICT_COLUMNS if name not in ("resolved", "created_at")}
    row["created_at"] = datetime(2026, 12, 1, 12, 0, 0, 123000)
    conn = Recording()

    # When it is inserted
    mssql.conflicts_insert(conn, [row])

    # Then one INSERT names the twelve columns; created_at as millisecond text; resolved 0
    ((sql, params),) = conn.calls
    statement = unwrap(sql)[0]
    assert statement.startswith(
        "INSERT INTO powersync_upload_conflicts (id, user_id, client_id, transaction_id, op_id, "
    )
    (cells,) = json.loads(params[0])
    assert len(cells) == len(_sql.CONFLICT_COLUMNS) == 12
    assert cells[-2:] == ["2026-12-01T12:00:00.123", 0]
