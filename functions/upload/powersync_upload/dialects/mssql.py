"""Microsoft SQL Server 2019+ (and Azure SQL) through pymssql >= 2.4.3.

* Upsert: ``UPDATE t WITH (UPDLOCK, SERIALIZABLE) ... ; IF @@ROWCOUNT = 0 INSERT ...``, the
  concurrency-safe single-row pattern (no MERGE: it needs HOLDLOCK, raises 8672 on duplicate source
  keys and is not supported by Babelfish). The key-range lock taken by the UPDATE makes a concurrent
  insert of the same id wait instead of failing with 2627.
* Ownership reads use ``WITH (UPDLOCK, HOLDLOCK)`` (a row about to be written) or ``WITH (HOLDLOCK)``
  (a referenced parent), so the row cannot change or appear before COMMIT.
* pymssql interpolates parameters into the SQL text on the client: names are quoted with ``[...]``
  and ``%`` doubled; values go as literals of their Python type, so decimals are sent as exact
  ``'f'`` text, UUIDs as text, and timestamps as ISO 8601 text with ``T`` (language-independent for
  ``datetime``, ``datetime2`` and ``datetimeoffset``) cut to the column's fractional digits.
* ``nvarchar(n)`` counts UTF-16 code units: introspection reports ``length_unit='utf16'``.
* Lock waits end after ``SET LOCK_TIMEOUT`` (error 1222, retried in process); statements end after
  the connection's query ``timeout`` (DB-Lib 20003, retryable: the connection is then discarded).

Error numbers: FACTS.md "SQL Server" (Microsoft.Data.SqlClient ``SqlConfigurableRetryFactory``
transient list, EF Core ``SqlServerTransientExceptionDetector``, Azure SQL "troubleshoot common
errors"), and the SQL Server "Database engine events and errors" reference for the data errors.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymssql

from ..errors import ErrorCode, FatalOpError, Reason, RetryableError
from ..ledger import TABLE as LEDGER_TABLE
from ..ledger import Claim, Entry
from ..schema import FLOAT32_MAX, INT_RANGES, Column, Kind, LengthUnit, TableSchema
from . import PRUNE_ROWS, Guard, Lock
from ._sql import (
    STAMP,
    Statements,
    chunks,
    insert_values_sql,
    qualified,
    quote_with,
    run_conflicts_insert,
    run_delete,
    run_delete_in,
    run_ledger_claim,
    run_ledger_read,
    run_select_in,
    run_select_rows,
    run_select_value,
    run_update,
    split_by_existence,
    table_with_constraints,
)

name = "mssql"
guarded_upsert = False
ordered_batches = False
PH = "%s"
quote = quote_with("[", "]", percent=True)


def connect_args(url: str, timeout_s: float) -> dict[str, Any]:
    """pymssql.connect keyword arguments for ``mssql://user:password@host:port/database?opt=value``.

    Query options ``tds_version``, ``encryption`` (``require``/``off``/``request``) and ``appname``
    are passed through.
    """
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    args: dict[str, Any] = {
        "server": parts.hostname or "localhost",
        "port": str(parts.port or 1433),
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")) or "master",
        "login_timeout": max(1, int(timeout_s)),
        "timeout": max(1, int(timeout_s)),
        "autocommit": False,
        "appname": options.get("appname", "powersync-upload"),
        "tds_version": options.get("tds_version", "7.4"),
    }
    if "encryption" in options:
        args["encryption"] = options["encryption"]
    return args


def connect(url: str, timeout_s: float) -> Any:
    """Open a connection; pymssql issues ``BEGIN TRAN`` at connect and after each commit/rollback."""
    return pymssql.connect(**connect_args(url, timeout_s))


def begin(conn: Any, timeout_s: float) -> None:
    """Cap this transaction: statements end after ``timeout_s`` (pymssql's query timeout, which is
    process-global: one connection per container), lock waits after at most 5 s (``SET LOCK_TIMEOUT``)."""
    conn._conn.query_timeout = max(1, int(timeout_s))
    lock_ms = max(100, min(int(timeout_s * 1000), 5000))
    conn.cursor().execute(f"SET LOCK_TIMEOUT {lock_ms}")


def commit(conn: Any) -> None:
    """COMMIT (pymssql then opens the next transaction itself)."""
    conn.commit()


def rollback(conn: Any) -> None:
    """ROLLBACK (pymssql hides error 3903 when SQL Server already rolled the transaction back)."""
    conn.rollback()


_INTROSPECT = """
SELECT c.name, TYPE_NAME(c.system_type_id), c.max_length, c.precision, c.scale, c.is_nullable,
       c.is_identity, c.is_computed, CASE WHEN c.default_object_id <> 0 THEN 1 ELSE 0 END,
       COALESCE(c.collation_name, '')
