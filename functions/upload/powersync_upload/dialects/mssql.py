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
* Every value is written as ``CAST(%s AS <the column's own type>)`` (:func:`param_sql`). pymssql
  sends each ``str`` as ``N'...'``: against a ``varchar`` key that literal would convert the column
  side (a scan, and under UPDLOCK/SERIALIZABLE a range lock on the whole table), a ``VALUES`` column
  that is NULL in every row would be typed ``int`` (error 206 into temporal and uniqueidentifier
  columns), and Babelfish has no implicit ``nvarchar`` to ``datetimeoffset`` conversion. The CAST
  to ``varchar(n)`` cannot truncate: ``convert`` has already checked the length in the column's
  own unit (bytes in its code page).
* Text columns carry their character set: ``varchar``/``char``/``text`` the code page of their
  collation (``COLLATIONPROPERTY(..., 'CodePage')``; 65001 is UTF-8 and holds any text),
  ``nvarchar`` none. Text outside it is INVALID_DATA ``encoding`` (SQL Server would store ``?``).
* ``nvarchar(n)`` counts UTF-16 code units: introspection reports ``length_unit='utf16'``.
* The connection runs in pymssql's autocommit mode and the dialect issues ``BEGIN TRAN``,
  ``COMMIT TRAN`` and ``IF @@TRANCOUNT > 0 ROLLBACK TRAN`` itself: no transaction is left open
  between requests (RDS Proxy can multiplex at that boundary), a failed COMMIT keeps its error
  number, and a rollback after SQL Server already rolled back (3903) cannot happen, in any language.
* Statements end after the query timeout set once at connect with ``pymssql.connect(timeout=...)``
  (the documented parameter; pymssql applies it through FreeTDS ``dbsettime``, which is
  process-global: one connection per container) as DB-Lib 20003, or 20047 once FreeTDS has
  closed the timed-out connection (seen on Babelfish): retryable, the connection then discarded.
  Lock waits end earlier, after ``SET LOCK_TIMEOUT`` (error 1222, retried in process),
  except in RDS Proxy mode (:func:`proxy_mode`), which changes no session state at all.
* Babelfish for Aurora PostgreSQL (``@@VERSION`` starts with "Babelfish", :func:`is_babelfish`)
  speaks the same protocol and numbers; its differences are handled here: an unmapped PostgreSQL
  error arrives as 33557097 with PostgreSQL's (English, unless the server's ``lc_messages`` was
  changed) text, classified by that text (lock timeout, deadlock, serialization failure and
  statement timeout are retryable); lock hints are accepted and ignored, so a concurrent first
  insert of one key fails with 2627 (UNIQUE_VIOLATION), which the engine retries once as an update
  for a PUT; a unique index reports 2627, not 2601.

