"""A delta column's write is an increment on every engine: the dialect's ``update`` and ``update_many``
with ``adds`` run ``SET c = c + increment`` on the stored value (DESIGN.md section 3, "Conflicts":
``deltas``), so a total can never go back, even where the engine's lock did not hold.

Each test calls the dialect directly on a real database (no engine, no lock taken first): what is
stored is the stored value plus the increment, whatever the engine read before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.dialects import Dialect, load
from powersync_upload.errors import ErrorCode, FatalOpError, Reason
from powersync_upload.schema import TableSchema
from tests.support import available_dialects, reset_database

SCHEMAS = {
    "sqlite": """
CREATE TABLE counters (id INTEGER PRIMARY KEY, n SMALLINT, amount DECIMAL(24,2), ratio REAL, note TEXT);
INSERT INTO counters VALUES (1, 100, 10.10, 0.5, 'a'), (2, 200, 20.20, 1.5, 'b'), (3, NULL, NULL, NULL, 'c');
""",
    "postgresql": """
CREATE TABLE counters (id integer PRIMARY KEY, n smallint, amount numeric(24,2), ratio double precision, note text);
INSERT INTO counters VALUES (1, 100, 10.10, 0.5, 'a'), (2, 200, 20.20, 1.5, 'b'), (3, NULL, NULL, NULL, 'c');
""",
    "mysql": """
CREATE TABLE counters (id int PRIMARY KEY, n smallint, amount decimal(24,2), ratio double, note varchar(20));
INSERT INTO counters VALUES (1, 100, 10.10, 0.5, 'a'), (2, 200, 20.20, 1.5, 'b'), (3, NULL, NULL, NULL, 'c');
""",
    "mssql": """
CREATE TABLE counters (id int PRIMARY KEY, n smallint, amount decimal(24,2), ratio float, note nvarchar(20));
INSERT INTO counters VALUES (1, 100, 10.10, 0.5, N'a'), (2, 200, 20.20, 1.5, N'b'), (3, NULL, NULL, NULL, N'c');
""",
}
ALL = frozenset({"n", "amount", "ratio"})
TYPED = [d for d in available_dialects() if d != "sqlite"]
"""Dialects whose columns enforce their declared range and precision (SQLite stores a smallint past
16 bits and decimals as REALs; there the engine's check of the sum, under SQLite's write lock, is all)."""


@dataclass
class Counters:
    """An open connection to a database holding ``counters``, through one dialect."""

    dialect: Dialect
    conn: Any
    table: TableSchema

    def write(self, update: Any) -> None:
        """Run ``update(conn)`` in its own transaction and commit it."""
        self.dialect.begin(self.conn, 10)
        update(self.conn)
        self.dialect.commit(self.conn)

    def stored(self, row: int) -> dict[str, Any]:
        """The row's n, amount and ratio as committed (a REAL decimal as the Decimal of its shortest text)."""
        self.dialect.begin(self.conn, 10)
        columns = [self.table.columns[n] for n in ("n", "amount", "ratio", "note")]
        found = self.dialect.select_rows(self.conn, self.table, self.table.columns["id"], [row], columns, "share")
        self.dialect.rollback(self.conn)
        values = dict(found[0][1])
        if values["amount"] is not None:
            values["amount"] = Decimal(str(values["amount"]))
        if values["ratio"] is not None:
            values["ratio"] = float(values["ratio"])
        return values


@pytest.fixture(params=available_dialects())
def counters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Counters]:
    dialect_name = str(request.param)
    script = tmp_path / "counters.sql"
    script.write_text(SCHEMAS[dialect_name], encoding="utf-8")
    url = reset_database(dialect_name, [script], tmp_path)
    dialect = load(dialect_name)
    conn = dialect.connect(url, 10)
    table = dialect.introspect(conn, "counters")
    dialect.rollback(conn)
    assert table is not None
    yield Counters(dialect, conn, table)
    conn.close()


def test_update_adds_the_increments_to_the_stored_values(counters: Counters) -> None:
    # Given row 1 (n 100, amount 10.10, ratio 0.5, note a) and the dialect's per-operation update
    d, table, key = counters.dialect, counters.table, counters.table.columns["id"]
    change = {"n": -30, "amount": Decimal("0.20"), "ratio": 0.25, "note": "x"}

    # When it writes n, amount and ratio as increments, twice, and note as a value
    counters.write(lambda conn: d.update(conn, table, key, 1, change, ALL))
    counters.write(lambda conn: d.update(conn, table, key, 1, {**change, "amount": Decimal("0.10")}, ALL))

    # Then each stored value went up or down by the increments (0.1 + 0.2 exact); note was set
    assert counters.stored(1) == {"n": 40, "amount": Decimal("10.40"), "ratio": 1.0, "note": "x"}