FROM sys.columns c
WHERE c.object_id = OBJECT_ID(%s, 'U')
ORDER BY c.column_id
"""

_INTS = {"tinyint": "tinyint_unsigned", "smallint": "smallint", "int": "int", "bigint": "bigint"}


def column_from_catalog(row: tuple[Any, ...]) -> Column:
    """A :class:`Column` from one ``sys.columns`` row of :data:`_INTROSPECT`."""
    col, type_name, max_length, precision, scale, nullable, identity, computed, has_default, collation = row
    type_name = str(type_name).lower()
    common: dict[str, Any] = {
        "name": col,
        "type_name": type_name,
        "nullable": bool(nullable),
        "has_default": bool(has_default) or bool(identity),
        "writable": not identity and not computed and type_name != "timestamp",
    }
    if type_name in _INTS:
        return Column(kind=Kind.INTEGER, int_range=INT_RANGES[_INTS[type_name]], **common)
    if type_name == "bit":
        return Column(kind=Kind.BOOLEAN, **common)
    if type_name in ("decimal", "numeric", "money", "smallmoney"):
        return Column(kind=Kind.DECIMAL, precision=precision, scale=scale, **common)
    if type_name in ("float", "real"):
        is_real = type_name == "real" or (precision is not None and precision <= 24)
        return Column(kind=Kind.FLOAT, float_max=FLOAT32_MAX if is_real else None, **common)
    if type_name == "uniqueidentifier":
        return Column(kind=Kind.UUID, **common)
    if type_name == "datetime2":
        return Column(kind=Kind.TIMESTAMP, fraction_digits=scale, **common)
    if type_name == "datetime":
        return Column(kind=Kind.TIMESTAMP, fraction_digits=3, **common)
    if type_name == "smalldatetime":
        return Column(kind=Kind.TIMESTAMP, fraction_digits=0, **common)
    if type_name == "datetimeoffset":
        return Column(kind=Kind.TIMESTAMPTZ, fraction_digits=scale, **common)
    if type_name == "date":
        return Column(kind=Kind.DATE, **common)
    if type_name == "time":
        return Column(kind=Kind.TIME, fraction_digits=scale, **common)
    if type_name == "json":
        return Column(kind=Kind.JSON, **common)
    if type_name in ("nvarchar", "nchar"):
        length = None if max_length == -1 else max_length // 2
        return Column(kind=Kind.TEXT, max_length=length, length_unit="utf16", **common)
    if type_name in ("varchar", "char"):
        unit: LengthUnit = "bytes" if "UTF8" in str(collation).upper() else "chars"
        return Column(kind=Kind.TEXT, max_length=None if max_length == -1 else max_length, length_unit=unit, **common)
    if type_name in ("ntext", "text"):
        return Column(kind=Kind.TEXT, **common)
    return Column(kind=Kind.OTHER, **common)


def introspect(conn: Any, table: str) -> TableSchema | None:
    """Read ``sys.columns``, ``sys.foreign_keys`` and unique ``sys.indexes`` of the user table (``name`` or
    ``schema.name``); ``None`` when missing (three round trips, once per container)."""
    cursor = conn.cursor()
    name = qualified(table, quote_with("[", "]", percent=False))
    cursor.execute(_INTROSPECT, (name,))
    rows = cursor.fetchall()
    if not rows:
        return None
    columns = {row[0]: column_from_catalog(row) for row in rows}
    return table_with_constraints(cursor, table, columns, _FOREIGN_KEYS, _UNIQUE, (name,))


_FOREIGN_KEYS = """
SELECT fk.object_id, pc.name, OBJECT_SCHEMA_NAME(fk.referenced_object_id) + '.' + OBJECT_NAME(fk.referenced_object_id),
       rc.name, fk.delete_referential_action_desc