Error numbers: FACTS.md "SQL Server" (Microsoft.Data.SqlClient ``SqlConfigurableRetryFactory``
transient list, EF Core ``SqlServerTransientExceptionDetector``, Azure SQL "troubleshoot common
errors"), and the SQL Server "Database engine events and errors" reference for the data errors.
"""

from __future__ import annotations

import codecs
import os
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
from ..schema import FLOAT32_MAX, INT_RANGES, Column, Kind, TableSchema
from . import PRUNE_ROWS, Guard, Lock
from ._sql import (
    STAMP,
    Statements,
    chunks,
    delete_in_sql,
    qualified,
    quote_with,
    run_conflicts_insert,
    run_delete,
    run_ledger_claim,
    run_ledger_read,
    run_select_in,
    run_select_rows,
    run_select_value,
    split_by_existence,
    table_with_constraints,
)

name = "mssql"
guarded_upsert = True
ordered_batches = False
PH = "%s"
quote = quote_with("[", "]", percent=True)


def proxy_mode(url: str) -> bool:
    """RDS Proxy mode: the URL option ``proxy=1`` or the environment variable ``DB_PROXY=1``.

    In this mode nothing changes session state, at connect or per transaction (RDS Proxy pins a
    session for good once it sees such a change): pymssql's default ``SET`` list is not sent (put it
    into the proxy's initialization query instead, README "RDS Proxy"), ``SET LOCK_TIMEOUT`` is not
    run, and the request deadline is enforced by the driver's query timeout alone.
    """
    options = parse_qs(urlsplit(url).query)
    flag = options.get("proxy", [os.environ.get("DB_PROXY", "")])[-1]
    return flag.strip().lower() in ("1", "true", "yes", "on")


def connect_args(url: str, timeout_s: float) -> dict[str, Any]:
    """pymssql.connect keyword arguments for ``mssql://user:password@host:port/database?opt=value``.

    Query options ``tds_version``, ``encryption`` (``require``/``off``/``request``) and ``appname``
    are passed through; ``proxy=1`` selects RDS Proxy mode (:func:`proxy_mode`). ``timeout`` (the
    query timeout, whole seconds) and ``login_timeout`` are both ``timeout_s``.
    """
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    proxied = proxy_mode(url)
    args: dict[str, Any] = {
        "server": parts.hostname or "localhost",
        "port": str(parts.port or 1433),
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        # through the proxy, no database in the URL sends no USE: the login's default database applies
        "database": unquote(parts.path.lstrip("/")) or ("" if proxied else "master"),
        "login_timeout": max(1, int(timeout_s)),
        "timeout": max(1, int(timeout_s)),
        "autocommit": True,  # transactions are explicit: see begin/commit/rollback
        "appname": options.get("appname", "powersync-upload"),
        "tds_version": options.get("tds_version", "7.4"),
    }
    if proxied:
        args["conn_properties"] = ""  # pymssql's default is a list of SET statements
    if "encryption" in options:
        args["encryption"] = options["encryption"]
    return args


_PROXY = {"on": False}
"""Whether the last connection was opened in RDS Proxy mode: a container talks to one database URL
(pymssql connection objects take no attributes to carry it)."""


def connect(url: str, timeout_s: float) -> Any:
    """Open a connection in pymssql's autocommit mode (no ``BEGIN TRAN`` at connect)."""
    _PROXY["on"] = proxy_mode(url)
    return pymssql.connect(**connect_args(url, timeout_s))


def begin_sql(timeout_s: float, *, proxied: bool) -> str:
    """The batch that opens a transaction: ``SET LOCK_TIMEOUT`` (at most 5 s, at least 100 ms, never
    beyond ``timeout_s``) then ``BEGIN TRAN``; in RDS Proxy mode ``BEGIN TRAN`` alone."""
    if proxied:
        return "BEGIN TRAN"
    lock_ms = max(100, min(int(timeout_s * 1000), 5000))
    return f"SET LOCK_TIMEOUT {lock_ms}; BEGIN TRAN"


def begin(conn: Any, timeout_s: float) -> None:
    """Open a transaction (one round trip). Statements are capped by the query timeout set at connect
    (see the module docstring: the driver offers no documented per-statement setting); lock waits by
    ``SET LOCK_TIMEOUT`` except in RDS Proxy mode."""
    conn.cursor().execute(begin_sql(timeout_s, proxied=_PROXY["on"]))


def commit(conn: Any) -> None:
    """``COMMIT TRAN`` (one round trip; a failure keeps its SQL Server error number)."""
    conn.cursor().execute("COMMIT TRAN")


ROLLBACK_SQL = "IF @@TRANCOUNT > 0 ROLLBACK TRAN"
"""Rolls back only what is open: after a deadlock or a batch-aborting error SQL Server has already
rolled back, and a bare ROLLBACK would fail with 3903 (whose text is localized)."""


def rollback(conn: Any) -> None:
    """Roll back the open transaction, if any; 3903 ("no corresponding BEGIN TRANSACTION", in any
    language) means there was nothing to roll back and is not an error."""
    try:
        conn.cursor().execute(ROLLBACK_SQL)
    except (pymssql.Error, pymssql._mssql.MSSQLException) as exc:
        if error_number(exc)[0] != 3903:
            raise


def is_babelfish(conn: Any) -> bool:
    """Whether the server is Babelfish for PostgreSQL (``@@VERSION`` starts with "Babelfish")."""
    cursor = conn.cursor()
    cursor.execute("SELECT @@VERSION")
    row = cursor.fetchone()
    return row is not None and str(row[0]).lstrip().lower().startswith("babelfish")


_INTROSPECT = """
SELECT c.name, TYPE_NAME(c.system_type_id), c.max_length, c.precision, c.scale, c.is_nullable,
       c.is_identity, c.is_computed, CASE WHEN c.default_object_id <> 0 THEN 1 ELSE 0 END,
       COALESCE(c.collation_name, ''), CAST(COLLATIONPROPERTY(c.collation_name, 'CodePage') AS int),
       CAST(DATABASEPROPERTYEX(DB_NAME(), 'Collation') AS nvarchar(128))
FROM sys.columns c
WHERE c.object_id = OBJECT_ID(%s, 'U')
ORDER BY c.column_id;
SELECT f.name, 'F' FROM sys.foreign_keys f
WHERE f.parent_object_id = OBJECT_ID(%s, 'U') OR f.referenced_object_id = OBJECT_ID(%s, 'U')
UNION ALL
SELECT k.name, 'C' FROM sys.check_constraints k WHERE k.parent_object_id = OBJECT_ID(%s, 'U')
"""
"""Two result sets in one round trip: the columns (with each collation's code page and the database's
default collation), then the table's foreign keys (both directions) and CHECK constraints by name."""

_INTS = {"tinyint": "tinyint_unsigned", "smallint": "smallint", "int": "int", "bigint": "bigint"}

UTF8_CODE_PAGE = 65001

CONSTRAINT_KINDS: dict[str, ErrorCode] = {}
"""Constraint name (case-folded) -> FOREIGN_KEY_VIOLATION or CHECK_VIOLATION, learned from the
catalog at introspection, so error 547 is classified without reading its (localized) text."""


def codec_for(code_page: int | None) -> str | None:
    """The Python codec of a SQL Server code page; ``None`` for UTF-8 (65001: any text). A code page
    Python does not know maps to ``ascii``, which refuses rather than lets SQL Server store ``?``."""
    if code_page is None or code_page == UTF8_CODE_PAGE:
        return None
    try:
        return codecs.lookup(f"cp{code_page}").name
    except LookupError:
        return "ascii"


def _text_column(
    type_name: str, max_length: int, collation: str, code_page: int | None, database_collation: str
) -> dict[str, Any]:
    """Length, unit, character set and collation of a text column (``max_length`` from sys.columns)."""
    if type_name in ("nvarchar", "nchar"):
        return {"max_length": None if max_length == -1 else max_length // 2, "length_unit": "utf16"}
    if type_name == "ntext":
        return {}
    encoding = codec_for(code_page)
    fields: dict[str, Any] = {"encoding": encoding}
    if collation and collation.casefold() != database_collation.casefold():
        fields["collation"] = collation
    if type_name in ("varchar", "char"):
        # varchar(n) holds n bytes of its code page (UTF-8 under a UTF-8 collation)
        fields.update(max_length=None if max_length == -1 else max_length, length_unit="bytes")
    return fields


_SIMPLE_KINDS = {
    "bit": Kind.BOOLEAN,
    "uniqueidentifier": Kind.UUID,
    "date": Kind.DATE,
    "json": Kind.JSON,
}
_TEMPORAL = {"datetime2": Kind.TIMESTAMP, "datetimeoffset": Kind.TIMESTAMPTZ, "time": Kind.TIME}
_FIXED_DIGITS = {"datetime": 3, "smalldatetime": 0}


def key_folding(collation: str) -> dict[str, Any]:
    """How SQL Server compares a text column (DESIGN.md section 3, "One device id, one row"): trailing
    spaces are always ignored (ANSI padding, every collation); case is ignored under ``_CI_``
    collations (the default ``SQL_Latin1_General_CP1_CI_AS`` among them)."""
    return {"pads_spaces": True, "ignores_case": "_CI" in collation.upper()}


def column_from_catalog(row: tuple[Any, ...]) -> Column:
    """A :class:`Column` from one row of the first result set of :data:`_INTROSPECT`."""
    col, type_name, max_length, precision, scale, nullable, identity, computed, has_default = row[:9]
    extra: list[Any] = [*row[9:12], None, None, None]
    collation, code_page, database_collation = extra[:3]
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
    if type_name in _SIMPLE_KINDS:
        return Column(kind=_SIMPLE_KINDS[type_name], **common)
    if type_name in ("decimal", "numeric", "money", "smallmoney"):
        return Column(kind=Kind.DECIMAL, precision=precision, scale=scale, **common)
    if type_name in ("float", "real"):
        is_real = type_name == "real" or (precision is not None and precision <= 24)
        return Column(kind=Kind.FLOAT, float_max=FLOAT32_MAX if is_real else None, **common)
    if type_name in _TEMPORAL:
        return Column(kind=_TEMPORAL[type_name], fraction_digits=scale, **common)
    if type_name in _FIXED_DIGITS:
        return Column(kind=Kind.TIMESTAMP, fraction_digits=_FIXED_DIGITS[type_name], **common)
    if type_name in ("nvarchar", "nchar", "ntext", "varchar", "char", "text"):
        code = int(code_page) if code_page not in (None, "") else None
        text = _text_column(type_name, max_length, str(collation or ""), code, str(database_collation or ""))
        return Column(kind=Kind.TEXT, **text, **key_folding(str(collation or database_collation or "")), **common)
    return Column(kind=Kind.OTHER, **common)


def introspect(conn: Any, table: str) -> TableSchema | None:
    """Read ``sys.columns`` of the user table (``name`` or ``schema.name``) with the names of its
    constraints (into :data:`CONSTRAINT_KINDS`) in one round trip, then its foreign keys and unique
    indexes (three round trips, once per container); ``None`` when it is missing."""
    name = qualified(table, quote_with("[", "]", percent=False))
    cursor = conn.cursor()
    cursor.execute(_INTROSPECT, (name, name, name, name))
    rows = cursor.fetchall()
    if cursor.nextset():
        for constraint, kind in cursor.fetchall():
            fk = str(kind) == "F"
            CONSTRAINT_KINDS[str(constraint).casefold()] = (
                ErrorCode.FOREIGN_KEY_VIOLATION if fk else ErrorCode.CHECK_VIOLATION
            )
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


_SIZED = ("varchar", "char", "nvarchar", "nchar")
_DIGITS = ("datetime2", "datetimeoffset", "time")
_PLAIN = (
    "tinyint", "smallint", "int", "bigint", "bit", "money", "smallmoney", "float", "real",
    "uniqueidentifier", "date", "datetime", "smalldatetime", "json",
)  # fmt: skip
_COLLATION_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def sql_type(column: Column) -> str | None:
    """The column's full T-SQL type (``varchar(36)``, ``decimal(10,2)``, ``datetime2(3)``), or
    ``None`` for types passed without a CAST (legacy ``text``/``ntext`` and unknown kinds)."""
    name = column.type_name
    if name in _SIZED:
        return f"{name}({'max' if column.max_length is None else column.max_length})"
    if name in ("decimal", "numeric"):
        return f"{name}({column.precision},{column.scale})"
    if name in _DIGITS:
        return f"{name}({column.fraction_digits})"
    return name if name in _PLAIN else None


def param_sql(column: Column) -> str:
    """The placeholder for one value of ``column``: ``CAST(%s AS <type>)`` (module docstring).

    A ``varchar``/``char`` column whose collation is not the database's converts under its own
    collation, so its code page decides what survives (``convert`` has checked that all of it does):
    ``CAST(CAST(%s AS nvarchar(max)) COLLATE <collation> AS varchar(n))``.
    """
    target = sql_type(column)
    if target is None:
        return PH
    if column.type_name in ("varchar", "char") and _COLLATION_NAME.match(column.collation):
        return f"CAST(CAST({PH} AS nvarchar(max)) COLLATE {column.collation} AS {target})"
    return f"CAST({PH} AS {target})"


def _statements(key: Column) -> Statements:
    """The shared statement helpers with ``key``'s typed placeholder (they bind only keys)."""
    return Statements(quote, param_sql(key), to_driver, CHUNK)


_LOCK_HINTS = {"update": "WITH (UPDLOCK, HOLDLOCK)", "share": "WITH (HOLDLOCK)"}


def select_value(
    conn: Any, table: TableSchema, key: Column, key_value: Any, column: Column, lock: Lock
) -> tuple[bool, Any]:
    """``SELECT column FROM t WITH (UPDLOCK, HOLDLOCK) WHERE key = CAST(%s AS ...)`` (or a shared
    HOLDLOCK); one round trip."""
    target = f"{qualified(table.name, quote)} {_LOCK_HINTS[lock]}"
    return run_select_value(conn, _statements(key), target, key, key_value, column)


def upsert_sql(table: str, key: str, columns: list[str], nulls: list[str], marks: list[str] | None = None) -> str:
    """The T-SQL batch for PUT. ``marks``: the placeholder of the key, then of each of ``columns``
    (default ``%s``). Parameters: the values of ``columns``, the key, the key, the values again
    (or, with nothing to update: the key, the key, the values)."""
    names = [key, *columns]
    key_mark, *value_marks = marks or [PH for _ in names]
    insert = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([key_mark, *value_marks])})"
    sets = [f"{c} = {m}" for c, m in zip(columns, value_marks, strict=True)] + [f"{c} = NULL" for c in nulls]
    if not sets:
        return f"IF NOT EXISTS (SELECT 1 FROM {table} WITH (UPDLOCK, SERIALIZABLE) WHERE {key} = {key_mark}) {insert}"
    return (
        f"UPDATE {table} WITH (UPDLOCK, SERIALIZABLE) SET {', '.join(sets)} WHERE {key} = {key_mark}; "
        f"IF @@ROWCOUNT = 0 {insert}"
    )


