"""SQLite (stdlib ``sqlite3``): the embedded default for local runs and the fastest test target.

Storage conventions (SQLite has type affinities, not types): booleans 0/1; timestamps as ISO-8601
text ``YYYY-MM-DDTHH:MM:SS.fff`` in UTC; dates ``YYYY-MM-DD``; times ``HH:MM:SS.fff``; decimals as
their exact text (NUMERIC affinity then stores them as numbers); UUIDs as text. Declared types are
read as SQLite reads them (``INT`` anywhere means integer, and so on, see
https://www.sqlite.org/datatype3.html section 3.1), refined by common names: ``SMALLINT`` is range-
checked as 16-bit, ``VARCHAR(n)`` as n characters, ``DECIMAL(p,s)`` against p and s, ``BOOLEAN``,
``DATETIME``/``TIMESTAMP``, ``DATE``, ``TIME``, ``JSON`` and ``UUID`` by name.

Writes use ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of failing
at COMMIT; ``PRAGMA foreign_keys = ON`` is set on every connection.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from ..errors import ErrorCode, FatalOpError, Reason, RetryableError
from ..ledger import Claim, Entry
from ..schema import FLOAT32_MAX, INT_RANGES, Column, Kind, TableSchema
from . import NO_ADDS, PRUNE_ROWS, Guard, PutRow, PutRows, Rows
from ._sql import (
    STAMP,
    RowStatements,
    Statements,
    foreign_keys_from_rows,
    prune_in_sql,
    qualified,
    quote_with,
    run_ledger_claim,
    set_clauses,
    unique_from_rows,
    update_sql,
    upsert_statement,
)

name = "sqlite"
guarded_upsert = True
ordered_batches = True
PH = "?"
quote = quote_with('"', '"', percent=False)


def database_path(url: str) -> str:
    """The file of a ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``sqlite:///:memory:`` URL."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return path or ":memory:"