FROM sys.foreign_keys fk
JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id
JOIN sys.columns pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
WHERE fk.parent_object_id = OBJECT_ID(%s, 'U')
ORDER BY fk.object_id, fkc.constraint_column_id
"""
_UNIQUE = """
SELECT i.index_id, c.name
FROM sys.indexes i
JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
WHERE i.object_id = OBJECT_ID(%s, 'U') AND i.is_unique = 1 AND i.is_primary_key = 0 AND ic.is_included_column = 0
ORDER BY i.index_id, ic.key_ordinal
"""


def to_driver(value: Any, column: Column) -> Any:
    """Adapt a converted value for pymssql's client-side interpolation (see the module docstring)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        digits = column.fraction_digits
        spec = "seconds" if digits == 0 else "milliseconds" if digits <= 3 else "microseconds"
        return value.isoformat(timespec=spec)
    if isinstance(value, time):
        return value.isoformat(timespec="milliseconds" if column.fraction_digits <= 3 else "microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


_LOCK_HINTS = {"update": "WITH (UPDLOCK, HOLDLOCK)", "share": "WITH (HOLDLOCK)"}


def select_value(
    conn: Any, table: TableSchema, key: Column, key_value: Any, column: Column, lock: Lock
) -> tuple[bool, Any]:
    """``SELECT column FROM t WITH (UPDLOCK, HOLDLOCK) WHERE key = %s`` (or a shared HOLDLOCK)."""
    target = f"{qualified(table.name, quote)} {_LOCK_HINTS[lock]}"
    return run_select_value(conn, STATEMENTS, target, key, key_value, column)


def upsert_sql(table: str, key: str, columns: list[str], nulls: list[str]) -> str:
    """The T-SQL batch for PUT. Parameters: the values of ``columns``, the key, the key, the values again
    (or, with nothing to update: the key, the key, the values)."""
    names = [key, *columns]
    insert = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(PH for _ in names)})"
    sets = [f"{c} = {PH}" for c in columns] + [f"{c} = NULL" for c in nulls]
    if not sets:
        return f"IF NOT EXISTS (SELECT 1 FROM {table} WITH (UPDLOCK, SERIALIZABLE) WHERE {key} = {PH}) {insert}"
    return (
        f"UPDATE {table} WITH (UPDLOCK, SERIALIZABLE) SET {', '.join(sets)} WHERE {key} = {PH}; "
        f"IF @@ROWCOUNT = 0 {insert}"
    )


def upsert(
    conn: Any,
    table: TableSchema,
    key: Column,
    key_value: Any,
    values: dict[str, Any],
    nulls: list[str],
    guard: tuple[Column, Any] | None,
) -> int:
    """PUT. ``guard`` is not needed here: the engine's ``UPDLOCK, HOLDLOCK`` read already holds the
    key range, so no other session can insert or change the row before COMMIT."""
    names = list(values)
    sql = upsert_sql(
        qualified(table.name, quote), quote(key.name), [quote(n) for n in names], [quote(n) for n in nulls]
    )
    driver_values = [to_driver(values[n], table.columns[n]) for n in names]
    key_param = to_driver(key_value, key)
    params = [*driver_values, key_param, key_param, *driver_values]  # see upsert_sql
    conn.cursor().execute(sql, tuple(params))
    return 1


def update(conn: Any, table: TableSchema, key: Column, key_value: Any, values: dict[str, Any]) -> int:
    """``UPDATE ... WHERE key = ?``; returns rows matched."""
    return run_update(conn, STATEMENTS, table, key, key_value, values)


def delete(conn: Any, table: TableSchema, key: Column, key_value: Any) -> int:
    """``DELETE ... WHERE key = ?``; returns rows deleted."""
    return run_delete(conn, STATEMENTS, table, key, key_value)


CHUNK = 1000
"""Rows per ``VALUES`` list (SQL Server's limit for a table value constructor) and keys per IN list."""
STATEMENTS = Statements(quote, PH, to_driver, CHUNK)