def _marks(table: TableSchema, key: Column, names: list[str]) -> list[str]:
    """Typed placeholders of the key and of ``names``, in that order."""
    return [param_sql(key), *(param_sql(table.columns[n]) for n in names)]


def upsert(
    conn: Any,
    table: TableSchema,
    key: Column,
    key_value: Any,
    values: dict[str, Any],
    nulls: list[str],
    guard: tuple[Column, Any] | None,
) -> int:
    """PUT (one round trip). ``guard`` is not needed here: the engine's ``UPDLOCK, HOLDLOCK`` read
    already holds the key range, so no other session can insert or change the row before COMMIT
    (on Babelfish, which ignores the hints, a concurrent insert fails with 2627 instead)."""
    names = list(values)
    sql = upsert_sql(
        qualified(table.name, quote),
        quote(key.name),
        [quote(n) for n in names],
        [quote(n) for n in nulls],
        _marks(table, key, names),
    )
    driver_values = [to_driver(values[n], table.columns[n]) for n in names]
    key_param = to_driver(key_value, key)
    params = [*driver_values, key_param, key_param, *driver_values]  # see upsert_sql
    conn.cursor().execute(sql, tuple(params))
    return 1


def update(conn: Any, table: TableSchema, key: Column, key_value: Any, values: dict[str, Any]) -> int:
    """``UPDATE ... SET c = CAST(%s AS ...) WHERE key = CAST(%s AS ...)``; returns rows matched."""
    names = list(values)
    key_mark, *value_marks = _marks(table, key, names)
    sets = ", ".join(f"{quote(n)} = {m}" for n, m in zip(names, value_marks, strict=True))
    sql = f"UPDATE {qualified(table.name, quote)} SET {sets} WHERE {quote(key.name)} = {key_mark}"
    cursor = conn.cursor()
    cursor.execute(sql, (*(to_driver(values[n], table.columns[n]) for n in names), to_driver(key_value, key)))
    return int(cursor.rowcount)


