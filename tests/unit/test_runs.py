"""The fast path's grouping (writes.runs) and the SQL Server batch statements, as text."""

from __future__ import annotations

from typing import Any

from powersync_upload.config import TableConfig
from powersync_upload.contract import Operation
from powersync_upload.dialects import _sql, mssql
from powersync_upload.prepare import Prepared, Target
from powersync_upload.schema import Column, Kind, TableSchema
from powersync_upload.writes import runs

KEY = Column(name="id", kind=Kind.TEXT)
TABLES = {
    name: TableSchema(name=name, columns={"id": KEY, "name": Column(name="name", kind=Kind.TEXT)})
    for name in ("lists", "todos")
}


def item(index: int, op: str, table: str, row_id: str, **values: Any) -> tuple[int, Prepared]:
    target = Target(table, TableConfig(), TABLES[table], KEY)
    operation = Operation(op, table, row_id, values or None)  # type: ignore[arg-type]
    return index, Prepared(operation, target, row_id, dict(values), "u1")


def shape(groups: list[list[tuple[int, Prepared]]]) -> list[list[int]]:
    return [[index for index, _ in group] for group in groups]


def test_a_run_ends_at_another_table_kind_column_set_or_repeated_id() -> None:
    # Given PUTs of three lists, a PUT of a todo, two PATCHes with different columns and a repeated id
    items = [
        item(0, "PUT", "lists", "a", name="x"),
        item(1, "PUT", "lists", "b", name="y"),
        item(2, "PUT", "lists", "c", name="z"),
        item(3, "PUT", "todos", "t", name="n"),
        item(4, "PATCH", "todos", "t", name="m"),
        item(5, "PATCH", "todos", "u"),
        item(6, "DELETE", "lists", "a"),
        item(7, "DELETE", "lists", "b"),
        item(8, "DELETE", "lists", "A"),
    ]
    # When they are grouped / Then queue order is kept and each boundary starts a new run
    assert shape(runs(items)) == [[0, 1, 2], [3], [4], [5], [6, 7], [8]]


def test_text_keys_differing_only_in_case_never_share_a_run() -> None:
    items = [item(0, "DELETE", "lists", "abc"), item(1, "DELETE", "lists", "ABC")]
    assert shape(runs(items)) == [[0], [1]]


def test_sql_server_batch_update_and_insert_text() -> None:
    update = mssql.values_join_update_sql("[dbo].[t]", "[id]", ["[a]", "[b]"], ["[c]"], 2)
    assert update == (
        "UPDATE t SET t.[a] = v.c0, t.[b] = v.c1, t.[c] = NULL FROM [dbo].[t] AS t WITH (UPDLOCK) "
        "JOIN (VALUES (%s, %s, %s), (%s, %s, %s)) AS v(k, c0, c1) ON t.[id] = v.k"
    )
    insert = _sql.insert_values_sql("[dbo].[t]", ["[id]", "[a]"], 2, "%s")
    assert insert == "INSERT INTO [dbo].[t] ([id], [a]) VALUES (%s, %s), (%s, %s)"


def test_split_by_existence_compares_keys_case_insensitively() -> None:
    rows = [("ABC", {"n": 1}), ("def", {"n": 2})]
    present, absent = _sql.split_by_existence(rows, [("abc", "abc")], str)
    assert present == [("ABC", {"n": 1})]
    assert absent == [("def", {"n": 2})]