def select_many(
    conn: Any, table: TableSchema, key: Column, key_values: list[Any], column: Column, lock: Lock
) -> list[tuple[Any, Any]]:
    """``SELECT key, column ... WHERE key IN (...)``, locked as :func:`select_value` locks."""
    return run_select_in(
        conn, STATEMENTS, f"{qualified(table.name, quote)} {_LOCK_HINTS[lock]}", key, key_values, column
    )


def values_join_update_sql(table: str, key: str, names: list[str], nulls: list[str], count: int) -> str:
    """``UPDATE t SET c = v.c FROM t JOIN (VALUES (...), ...) AS v(k, c...) ON t.key = v.k``; each
    value converts implicitly to its column's type on assignment (and the key on comparison)."""
    aliases = ["k", *(f"c{i}" for i in range(len(names)))]
    row = "(" + ", ".join(PH for _ in aliases) + ")"
    sets = [f"t.{n} = v.{aliases[i + 1]}" for i, n in enumerate(names)] + [f"t.{n} = NULL" for n in nulls]
    return (
        f"UPDATE t SET {', '.join(sets)} FROM {table} AS t WITH (UPDLOCK) "
        f"JOIN (VALUES {', '.join(row for _ in range(count))}) AS v({', '.join(aliases)}) ON t.{key} = v.k"
    )


def _row_params(
    table: TableSchema, key: Column, rows: list[tuple[Any, dict[str, Any]]], names: list[str]
) -> tuple[Any, ...]:
    return tuple(
        value for k, v in rows for value in (to_driver(k, key), *(to_driver(v[n], table.columns[n]) for n in names))
    )


def upsert_many(
    conn: Any,
    table: TableSchema,
    key: Column,
    rows: list[tuple[Any, dict[str, Any]]],
    nulls: list[str],
    guard: Column | None,
    *,
    only_new: bool = False,
) -> int:
    """Existing rows (read with UPDLOCK, HOLDLOCK) are updated with one ``UPDATE ... FROM (VALUES ...)``,
    the others inserted with one multi-row INSERT, per 1000 rows. ``guard`` is not needed: the read
    holds the key ranges until COMMIT. ``only_new``: nothing is written when a row exists."""
    found = select_many(conn, table, key, [k for k, _ in rows], key, "update")
    present, absent = split_by_existence(rows, found, lambda k: to_driver(k, key))
    if only_new and present:
        return 0
    names = list(rows[0][1])
    table_sql, key_sql = qualified(table.name, quote), quote(key.name)
    quoted, quoted_nulls = [quote(n) for n in names], [quote(n) for n in nulls]
    cursor = conn.cursor()
    if names or nulls:
        for part in chunks(present, CHUNK):
            sql = values_join_update_sql(table_sql, key_sql, quoted, quoted_nulls, len(part))
            cursor.execute(sql, _row_params(table, key, list(part), names))
    for part in chunks(absent, CHUNK):
        sql = insert_values_sql(table_sql, [key_sql, *quoted], len(part), PH)
        cursor.execute(sql, _row_params(table, key, list(part), names))
    return len(rows)


def update_many(
    conn: Any, table: TableSchema, key: Column, rows: list[tuple[Any, dict[str, Any]]], guard: Guard = None
) -> int:
    """One ``UPDATE ... FROM (VALUES ...)`` per 1000 rows, ``WHERE t.owner = %s`` with ``guard``;
    returns rows matched."""
    names = list(rows[0][1])
    cursor = conn.cursor()
    matched = 0
    for part in chunks(rows, CHUNK):
        sql = values_join_update_sql(
            qualified(table.name, quote), quote(key.name), [quote(n) for n in names], [], len(part)
        )
        params = _row_params(table, key, list(part), names)
        if guard is not None:
            sql += f" WHERE t.{quote(guard[0].name)} = {PH}"
            params = (*params, to_driver(guard[1], guard[0]))
        cursor.execute(sql, params)
        matched += int(cursor.rowcount)
    return matched


def delete_many(conn: Any, table: TableSchema, key: Column, key_values: list[Any], guard: Guard = None) -> int:
    """``DELETE ... WHERE key IN (...) [AND owner = %s]``."""
    return run_delete_in(conn, STATEMENTS, table, key, key_values, guard)