def delete(conn: Any, table: TableSchema, key: Column, key_value: Any) -> int:
    """``DELETE ... WHERE key = CAST(%s AS ...)``; returns rows deleted."""
    return run_delete(conn, _statements(key), table, key, key_value)


CHUNK = 1000
"""Rows per ``VALUES`` list (SQL Server's limit for a table value constructor) and keys per IN list."""

STATEMENTS = Statements(quote, PH, to_driver, CHUNK)
"""Untyped placeholders, for the product's own ledger and conflicts tables: their text columns are
``nvarchar``/``nchar``, which pymssql's ``N'...'`` literals seek without a conversion."""


def select_many(
    conn: Any, table: TableSchema, key: Column, key_values: list[Any], column: Column, lock: Lock
) -> list[tuple[Any, Any]]:
    """``SELECT key, column ... WHERE key IN (...)``, locked as :func:`select_value` locks."""
    return run_select_in(
        conn, _statements(key), f"{qualified(table.name, quote)} {_LOCK_HINTS[lock]}", key, key_values, column
    )


def values_join_update_sql(
    table: str, key: str, names: list[str], nulls: list[str], count: int, marks: list[str] | None = None
) -> str:
    """``UPDATE t SET c = v.c FROM t JOIN (VALUES (...), ...) AS v(k, c...) ON t.key = v.k``.
    ``marks``: the placeholder of the key and of each of ``names`` (typed: a column that is NULL in
    every row would otherwise be ``int``, error 206 into temporal and uniqueidentifier columns)."""
    aliases = ["k", *(f"c{i}" for i in range(len(names)))]
    row = "(" + ", ".join(marks or [PH for _ in aliases]) + ")"
    sets = [f"t.{n} = v.{aliases[i + 1]}" for i, n in enumerate(names)] + [f"t.{n} = NULL" for n in nulls]
    return (
        f"UPDATE t SET {', '.join(sets)} FROM {table} AS t WITH (UPDLOCK) "
        f"JOIN (VALUES {', '.join(row for _ in range(count))}) AS v({', '.join(aliases)}) ON t.{key} = v.k"
    )


