"""Batch statement text shared by dialects, and the SQL Server batch statements."""

from __future__ import annotations

from powersync_upload.dialects import _sql, mssql


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