def test_update_many_adds_each_rows_increment_and_leaves_null_null(counters: Counters) -> None:
    # Given rows 1 and 2, and row 3 whose counters are NULL
    d, table, key = counters.dialect, counters.table, counters.table.columns["id"]
    rows = [
        (1, {"n": 5, "amount": Decimal("-0.10"), "ratio": 0.5}),
        (2, {"n": -7, "amount": Decimal("0.30"), "ratio": -1.0}),
        (3, {"n": 1, "amount": Decimal("1.00"), "ratio": 1.0}),
    ]

    # When one batch update adds to all three
    counters.write(lambda conn: d.update_many(conn, table, key, rows, None, ALL))

    # Then each row holds its own sum; NULL plus an increment stays NULL
    assert counters.stored(1) == {"n": 105, "amount": Decimal("10.00"), "ratio": 1.0, "note": "a"}
    assert counters.stored(2) == {"n": 193, "amount": Decimal("20.50"), "ratio": 0.5, "note": "b"}
    assert counters.stored(3) == {"n": None, "amount": None, "ratio": None, "note": "c"}


def test_an_increment_wider_than_the_column_applies_when_the_sum_fits(counters: Counters) -> None:
    # Given n (a smallint) at -30000 and an increment of 60000, which no smallint holds
    d, table, key = counters.dialect, counters.table, counters.table.columns["id"]
    counters.write(lambda conn: d.update(conn, table, key, 1, {"n": -30000}))
    counters.write(lambda conn: d.update(conn, table, key, 2, {"n": -30000}))

    # When it is added by the per-operation and by the batch update
    counters.write(lambda conn: d.update(conn, table, key, 1, {"n": 60000}, frozenset({"n"})))
    counters.write(lambda conn: d.update_many(conn, table, key, [(2, {"n": 60000})], None, frozenset({"n"})))

    # Then both rows hold 30000 (only the sum must fit the column)
    assert counters.stored(1)["n"] == counters.stored(2)["n"] == 30000


@pytest.mark.parametrize("counters", TYPED, indirect=True)
@pytest.mark.parametrize("batch", [False, True], ids=["update", "update_many"])
def test_a_sum_out_of_the_columns_range_is_invalid_data_out_of_range(counters: Counters, batch: bool) -> None:
    # Given n (a smallint) at 30000
    d, table, key = counters.dialect, counters.table, counters.table.columns["id"]
    counters.write(lambda conn: d.update(conn, table, key, 1, {"n": 30000}))

    # When 10000 is added, which the database adds without the engine's check
    d.begin(counters.conn, 10)
    with pytest.raises(Exception) as caught:
        if batch:
            d.update_many(counters.conn, table, key, [(1, {"n": 10000})], None, frozenset({"n"}))
        else:
            d.update(counters.conn, table, key, 1, {"n": 10000}, frozenset({"n"}))
    d.rollback(counters.conn)

    # Then the database refuses the sum, classified as the engine's own check reports it; n is unchanged
    classified = d.classify(caught.value)
    assert isinstance(classified, FatalOpError)
    assert (classified.code, classified.reason) == (ErrorCode.INVALID_DATA, Reason.OUT_OF_RANGE)
    assert counters.stored(1)["n"] == 30000


@pytest.mark.parametrize("counters", TYPED, indirect=True)
def test_a_large_decimal_is_added_exactly(counters: Counters) -> None:
    # Given an amount of 22 digits (past a DOUBLE's 15-17)
    d, table, key = counters.dialect, counters.table, counters.table.columns["id"]
    counters.write(lambda conn: d.update(conn, table, key, 1, {"amount": Decimal("1234567890123456789.10")}))

    # When one cent is added by each update
    counters.write(lambda conn: d.update(conn, table, key, 1, {"amount": Decimal("0.01")}, frozenset({"amount"})))
    rows = [(1, {"amount": Decimal("0.01")})]
    counters.write(lambda conn: d.update_many(conn, table, key, rows, None, frozenset({"amount"})))

    # Then the sum is exact
    assert counters.stored(1)["amount"] == Decimal("1234567890123456789.12")