def insert_values_sql(table: str, columns: list[str], count: int, marks: list[str]) -> str:
    """``INSERT INTO table (columns) VALUES (...), (...)`` with ``count`` rows of typed ``marks``."""
    row = "(" + ", ".join(marks) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(row for _ in range(count))}"


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
    """One locking read (``UPDLOCK, HOLDLOCK``, of the key and the ``guard`` column) splits the rows:
    existing rows whose guard matches are updated with one ``UPDATE ... FROM (VALUES ...)``, new rows
    inserted with one multi-row INSERT, per 1000 rows, every value typed (:func:`param_sql`); existing
    rows whose guard differs (someone else's) are left alone and not counted. The read holds the key
    ranges until COMMIT (on Babelfish, which ignores the hints, a concurrent insert fails with 2627
    instead). ``only_new``: nothing is written when a row exists."""
    found = select_many(conn, table, key, [k for k, _ in rows], guard or key, "update")
    present, absent = split_by_existence(rows, found, lambda k: to_driver(k, key))
    if only_new and present:
        return 0
    refused = 0
    if guard is not None and present:
        owners = {_folded(to_driver(k, key)): _folded(to_driver(v, guard)) for k, v in found}
        allowed = [
            (k, v)
            for k, v in present
            if owners.get(_folded(to_driver(k, key))) == _folded(to_driver(v[guard.name], guard))
        ]
        refused, present = len(present) - len(allowed), allowed
    names = list(rows[0][1])
    table_sql, key_sql = qualified(table.name, quote), quote(key.name)
    quoted, quoted_nulls = [quote(n) for n in names], [quote(n) for n in nulls]
    marks = _marks(table, key, names)
    cursor = conn.cursor()
    if names or nulls:
        for part in chunks(present, CHUNK):
            sql = values_join_update_sql(table_sql, key_sql, quoted, quoted_nulls, len(part), marks)
            cursor.execute(sql, _row_params(table, key, list(part), names))
    for part in chunks(absent, CHUNK):
        sql = insert_values_sql(table_sql, [key_sql, *quoted], len(part), marks)
        cursor.execute(sql, _row_params(table, key, list(part), names))
    return len(rows) - refused


