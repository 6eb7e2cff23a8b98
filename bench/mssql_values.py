"""The SQL Server batch statements as they were before sp_executesql and OPENJSON, for the benchmark only.

``put_1000`` runs once more with these in place of :func:`powersync_upload.dialects.mssql.upsert_many`
(:func:`installed`), so one run prints the request time of both statement forms. Each statement here
is a ``VALUES`` (or ``IN``) list of up to 1000 rows whose values pymssql interpolates into the text as
typed literals (``CAST(N'...' AS <type>)``): every text is new, so SQL Server compiles each one.
Nothing in the product imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from powersync_upload.dialects import PutRows, _sql, mssql
from powersync_upload.schema import Column, TableSchema

CURRENT = mssql.upsert_many
"""The dialect's own batch PUT (sp_executesql and OPENJSON), taken before :func:`installed` replaces it."""

CHUNK = 1000
"""Rows per ``VALUES`` list (SQL Server's limit for a table value constructor) and keys per IN list."""


def param_sql(column: Column) -> str:
    """``CAST(%s AS <type>)`` (a varchar of another collation converted under its own)."""
    target = mssql.sql_type(column)
    if target is None:
        return "%s"
    if column.type_name in ("varchar", "char") and mssql.value_sql(column, "x") != "x":
        return f"CAST(CAST(%s AS nvarchar(max)) COLLATE {column.collation} AS {target})"
    return f"CAST(%s AS {target})"


def select_many(conn: Any, table: TableSchema, key: Column, keys: list[Any], column: Column) -> list[tuple[Any, Any]]:
    """``SELECT key, column FROM t WITH (UPDLOCK, HOLDLOCK) WHERE key IN (CAST(%s AS ...), ...)``."""
    statements = _sql.Statements(mssql.quote, param_sql(key), mssql.to_driver, CHUNK)
    target = f"{_sql.qualified(table.name, mssql.quote)} WITH (UPDLOCK, HOLDLOCK)"
    return _sql.run_select_in(conn, statements, target, key, keys, column)


def upsert_many(conn: Any, put: PutRows) -> int:
    """The old batch PUT of new rows: the locking read, then one multi-row ``INSERT ... VALUES`` of
    typed literals per 1000 rows (the benchmark's ``put_1000`` inserts only new rows; existing rows
    go through the current form)."""
    table, key, rows = put.table, put.key, put.rows
    found = select_many(conn, table, key, [k for k, _ in rows], put.guard or key)
    if found or put.only_new:
        return CURRENT(conn, put)
    names = list(rows[0][1])
    columns = [key, *(table.columns[n] for n in names)]
    marks = [param_sql(c) for c in columns]
    targets = [mssql.quote(c.name) for c in columns]
    cursor = conn.cursor()
    for part in _sql.chunks(rows, CHUNK):
        row = "(" + ", ".join(marks) + ")"
        sql = f"INSERT INTO {_sql.qualified(table.name, mssql.quote)} ({', '.join(targets)}) VALUES "
        sql += ", ".join(row for _ in part)
        cells = [(k, *(values[n] for n in names)) for k, values in part]
        params = tuple(mssql.to_driver(v, c) for row_values in cells for v, c in zip(row_values, columns, strict=True))
        mssql.execute(cursor, sql, params)
    return len(rows)


@contextmanager
def installed() -> Iterator[None]:
    """The old form in place of the dialect's ``upsert_many`` while the block runs."""
    mssql.upsert_many = upsert_many
    try:
        yield
    finally:
        mssql.upsert_many = CURRENT
