"""Batch statement text shared by dialects, and the SQL Server batch statements."""

from __future__ import annotations

from powersync_upload.dialects import _sql, mssql
from powersync_upload.schema import Column, Kind, TableSchema


def test_sql_server_batch_update_and_insert_text() -> None:
    # Given a table with an int key and two int columns
    columns = {n: Column(n, Kind.INTEGER, type_name="int") for n in ("id", "a", "b", "c")}
    table, key = TableSchema("dbo.t", columns), columns["id"]

    # When the batch update (c set to NULL) and insert are built
    update = mssql.update_rows_shape(table, key, ["a", "b"], ["c"], None)
    insert = mssql.insert_rows_shape(table, key, ["a"])

    # Then both shred one JSON parameter, whatever the number of rows
    assert update.statement == (
        "UPDATE t SET t.[a] = j.c1, t.[b] = j.c2, t.[c] = NULL FROM [dbo].[t] AS t WITH (UPDLOCK) "
        "JOIN OPENJSON(@rows) WITH (c0 int '$[0]', c1 int '$[1]', c2 int '$[2]') AS j ON t.[id] = j.c0"
    )
    assert insert.statement == (
        "INSERT INTO [dbo].[t] ([id], [a]) SELECT j.c0, j.c1 "
        "FROM OPENJSON(@rows) WITH (c0 int '$[0]', c1 int '$[1]') AS j"
    )
    assert update.params == insert.params == (("@rows", "nvarchar(max)"),)
    insert_sql = _sql.insert_values_sql("[dbo].[t]", ["[id]", "[a]"], 2, "%s")
    assert insert_sql == "INSERT INTO [dbo].[t] ([id], [a]) VALUES (%s, %s), (%s, %s)"


def test_split_by_existence_compares_keys_case_insensitively() -> None:
    rows = [("ABC", {"n": 1}), ("def", {"n": 2})]
    present, absent = _sql.split_by_existence(rows, [("abc", "abc")], str)
    assert present == [("ABC", {"n": 1})]
    assert absent == [("def", {"n": 2})]


def test_unique_rows_give_the_primary_key_and_the_loose_indexes_apart() -> None:
    # Given catalog rows (index, column, primary, loose) as the PostgreSQL, MariaDB and SQL Server
    # queries return them: a composite primary key, a unique column, a filtered index, and an index
    # with an expression member (no column name)
    rows = [
        (1, "tenant", True, False),
        (1, "id", True, False),
        (2, "email", False, False),
        (3, "code", False, True),
        (4, "a", False, False),
        (4, None, False, False),
        (5, None, False, False),
    ]

    # When read
    keys = _sql.unique_from_rows(rows)

    # Then the primary key is apart from the unique indexes, and the loose ones are marked
    assert keys == {
        "primary_key": ("tenant", "id"),
        "unique": (("email",), ("code",), ("a",)),
        "loose_unique": (("code",), ("a",)),
    }
    schema = TableSchema("t", {}, **keys)
    assert [c for c in ("tenant", "id", "email", "code", "a") if schema.identifies_rows(c)] == ["email"]