# ---- classification ------------------------------------------------------------------------------

IN_PROCESS = {1205: "deadlock", 1222: "lock_timeout", 3960: "snapshot_conflict"}
"""Retried in process: deadlock victim, lock request timeout, snapshot isolation update conflict."""

TRANSIENT = {
    1204: "lock_resources",
    4060: "database_unavailable",
    4221: "readable_secondary_unavailable",
    233: "connection",
    10053: "connection",
    10054: "connection",
    10060: "connection",
    10928: "throttled",
    10929: "throttled",
    40143: "connection",
    40197: "failover",
    40501: "throttled",
    40540: "failover",
    40613: "database_unavailable",
    42108: "connection",
    42109: "paused",
    49918: "throttled",
    49919: "throttled",
    49920: "throttled",
    18456: "login_failed",
    3906: "read_only",
    615: "database_unavailable",
    926: "database_unavailable",
    921: "database_unavailable",
    1203: "lock",
    701: "out_of_memory",
    8645: "out_of_memory",
    8651: "out_of_memory",
    17197: "login_timeout",
}
"""Transient numbers: Microsoft.Data.SqlClient baseline transient list, EF Core's detector, Azure SQL docs."""

DATA_ERRORS = {
    2628: Reason.TOO_LONG,
    8152: Reason.TOO_LONG,
    245: Reason.TYPE,
    8114: Reason.TYPE,
    257: Reason.TYPE,
    529: Reason.TYPE,
    206: Reason.TYPE,
    8116: Reason.TYPE,
    8115: Reason.OUT_OF_RANGE,
    220: Reason.OUT_OF_RANGE,
    232: Reason.OUT_OF_RANGE,
    248: Reason.OUT_OF_RANGE,
    244: Reason.OUT_OF_RANGE,
    517: Reason.OUT_OF_RANGE,
    242: Reason.OUT_OF_RANGE,
    241: Reason.FORMAT,
    295: Reason.FORMAT,
    8169: Reason.FORMAT,
    9420: Reason.FORMAT,
    13609: Reason.FORMAT,
}
"""Conversion, overflow and truncation errors: INVALID_DATA with a reason."""

_QUOTED = r"""['"]([^'"]+)['"]"""
_COLUMN = re.compile(r"column " + _QUOTED, re.IGNORECASE)
_CONSTRAINT = re.compile(r"(?:constraint|unique index) " + _QUOTED, re.IGNORECASE)
_CONFLICT = re.compile(r"conflicted with the (FOREIGN KEY|REFERENCE|CHECK) constraint", re.IGNORECASE)
_CONFLICT_KINDS = {
    "FOREIGN KEY": ErrorCode.FOREIGN_KEY_VIOLATION,
    "REFERENCE": ErrorCode.FOREIGN_KEY_VIOLATION,
    "CHECK": ErrorCode.CHECK_VIOLATION,
}


def _name(pattern: re.Pattern[str], message: str) -> str | None:
    match = pattern.search(message)
    return match.group(1) if match else None


def error_number(exc: BaseException) -> tuple[int | None, str]:
    """``(error number, message text)`` from any pymssql exception shape (FACTS.md, "pymssql"):
    ``args == (number, message)`` after execute, ``args == ((number, message),)`` after connect, and
    ``.number``/``.text`` on ``_mssql`` exceptions (read only when ``args`` hold no number)."""
    args = exc.args
    if args and isinstance(args[0], tuple) and args[0]:
        args = args[0]
    if args and isinstance(args[0], int):
        text: Any = args[1] if len(args) > 1 else b""
        number: Any = args[0]
    else:
        number, text = getattr(exc, "number", None), getattr(exc, "text", b"") or b""
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return (int(number) if isinstance(number, int) else None), message