def connect(url: str, timeout_s: float, statement_s: float | None = None) -> sqlite3.Connection:
    """Open the file in autocommit mode (the engine issues ``BEGIN IMMEDIATE`` itself; :func:`begin`
    sets the busy timeout per transaction, ``statement_s`` is not used)."""
    conn = sqlite3.connect(database_path(url), timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def begin(conn: sqlite3.Connection, timeout_s: float) -> None:
    """``BEGIN IMMEDIATE``, waiting at most ``timeout_s`` for another writer."""
    conn.execute(f"PRAGMA busy_timeout = {max(1, int(timeout_s * 1000))}")
    conn.execute("BEGIN IMMEDIATE")


def commit(conn: sqlite3.Connection) -> None:
    """COMMIT."""
    conn.commit()


def rollback(conn: sqlite3.Connection) -> None:
    """ROLLBACK."""
    conn.rollback()


_LENGTH = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


_DECLARED = (
    (("BOOL",), Kind.BOOLEAN),
    (("DATETIME", "TIMESTAMP"), Kind.TIMESTAMP),
    (("DATE",), Kind.DATE),
    (("TIME",), Kind.TIME),
    (("UUID", "GUID"), Kind.UUID),
    (("JSON",), Kind.JSON),
    (("INT",), Kind.INTEGER),
    (("CHAR", "CLOB", "TEXT"), Kind.TEXT),
    (("REAL", "FLOA", "DOUB"), Kind.FLOAT),
    (("DEC", "NUMERIC"), Kind.DECIMAL),
)
"""Declared type -> kind: the first entry one of whose words the declared type contains (else OTHER)."""


def column_from_declared(name_: str, declared: str, notnull: bool, default: Any, hidden: int) -> Column:
    """A :class:`Column` from a ``PRAGMA table_xinfo`` row (``hidden`` 2 or 3: generated column)."""
    upper = declared.upper()
    kind = next((kind for words, kind in _DECLARED if any(word in upper for word in words)), Kind.OTHER)
    return Column(
        kind=kind,
        name=name_,
        type_name=declared,
        nullable=not notnull,
        has_default=default is not None,
        writable=hidden not in (2, 3),
        **_type_facts(kind, upper),
    )


def _type_facts(kind: Kind, upper: str) -> dict[str, Any]:
    """The :class:`Column` fields a kind needs, from the declared type (``VARCHAR(20)``, ``DECIMAL(9,2)``)."""
    size = _LENGTH.search(upper)
    first = int(size.group(1)) if size else None
    second = int(size.group(2)) if size and size.group(2) else None
    if kind in (Kind.TIMESTAMP, Kind.TIME):
        return {"fraction_digits": 3}
    if kind is Kind.INTEGER:
        width = "smallint" if "SMALLINT" in upper else "tinyint" if "TINYINT" in upper else "bigint"
        return {"int_range": INT_RANGES[width]}
    if kind is Kind.TEXT:
        return {"max_length": first}
    if kind is Kind.FLOAT:
        return {"float_max": FLOAT32_MAX if upper.strip() == "FLOAT4" else None}
    if kind is Kind.DECIMAL:
        return {"precision": first, "scale": second if first else None}
    return {}


def introspect(conn: sqlite3.Connection, table: str) -> TableSchema | None:
    """Read ``PRAGMA table_xinfo``; ``None`` when the table does not exist (also when its schema, an
    attached database's name, does not: the pragma would fail with "unknown database")."""
    schema, _, bare = table.rpartition(".")
    if schema and schema.casefold() not in {str(row[1]).casefold() for row in conn.execute("PRAGMA database_list")}:
        return None
    prefix = f"{quote(schema)}." if schema else ""
    rows = conn.execute(f"PRAGMA {prefix}table_xinfo({quote(bare)})").fetchall()
    if not rows:
        return None
    columns = {
        row[1]: column_from_declared(row[1], row[2] or "", bool(row[3]), row[4], row[6] if len(row) > 6 else 0)
        for row in rows
    }
    key = [row[1] for row in sorted(rows, key=lambda r: r[5]) if row[5]]
    foreign = [
        (r[0], r[3], r[2], r[4] if r[4] is not None else (key[0] if key else None), r[6])
        for r in conn.execute(f"PRAGMA {prefix}foreign_key_list({quote(bare)})").fetchall()
    ]
    unique, rowid_alias = _unique_rows(conn, prefix, bare, key, columns)
    if rowid_alias:
        columns[key[0]] = replace(columns[key[0]], has_default=True)
    return TableSchema(
        name=table, columns=columns, foreign_keys=foreign_keys_from_rows(foreign), **unique_from_rows(unique)
    )


def _unique_rows(
    conn: sqlite3.Connection, prefix: str, bare: str, key: list[str], columns: dict[str, Column]
) -> tuple[list[tuple[Any, ...]], bool]:
    """The primary key (``key``, from ``table_xinfo``) and the unique indexes as rows for
    :func:`unique_from_rows` (a partial index, ``index_list``'s fifth field, is loose; an expression
    member has no name), and whether the key is the rowid: a lone ``INTEGER PRIMARY KEY`` of a
    table with rowids, which has no index of its own and is assigned on insert (a default, so a PUT
    that does not send it keeps it)."""
    rows: list[tuple[Any, ...]] = [(_PRIMARY, column, True, False) for column in key]
    key_index = False
    for index in conn.execute(f"PRAGMA {prefix}index_list({quote(bare)})").fetchall():
        key_index = key_index or index[3] == "pk"
        if index[2] and index[3] != "pk":
            info = conn.execute(f"PRAGMA {prefix}index_info({quote(index[1])})").fetchall()
            rows.extend((index[1], r[2], False, bool(index[4])) for r in sorted(info))
    rowid_alias = len(key) == 1 and not key_index and columns[key[0]].type_name.strip().upper() == "INTEGER"
    return rows, rowid_alias


_PRIMARY = ("primary key",)
"""The primary key's index in :func:`_unique_rows` (``table_xinfo``'s ``pk`` positions: an
``INTEGER PRIMARY KEY`` has no index of its own); a tuple, so no index name can be it."""


def to_driver(value: Any, column: Column) -> Any:
    """Adapt a converted value to what SQLite stores (see the module docstring)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, time):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def upsert(conn: sqlite3.Connection, put: PutRow) -> int:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` (SQLite 3.24+)."""
    table, key, key_value, values, nulls, guard = put.table, put.key, put.key_value, put.values, put.nulls, put.guard
    names = list(values)
    sql = upsert_statement(STATEMENTS, table, key, names, nulls, guard[0] if guard else None)
    params = [to_driver(key_value, key)] + [to_driver(values[n], table.columns[n]) for n in names]
    return conn.execute(sql, params).rowcount


def add(stored: str, increment: str, column: Column) -> str:
    """A delta write's new value: ``stored + increment``, rounded to the scale of a ``DECIMAL(p,s)``
    column (SQLite adds its decimals as REALs: 0.1 + 0.2 would be 0.30000000000000004 where the
    engine's exact sum, stored as it is, gives 0.3). An integer sum past 64 bits becomes a REAL in
    SQLite, never an error: the engine has checked the sum against the column's range first, under
    ``BEGIN IMMEDIATE``'s write lock, which always holds."""
    if column.kind is Kind.DECIMAL and column.scale is not None:
        return f"ROUND({stored} + {increment}, {column.scale})"
    return f"{stored} + {increment}"


CHUNK = 500
"""Keys per IN list (SQLite allows 32,766 parameters since 3.32, 999 before)."""
STATEMENTS = Statements(quote, PH, to_driver, CHUNK, add)

ROWS = RowStatements(STATEMENTS, None)
"""The row statements this dialect runs as the others do (:class:`~powersync_upload.dialects._sql.RowStatements`)."""
select_value = ROWS.select_value
update = ROWS.update
delete = ROWS.delete
select_many = ROWS.select_many
delete_many = ROWS.delete_many
select_rows = ROWS.select_rows
ledger_read = ROWS.ledger_read
conflicts_insert = ROWS.conflicts_insert


def upsert_many(conn: sqlite3.Connection, put: PutRows) -> int:
    """The single-row upsert (``DO NOTHING`` with ``only_new``) through ``executemany``: one prepared
    statement, no network."""
    table, key, rows, nulls, guard, only_new = put.table, put.key, put.rows, put.nulls, put.guard, put.only_new
    names = list(rows[0][1])
    sql = upsert_statement(STATEMENTS, table, key, names, nulls, guard, do_nothing=only_new)
    params = [[to_driver(k, key)] + [to_driver(v[n], table.columns[n]) for n in names] for k, v in rows]
    return conn.executemany(sql, params).rowcount


def update_many(
    conn: sqlite3.Connection,
    table: TableSchema,
    key: Column,
    rows: Rows,
    guard: Guard = None,
    adds: frozenset[str] = NO_ADDS,
) -> int:
    """``UPDATE ... SET c = ?, d = d + ? WHERE key = ? [AND owner = ?]`` through ``executemany`` (``d``
    in ``adds``: a delta's increment, :func:`add`)."""
    names = list(rows[0][1])
    sets = set_clauses(STATEMENTS, table, names, [PH] * len(names), adds)
    sql = update_sql(qualified(table.name, quote), quote(key.name), sets, PH)
    tail = [to_driver(guard[1], guard[0])] if guard is not None else []
    if guard is not None:
        sql += f" AND {quote(guard[0].name)} = {PH}"
    params = [[to_driver(v[n], table.columns[n]) for n in names] + [to_driver(k, key), *tail] for k, v in rows]
    return conn.executemany(sql, params).rowcount


# Extended result codes: https://www.sqlite.org/rescode.html
_CONSTRAINT_CODES = {
    1299: ErrorCode.NOT_NULL_VIOLATION,  # SQLITE_CONSTRAINT_NOTNULL
    2067: ErrorCode.UNIQUE_VIOLATION,  # SQLITE_CONSTRAINT_UNIQUE
    1555: ErrorCode.UNIQUE_VIOLATION,  # SQLITE_CONSTRAINT_PRIMARYKEY
    787: ErrorCode.FOREIGN_KEY_VIOLATION,  # SQLITE_CONSTRAINT_FOREIGNKEY
    275: ErrorCode.CHECK_VIOLATION,  # SQLITE_CONSTRAINT_CHECK
}
_REOPEN = {1032}  # SQLITE_READONLY_DBMOVED: the database file was deleted or renamed (make demo under serve)
_RETRYABLE_PRIMARY = {5: "busy", 6: "locked", 10: "io_error", 13: "disk_full", 14: "cannot_open"}
_NOT_NULL_COLUMN = re.compile(r"NOT NULL constraint failed: (?:[^.\s]+\.)?(\S+)")
_NAMED_CHECK = re.compile(r"CHECK constraint failed: (\w+)$")


def classify(exc: BaseException) -> FatalOpError | RetryableError | None:
    """Map ``sqlite3`` errors by extended result code (``sqlite_errorcode``, Python 3.11+)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    found = _by_code(code, text) if isinstance(code, int) else None
    if found is not None:
        return found
    if "no such table" in text or "no such column" in text or "has no column named" in text:
        return FatalOpError(ErrorCode.SCHEMA_MISMATCH, number=code)
    if isinstance(exc, sqlite3.OperationalError) and "interrupted" in text:
        return RetryableError("timeout", number=code)
    return FatalOpError(ErrorCode.UNCLASSIFIED_ERROR, number=code)


def _by_code(code: int, text: str) -> FatalOpError | RetryableError | None:
    """An error whose extended result code says what it is; ``None`` when only its text can."""
    primary = code & 0xFF
    if code in _CONSTRAINT_CODES:
        kind = _CONSTRAINT_CODES[code]
        column = constraint = None
        if kind is ErrorCode.NOT_NULL_VIOLATION and (m := _NOT_NULL_COLUMN.search(text)):
            column = m.group(1)
        if kind is ErrorCode.CHECK_VIOLATION and (m := _NAMED_CHECK.search(text)):
            constraint = m.group(1)
        return FatalOpError(kind, column=column, constraint=constraint, number=code)
    if primary == 19:  # other SQLITE_CONSTRAINT_*
        return FatalOpError(ErrorCode.CONSTRAINT_VIOLATION, number=code)
    if code in _REOPEN:  # the file was replaced under the open connection: open it again
        return RetryableError("connection", number=code)
    if primary in _RETRYABLE_PRIMARY:
        return RetryableError(_RETRYABLE_PRIMARY[primary], in_process=primary in (5, 6), number=code)
    if primary == 20:  # SQLITE_MISMATCH
        return FatalOpError(ErrorCode.INVALID_DATA, reason=Reason.TYPE, number=code)
    return None


# ---- the ledger, the conflicts table and current-row reads (DESIGN.md section 3) -------------------


def _duplicate(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.IntegrityError) and getattr(exc, "sqlite_errorcode", None) in (2067, 1555)


def _rollback_if_open(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.rollback()


def ledger_claim(conn: sqlite3.Connection, entries: Sequence[Entry]) -> Claim:
    """``INSERT ... VALUES``; a duplicate identity (SQLITE_CONSTRAINT_UNIQUE): rolled back, read again."""
    return run_ledger_claim(conn, STATEMENTS, entries, _duplicate, _rollback_if_open)


def ledger_prune(conn: sqlite3.Connection, before: datetime) -> int:
    """``DELETE ... WHERE seq IN (SELECT seq ... WHERE decided_at < ? ORDER BY seq LIMIT n)``."""
    return conn.execute(prune_in_sql(PH, PRUNE_ROWS), (to_driver(before, STAMP),)).rowcount