def _folded(value: Any) -> Any:
    """Keys and owners compared as the default collations and uniqueidentifier do: case-insensitively."""
    return str(value).casefold() if isinstance(value, (str, uuid.UUID)) else value


def update_many(
    conn: Any, table: TableSchema, key: Column, rows: list[tuple[Any, dict[str, Any]]], guard: Guard = None
) -> int:
    """One ``UPDATE ... FROM (VALUES ...)`` of typed values per 1000 rows, ``WHERE t.owner = CAST(%s AS
    ...)`` with ``guard``; returns rows matched."""
    names = list(rows[0][1])
    marks = _marks(table, key, names)
    cursor = conn.cursor()
    matched = 0
    for part in chunks(rows, CHUNK):
        sql = values_join_update_sql(
            qualified(table.name, quote), quote(key.name), [quote(n) for n in names], [], len(part), marks
        )
        cursor.execute(*_guarded(sql, _row_params(table, key, list(part), names), guard, " WHERE t."))
        matched += int(cursor.rowcount)
    return matched


def _guarded(sql: str, params: tuple[Any, ...], guard: Guard, joint: str) -> tuple[str, tuple[Any, ...]]:
    """``sql`` and ``params`` restricted to the guard's owner (``joint`` + ``owner = CAST(%s AS ...)``)."""
    if guard is None:
        return sql, params
    column, value = guard
    return f"{sql}{joint}{quote(column.name)} = {param_sql(column)}", (*params, to_driver(value, column))


