"""The SQL a delta column's write sends on each dialect: ``c = c + <increment>``, never the value the
engine computed (DESIGN.md section 3, "Conflicts": ``deltas``); the increment typed wide enough for
the difference of any two of the column's values, and the text constant per table, column set and set
of incremented columns."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from powersync_upload.dialects import mssql, mysql, postgresql, sqlite
from powersync_upload.schema import Column, Kind, TableSchema
from tests.unit.test_mssql_dialect import unwrap


class Recorder:
    """A DB-API connection double for every driver's call shape (cursor, execute, executemany)."""

    rowcount = 1

    def __init__(self) -> None:
        self.executed: list[tuple[str, Any]] = []

    def cursor(self) -> Recorder:
        return self

    def execute(self, sql: str | bytes, params: Any = ()) -> Recorder:
        self.executed.append((sql.decode() if isinstance(sql, bytes) else sql, params))
        return self

    def executemany(self, sql: str, params: Any) -> Recorder:
        self.executed.append((sql, params))
        return self


def table_of(types: dict[str, tuple[Kind, str]]) -> tuple[TableSchema, Column]:
    """A table ``t`` with an integer key ``id`` and the given columns ``(kind, type name)``."""
    columns = {"id": Column("id", Kind.INTEGER, type_name="int")}
    for name, (kind, type_name) in types.items():
        scale = 2 if kind is Kind.DECIMAL else None
        columns[name] = Column(name, kind, type_name=type_name, precision=12 if scale else None, scale=scale)
    return TableSchema("t", columns), columns["id"]


QUANTITY = frozenset({"quantity"})


def test_postgresql_adds_an_increment_typed_numeric_or_float8() -> None:
    # Given a table with an int4 quantity, a float8 ratio and a text name
    table, key = table_of(
        {"name": (Kind.TEXT, "text"), "quantity": (Kind.INTEGER, "int4"), "ratio": (Kind.FLOAT, "float8")}
    )
    conn = Recorder()
    adds = frozenset({"quantity", "ratio"})

    # When one row and a batch are updated with quantity and ratio as increments
    postgresql.update(conn, table, key, 1, {"name": "n", "quantity": -1, "ratio": 0.5}, adds)
    postgresql.update_many(conn, table, key, [(1, {"name": "n", "quantity": -1, "ratio": 0.5})], None, adds)

    # Then both add to the stored values; the batch's increments travel as numeric[] and float8[]
    (one, params), (many, _) = conn.executed
    assert one == 'UPDATE "t" SET "name" = %s, "quantity" = "quantity" + %s, "ratio" = "ratio" + %s WHERE "id" = %s'
    assert params == ("n", -1, 0.5, 1)
    assert many == (
        'UPDATE "t" AS t SET "name" = v.c0, "quantity" = t."quantity" + v.c1, "ratio" = t."ratio" + v.c2 '
        'FROM unnest(%b::"int"[], %b::"text"[], %b::"numeric"[], %b::"float8"[]) AS v(k, c0, c1, c2) '
        'WHERE t."id" = v.k'
    )


def test_mysql_adds_a_decimal_increment_cast_to_an_exact_decimal() -> None:
    # Given a decimal(12,2) amount and an int quantity
    table, key = table_of({"amount": (Kind.DECIMAL, "decimal"), "quantity": (Kind.INTEGER, "int")})
    conn = Recorder()
    adds = frozenset({"amount", "quantity"})

    # When one row and a batch of two are updated with both as increments
    mysql.update(conn, table, key, 1, {"amount": Decimal("-0.10"), "quantity": 2}, adds)
    rows = [(1, {"amount": Decimal("0.10"), "quantity": 2}), (2, {"amount": Decimal("1"), "quantity": -3})]
    mysql.update_many(conn, table, key, rows, None, adds)

    # Then the decimal's exact text is cast to DECIMAL(65, 2) (MySQL adds text as a DOUBLE)
    (one, params), (many, _) = conn.executed
    assert one == (
        "UPDATE `t` SET `amount` = `amount` + CAST(%s AS DECIMAL(65, 2)), `quantity` = `quantity` + %s WHERE `id` = %s"
    )
    assert params == ("-0.10", 2, 1)
    assert many == (
        "UPDATE `t` AS t JOIN (SELECT %s AS k, %s AS c0, %s AS c1 UNION ALL SELECT %s, %s, %s) AS v ON t.`id` = v.k "
        "SET t.`amount` = t.`amount` + CAST(v.c0 AS DECIMAL(65, 2)), t.`quantity` = t.`quantity` + v.c1"
    )


def test_sqlite_adds_and_rounds_a_decimal_to_its_scale() -> None:
    # Given a DECIMAL(12,2) amount and an INTEGER quantity
    table, key = table_of({"amount": (Kind.DECIMAL, "decimal"), "quantity": (Kind.INTEGER, "integer")})
    conn = Recorder()

    # When one row and a batch are updated, the batch with only quantity as an increment
    sqlite.update(conn, table, key, 1, {"amount": Decimal("0.10"), "quantity": 2}, frozenset({"amount", "quantity"}))
    sqlite.update_many(conn, table, key, [(1, {"amount": Decimal("0.10"), "quantity": 2})], None, QUANTITY)

    # Then the decimal's sum is rounded to its scale (SQLite adds REALs); amount is set in the batch
    (one, _), (many, _) = conn.executed
    assert one == 'UPDATE "t" SET "amount" = ROUND("amount" + ?, 2), "quantity" = "quantity" + ? WHERE "id" = ?'
    assert many == 'UPDATE "t" SET "amount" = ?, "quantity" = "quantity" + ? WHERE "id" = ?'