def classify(exc: BaseException) -> FatalOpError | RetryableError | None:
    """Map a pymssql error by its SQL Server error number (``args[0]``) or DB-Lib number."""
    driver_errors: tuple[type[BaseException], ...] = (pymssql.Error, pymssql._mssql.MSSQLException)
    if not isinstance(exc, driver_errors):
        return None
    number, message = error_number(exc)
    if number is None or 20000 <= number <= 20099:
        return RetryableError("connection", number=number)  # DB-Lib: connection lost, refused or timed out
    if number in IN_PROCESS:
        return RetryableError(IN_PROCESS[number], in_process=True, number=number)
    if number in TRANSIENT:
        return RetryableError(
            TRANSIENT[number], number=number, retry_after_ms=2000 if number in (40501, 10928) else 1000
        )
    if number == 515:
        return FatalOpError(ErrorCode.NOT_NULL_VIOLATION, column=_name(_COLUMN, message), number=number)
    if number in (2601, 2627):
        return FatalOpError(ErrorCode.UNIQUE_VIOLATION, constraint=_name(_CONSTRAINT, message), number=number)
    if number == 547:
        # "The INSERT statement conflicted with the FOREIGN KEY | REFERENCE | CHECK constraint "name". ..."
        # For a foreign key the message's column belongs to the other table: report none.
        kind = _CONFLICT_KINDS.get(m.group(1).upper()) if (m := _CONFLICT.search(message)) else None
        if kind is ErrorCode.CHECK_VIOLATION:
            column = _name(_COLUMN, message)
            return FatalOpError(kind, column=column, constraint=_name(_CONSTRAINT, message), number=number)
        return FatalOpError(
            kind or ErrorCode.CONSTRAINT_VIOLATION, constraint=_name(_CONSTRAINT, message), number=number
        )
    if number == 2628:  # "String or binary data would be truncated in table 't', column 'c'."
        return FatalOpError(
            ErrorCode.INVALID_DATA, column=_name(_COLUMN, message), reason=Reason.TOO_LONG, number=number
        )
    if number in DATA_ERRORS:  # conversion messages quote the submitted value: parse no names from them
        return FatalOpError(ErrorCode.INVALID_DATA, reason=DATA_ERRORS[number], number=number)
    if number in (207, 208, 4902):
        return FatalOpError(ErrorCode.SCHEMA_MISMATCH, number=number)
    if number in (229, 230, 262, 300):
        return FatalOpError(ErrorCode.UNAUTHORIZED, number=number)
    return FatalOpError(ErrorCode.UNCLASSIFIED_ERROR, number=number)


# ---- the ledger, the conflicts table and current-row reads (DESIGN.md section 3) -------------------


def select_rows(
    conn: Any, table: TableSchema, key: Column, key_values: list[Any], columns: list[Column], lock: Lock
) -> list[tuple[Any, dict[str, Any]]]:
    """``SELECT key, c... FROM t WITH (UPDLOCK, HOLDLOCK) WHERE key IN (...)`` (or a shared HOLDLOCK)."""
    target = f"{qualified(table.name, quote)} {_LOCK_HINTS[lock]}"
    return run_select_rows(conn, STATEMENTS, target, key, key_values, columns)


def ledger_read(conn: Any, user_id: str, client_id: str, digests: Sequence[str]) -> list[Any]:
    """One ``SELECT`` on the identity index (binary collation: ids compare exactly)."""
    return run_ledger_read(conn, STATEMENTS, user_id, client_id, digests)


def _duplicate(exc: BaseException) -> bool:
    return error_number(exc)[0] in (2627, 2601)


def ledger_claim(conn: Any, entries: Sequence[Entry]) -> Claim:
    """``INSERT ... VALUES``; a duplicate identity (2627/2601): rolled back, read again."""
    return run_ledger_claim(conn, STATEMENTS, entries, _duplicate, rollback)


def ledger_prune(conn: Any, before: datetime) -> int:
    """``DELETE TOP (n) FROM ... WHERE decided_at < %s``."""
    cursor = conn.cursor()
    cursor.execute(f"DELETE TOP ({PRUNE_ROWS}) FROM {LEDGER_TABLE} WHERE decided_at < %s", (to_driver(before, STAMP),))
    return int(cursor.rowcount)


def conflicts_insert(conn: Any, rows: Sequence[dict[str, Any]]) -> None:
    """``INSERT ... VALUES`` of every row (at most 1000 rows per statement)."""
    run_conflicts_insert(conn, STATEMENTS, rows)