def delete_many(conn: Any, table: TableSchema, key: Column, key_values: list[Any], guard: Guard = None) -> int:
    """``DELETE ... WHERE key IN (CAST(%s AS ...), ...) [AND owner = CAST(%s AS ...)]`` per 1000 keys,
    each value typed as its own column (:func:`param_sql`); returns rows deleted."""
    cursor = conn.cursor()
    deleted = 0
    for part in chunks(key_values, CHUNK):
        sql = delete_in_sql(qualified(table.name, quote), quote(key.name), len(part), param_sql(key))
        cursor.execute(*_guarded(sql, tuple(to_driver(v, key) for v in part), guard, " AND "))
        deleted += int(cursor.rowcount)
    return deleted


# ---- classification ------------------------------------------------------------------------------

LOGIN_INFO = (5701, 5703, 5704)
"""Informational messages of every successful login (changed database context, language, character
set). pymssql reports the last message number it saw, so a later failed connect (DB-Lib 20009) can
arrive under one of these: a connection failure."""

_DB_LIB = re.compile(r"DB-Lib error message (\d+)")

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
_DOUBLE_QUOTED = re.compile(r'"([^"]+)"')
_POSTGRES_CONSTRAINT = re.compile(r'violates (foreign key|check) constraint "([^"]+)"', re.IGNORECASE)
_KIND_WORD = re.compile(r"\b(FOREIGN KEY|REFERENCE|CHECK)\b")
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