@pytest.mark.parametrize("dialect", [postgresql, mysql, sqlite, mssql], ids=lambda d: d.name)
def test_without_adds_every_value_is_set_as_it_is(dialect: Any) -> None:
    # Given a PUT-like PATCH of quantity with no incremented column (a PUT overwrites; unchecked delta)
    table, key = table_of({"quantity": (Kind.INTEGER, "int")})
    conn = Recorder()

    # When updated one row and as a batch
    dialect.update(conn, table, key, 1, {"quantity": 7})
    dialect.update_many(conn, table, key, [(1, {"quantity": 7})])

    # Then nothing adds
    assert all("+" not in unwrap(sql)[0] if dialect is mssql else "+" not in sql for sql, _ in conn.executed)


def sql_server_table() -> tuple[TableSchema, Column]:
    """A uniqueidentifier key, a smallint quantity, a decimal(12,2) amount, a real ratio, a bigint total."""
    columns = {
        "id": Column("id", Kind.UUID, type_name="uniqueidentifier"),
        "quantity": Column("quantity", Kind.INTEGER, type_name="smallint"),
        "amount": Column("amount", Kind.DECIMAL, type_name="decimal", precision=12, scale=2),
        "ratio": Column("ratio", Kind.FLOAT, type_name="real"),
        "total": Column("total", Kind.INTEGER, type_name="bigint"),
        "name": Column("name", Kind.TEXT, type_name="nvarchar", max_length=50, length_unit="utf16"),
    }
    return TableSchema("dbo.t", columns), columns["id"]


ADDED = frozenset({"quantity", "amount", "ratio", "total"})


def test_sql_server_adds_increments_declared_wider_than_the_columns() -> None:
    # Given a smallint, a decimal(12,2), a real, a bigint and an nvarchar column
    table, key = sql_server_table()
    conn = Recorder()
    values = {"name": "n", "quantity": 60000, "amount": Decimal("-0.10"), "ratio": 0.5, "total": 1}
    k = "a0000000-0000-0000-0000-000000000001"

    # When one row and a batch are updated with every number as an increment
    mssql.update(conn, table, key, k, values, ADDED)
    mssql.update_many(conn, table, key, [(k, values)], None, ADDED)

    # Then each adds to the stored value, typed wide enough for any difference of two values
    (one, declared), (many, _) = (unwrap(sql) for sql, _ in conn.executed)
    assert one == (
        "UPDATE [dbo].[t] SET [name] = @p0, [quantity] = [quantity] + @p1, [amount] = [amount] + @p2, "
        "[ratio] = [ratio] + @p3, [total] = [total] + @p4 WHERE [id] = @k"
    )
    assert declared == (
        "@k uniqueidentifier, @p0 nvarchar(50), @p1 bigint, @p2 decimal(13,2), @p3 float, @p4 decimal(20,0)"
    )
    assert many == (
        "UPDATE t SET t.[name] = j.c1, t.[quantity] = t.[quantity] + j.c2, t.[amount] = t.[amount] + j.c3, "
        "t.[ratio] = t.[ratio] + j.c4, t.[total] = t.[total] + j.c5 FROM [dbo].[t] AS t WITH (UPDLOCK) "
        "JOIN OPENJSON(@rows) WITH (c0 uniqueidentifier '$[0]', c1 nvarchar(50) '$[1]', c2 bigint '$[2]', "
        "c3 decimal(13,2) '$[3]', c4 float '$[4]', c5 decimal(20,0) '$[5]') AS j ON t.[id] = j.c0"
    )


def sql_server_texts(count: int, adds: frozenset[str]) -> list[str]:
    """The statement texts of a batch update of ``count`` rows and of one row, twice with other values."""
    table, key = sql_server_table()
    texts = []
    for attempt in range(2):
        rows = [
            (f"{attempt:08x}-0000-0000-0000-{i:012x}", {"quantity": i - attempt, "amount": Decimal(i) / 100})
            for i in range(count)
        ]
        conn = Recorder()
        mssql.update_many(conn, table, key, rows, None, adds)
        mssql.update(conn, table, key, rows[-1][0], rows[-1][1], adds)
        texts += [sql.split(", @rows = ")[0].split(", @k = ")[0] for sql, _ in conn.executed]
    return texts


@pytest.mark.parametrize("count", [1, 999, 5000])
def test_sql_server_delta_texts_do_not_depend_on_the_rows(count: int) -> None:
    # Given batches of 1, 999 and 5000 rows adding to quantity / When their statements are built
    this, one = sql_server_texts(count, QUANTITY), sql_server_texts(1, QUANTITY)

    # Then the text is the same for any row count and any values, and it adds
    assert this == one
    assert len(set(this)) == 2  # the batch update, the one-row update
    assert all("[quantity] = t.[quantity] + j.c1" in t or "[quantity] = [quantity] + @p0" in t for t in this)

    # And another set of incremented columns is another text (one per table, columns and adds)
    assert set(sql_server_texts(count, frozenset())).isdisjoint(this)