def conflict_kind(message: str) -> tuple[ErrorCode | None, str | None]:
    """``(kind, constraint name)`` of a 547 message, in any language of the login and on Babelfish.

    SQL Server's 547 reads "The %ls statement conflicted with the %ls constraint "%.*ls". ..." in
    every translation (German: "Die %1!-Anweisung steht in Konflikt mit der %2!-Einschränkung "%3!".
    ...", as sys.messages holds it); Babelfish sends PostgreSQL's text ('update or delete on table
    "lists" violates foreign key constraint "todos_list_id_fkey" on table "todos"'). In order:

    1. a double-quoted name the catalog knows (:data:`CONSTRAINT_KINDS`) gives name and kind;
    2. PostgreSQL's "violates foreign key|check constraint "name"" (Babelfish);
    3. the first double-quoted name, with the kind word before it, which SQL Server inserts
       untranslated as a parameter (``FOREIGN KEY``, ``REFERENCE`` for the referenced side, ``CHECK``).
    """
    names = _DOUBLE_QUOTED.findall(message)
    for name in names:
        if name.casefold() in CONSTRAINT_KINDS:
            return CONSTRAINT_KINDS[name.casefold()], name
    if babelfish := _POSTGRES_CONSTRAINT.search(message):
        return _CONFLICT_KINDS[babelfish.group(1).upper()], babelfish.group(2)
    first = _DOUBLE_QUOTED.search(message)
    words = _KIND_WORD.findall(message[: first.start()] if first else message)
    return (_CONFLICT_KINDS[words[-1]] if words else None), (names[0] if names else None)


BABELFISH_GENERIC = 33557097
"""Babelfish's number for a PostgreSQL error it has no SQL Server number for (message: PostgreSQL's)."""

BABELFISH_RETRYABLE = (
    ("canceling statement due to lock timeout", "lock_timeout", True),
    ("could not obtain lock", "lock_timeout", True),
    ("deadlock detected", "deadlock", True),
    ("could not serialize access", "serialization_failure", True),
    ("canceling statement due to statement timeout", "statement_timeout", False),
)
"""PostgreSQL message texts under 33557097 that are retryable: ``(text, kind, in process)``. The texts
are PostgreSQL's English ones (``lc_messages`` at its default); a statement timeout is retried by
the client, as the request's time is spent."""


def _babelfish(message: str) -> RetryableError | FatalOpError:
    text = message.lower()
    for needle, kind, in_process in BABELFISH_RETRYABLE:
        if needle in text:
            return RetryableError(kind, in_process=in_process, number=BABELFISH_GENERIC)
    return FatalOpError(ErrorCode.UNCLASSIFIED_ERROR, number=BABELFISH_GENERIC)


def classify(exc: BaseException) -> FatalOpError | RetryableError | None:
    """Map a pymssql error by its SQL Server error number (``args[0]``) or DB-Lib number."""
    driver_errors: tuple[type[BaseException], ...] = (pymssql.Error, pymssql._mssql.MSSQLException)
    if not isinstance(exc, driver_errors):
        return None
    number, message = error_number(exc)
    if number is None or 20000 <= number <= 20099 or number in LOGIN_INFO:
        # pymssql reports the last number it saw, which can be stale (an earlier login's 5703, an earlier
        # dead connection's 20047); FreeTDS's own (client-side, English) lines name the current one last
        db_lib = _DB_LIB.findall(message)
        number = int(db_lib[-1]) if db_lib else number
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
        # For a foreign key the message's column belongs to the other table: report none.
        kind, constraint = conflict_kind(message)
        column = _name(_COLUMN, message) if kind is ErrorCode.CHECK_VIOLATION else None
        return FatalOpError(kind or ErrorCode.CONSTRAINT_VIOLATION, column=column, constraint=constraint, number=number)
    if number == BABELFISH_GENERIC:
        return _babelfish(message)
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
    return run_select_rows(conn, _statements(key), target, key, key_values, columns)


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
