"""Microsoft SQL Server 2019+ (and Azure SQL) through pymssql >= 2.4.3.

* Upsert: ``UPDATE t WITH (UPDLOCK, SERIALIZABLE) ... ; IF @@ROWCOUNT = 0 INSERT ...``, the
  concurrency-safe single-row pattern (no MERGE: it needs HOLDLOCK, raises 8672 on duplicate source
  keys and is not supported by Babelfish). The key-range lock taken by the UPDATE makes a concurrent
  insert of the same id wait instead of failing with 2627.
* Ownership reads use ``WITH (UPDLOCK, HOLDLOCK)`` (a row about to be written) or ``WITH (HOLDLOCK)``
  (a referenced parent), so the row cannot change or appear before COMMIT.
* Every statement runs through ``EXEC sp_executesql N'<statement>', N'<declarations>', @a = ...``
  (:class:`Shape`): pymssql interpolates values into the SQL text on the client, so without it every
  statement would be new to SQL Server (compiled each time, a single-use plan each). The inner
  statement depends only on the table, the kind of statement and the column set; values travel only
  as parameters: scalars (``@k``, ``@p0``, ``@owner``, ``@user``...) declared with the column's own
  type (never the value's length: one plan per length), and a batch's rows as ONE ``nvarchar(max)``
  JSON parameter ``@rows`` (``[[key, c1, ...], ...]``, ASCII-only) shredded with ``OPENJSON(@rows)
  WITH (c0 <type> '$[0]', ...)`` (needs compatibility level 130: :func:`check_server`). The row
  count never changes a text: no 1000-row chunks, and no byte bound (the request body is capped at
  5 MiB by default; ``nvarchar(max)`` holds 2 GB). Names are quoted with ``[...]`` and ``%`` doubled;
  decimals travel as exact ``'f'`` text, UUIDs as text, timestamps as ISO 8601 text with ``T`` cut
  to the column's fractional digits.
* Typed by declaration (:func:`declared_type`, :func:`value_sql`): a ``varchar`` arrives as
  ``varchar(n)``, never as pymssql's ``N'...'``, which would convert the column side (a scan, and
  under UPDLOCK/SERIALIZABLE a range lock on the whole table); a ``varchar`` of another collation
  converts under its own (``CAST(x COLLATE <collation> AS varchar(n))``); a column NULL in every row
  is still typed (no error 206). The conversion cannot truncate: ``convert`` has already checked the
  length in the column's own unit (bytes in its code page).
* Locks in a known order: keys are sent sorted by :func:`lock_order` (SQL Server's order), and each
  statement's docstring says which locks it takes (README "SQL Server", locks).
* A ``rowversion`` column (catalog name ``timestamp``) is read as ``0x`` + 16 upper-case hex digits
  (:func:`read_value`) and never written: it can be a ``version_column``.
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
  statement timeout are retryable); lock hints are accepted and ignored, so the locking read takes
  row locks with a no-op UPDATE first (:func:`read_shape`), and a concurrent first insert of one key
  fails with 2627 (UNIQUE_VIOLATION), which the engine retries once as an update for a PUT; a unique
  index reports 2627, not 2601; ``OPENJSON`` returns text cells still JSON-escaped, decoded in the
  statement (:func:`unescaped_sql`); compatibility level 120 is reported but ``OPENJSON`` works.

Error numbers: FACTS.md "SQL Server" (Microsoft.Data.SqlClient ``SqlConfigurableRetryFactory``
transient list, EF Core ``SqlServerTransientExceptionDetector``, Azure SQL "troubleshoot common
errors"), and the SQL Server "Database engine events and errors" reference for the data errors.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymssql

from ..conflicts import TABLE as CONFLICTS_TABLE
from ..errors import ErrorCode, FatalOpError, Reason, RetryableError
from ..ledger import CLAIMED, Claim, Entry
from ..ledger import TABLE as LEDGER_TABLE
from ..schema import FLOAT32_MAX, INT_RANGES, Column, Kind, TableSchema
from . import NO_ADDS, PRUNE_ROWS, Guard, Lock, PutRow, PutRows
from ._sql import (
    CONFLICT_COLUMNS,
    LEDGER_COLUMNS,
    LEDGER_READ_COLUMNS,
    STAMP,
    json_guarded,
    qualified,
    quote_with,
    table_with_constraints,
)

name = "mssql"
guarded_upsert = True
ordered_batches = False
PH = "%s"
quote = quote_with("[", "]", percent=True)
logger = logging.getLogger(__name__)


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


def connect_args(url: str, timeout_s: float, statement_s: float | None = None) -> dict[str, Any]:
    """pymssql.connect keyword arguments for ``mssql://user:password@host:port/database?opt=value``.

    Query options ``tds_version``, ``encryption`` (``require``/``off``/``request``) and ``appname``
    are passed through; ``proxy=1`` selects RDS Proxy mode (:func:`proxy_mode`). ``login_timeout``
    is ``timeout_s`` and ``timeout`` (the query timeout, kept for the connection's life) is
    ``statement_s`` (``timeout_s`` when ``None``), in whole seconds, at least 1: a connection
    opened late in a request, with one second left, must not keep a one-second statement limit
    for every later request (on Babelfish a statement's first run in a new backend can take that
    long, and each timeout closes the connection: the next one would start cold again).
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
        "timeout": max(1, int(timeout_s if statement_s is None else statement_s)),
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


@dataclass
class Server:
    """What :func:`connect` learnt of the server (a container talks to one database URL).

    Attributes:
        babelfish: ``@@VERSION`` starts with "Babelfish" (lock hints are ignored there: see
            :func:`read_shape`).
        level: the database's compatibility level (``sys.databases``); ``OPENJSON`` needs 130.
        url: the database URL whose server passed :func:`check_server` (checked again only for
            another URL, or after a refusal).
    """

    babelfish: bool = False
    level: int = 0
    url: str = ""


SERVER = Server()

SERVER_SQL = "SELECT @@VERSION, (SELECT compatibility_level FROM sys.databases WHERE name = DB_NAME())"

MIN_LEVEL = 130
"""``OPENJSON`` needs compatibility level 130 (SQL Server 2016) or higher."""


def check_server(conn: Any) -> Server:
    """Read ``@@VERSION`` and the compatibility level into :data:`SERVER` (one round trip).

    Raises:
        RetryableError: ``compatibility_level``: SQL Server (not Babelfish) at a level below
            :data:`MIN_LEVEL`. Every statement of this dialect needs ``OPENJSON``, so the upload
            function refuses to start (503, logged as an error with the level) until the database
            is raised: ``ALTER DATABASE <db> SET COMPATIBILITY_LEVEL = 130`` (or higher).
    """
    SERVER.url = ""
    row = execute(conn.cursor(), SERVER_SQL).fetchone()
    version, level = (str(row[0]), int(row[1] or 0)) if row else ("", 0)
    SERVER.babelfish = version.lstrip().lower().startswith("babelfish")
    SERVER.level = level
    if not SERVER.babelfish and level < MIN_LEVEL:
        logger.error(
            "SQL Server database compatibility level is below 130: OPENJSON is unavailable; "
            "raise it with ALTER DATABASE ... SET COMPATIBILITY_LEVEL = 130",
            extra={"compatibility_level": level},
        )
        raise RetryableError("compatibility_level", retry_after_ms=60_000)
    return SERVER


def connect(url: str, timeout_s: float, statement_s: float | None = None) -> Any:
    """Open a connection in pymssql's autocommit mode (no ``BEGIN TRAN`` at connect) and, on the
    container's first connection to ``url``, check the server (:func:`check_server`: engine and
    compatibility level; one round trip). A reconnect does not repeat it: on Babelfish the first read
    of ``sys.databases`` in a new backend costs 0.2-0.6 s, which a reconnect after a timeout would
    otherwise pay inside the next request's deadline."""
    _PROXY["on"] = proxy_mode(url)
    conn = pymssql.connect(**connect_args(url, timeout_s, statement_s))
    if SERVER.url == url:
        return conn
    try:
        check_server(conn)
    except BaseException:
        conn.close()
        raise
    SERVER.url = url
    return conn


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
    execute(conn.cursor(), begin_sql(timeout_s, proxied=_PROXY["on"]))


def commit(conn: Any) -> None:
    """``COMMIT TRAN`` (one round trip; a failure keeps its SQL Server error number)."""
    execute(conn.cursor(), "COMMIT TRAN")


ROLLBACK_SQL = "IF @@TRANCOUNT > 0 ROLLBACK TRAN"
"""Rolls back only what is open: after a deadlock or a batch-aborting error SQL Server has already
rolled back, and a bare ROLLBACK would fail with 3903 (whose text is localized)."""


def rollback(conn: Any) -> None:
    """Roll back the open transaction, if any; 3903 ("no corresponding BEGIN TRANSACTION", in any
    language) means there was nothing to roll back and is not an error."""
    try:
        execute(conn.cursor(), ROLLBACK_SQL)
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
SELECT f.name, 'F', CAST(NULL AS nvarchar(max)) FROM sys.foreign_keys f
WHERE f.parent_object_id = OBJECT_ID(%s, 'U') OR f.referenced_object_id = OBJECT_ID(%s, 'U')
UNION ALL
SELECT k.name, 'C', k.definition FROM sys.check_constraints k WHERE k.parent_object_id = OBJECT_ID(%s, 'U')
"""
"""Two result sets in one round trip: the columns (with each collation's code page and the database's
default collation), then the table's foreign keys (both directions) and CHECK constraints by name,
with each CHECK's definition (an ``ISJSON(c)`` in it makes ``c`` a JSON column)."""

_ISJSON = re.compile(r"isjson\s*\(\s*(?:\[((?:[^\]]|\]\])+)\]|(\w+))\s*\)", re.IGNORECASE)
"""The column an ``ISJSON`` call in a CHECK definition names: SQL Server keeps ``isjson([tags])``,
Babelfish ``isjson(tags)``."""

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
    constraints (into :data:`CONSTRAINT_KINDS`) in one round trip, then its foreign keys, primary key
    and unique indexes (three round trips, once per container); ``None`` when it is missing."""
    name = qualified(table, quote_with("[", "]", percent=False))
    cursor = execute(conn.cursor(), _INTROSPECT, (name, name, name, name))
    rows = cursor.fetchall()
    definitions = _constraints(cursor) if cursor.nextset() else []
    if not rows:
        return None
    columns = json_guarded({row[0]: column_from_catalog(row) for row in rows}, _json_checked(definitions))
    return table_with_constraints(cursor, table, columns, _FOREIGN_KEYS, _UNIQUE, (name,))


def _constraints(cursor: Any) -> list[str]:
    """Learn the constraint kinds of the second result set (:data:`CONSTRAINT_KINDS`); return the
    CHECK definitions."""
    definitions = []
    for constraint, kind, definition in cursor.fetchall():
        fk = str(kind) == "F"
        CONSTRAINT_KINDS[str(constraint).casefold()] = (
            ErrorCode.FOREIGN_KEY_VIOLATION if fk else ErrorCode.CHECK_VIOLATION
        )
        if definition:
            definitions.append(str(definition))
    return definitions


def _json_checked(definitions: list[str]) -> set[str]:
    """The columns an ``ISJSON`` call in one of the CHECK ``definitions`` names."""
    found = (m for definition in definitions for m in _ISJSON.finditer(definition))
    return {m.group(1).replace("]]", "]") if m.group(1) else m.group(2) for m in found}


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
# The primary key and the unique indexes and constraints; a filtered index (WHERE ...) is loose.
_UNIQUE = """
SELECT i.index_id, c.name, i.is_primary_key, i.has_filter
FROM sys.indexes i
JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
WHERE i.object_id = OBJECT_ID(%s, 'U') AND i.is_unique = 1 AND ic.is_included_column = 0
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
    "uniqueidentifier", "date", "datetime", "smalldatetime",
)  # fmt: skip
_COLLATION_NAME = re.compile(r"^[A-Za-z0-9_]+$")
ROWVERSION = ("timestamp", "rowversion")
"""``TYPE_NAME`` of a rowversion column (``timestamp`` is the catalog's name for it)."""


def sql_type(column: Column) -> str | None:
    """The column's full T-SQL type (``varchar(36)``, ``decimal(10,2)``, ``datetime2(3)``), or
    ``None`` for types sent as text (``json``, legacy ``text``/``ntext``, rowversion, unknown kinds)."""
    name = column.type_name
    if name in _SIZED:
        return f"{name}({'max' if column.max_length is None else column.max_length})"
    if name in ("decimal", "numeric"):
        return f"{name}({column.precision},{column.scale})"
    if name in _DIGITS:
        return f"{name}({column.fraction_digits})"
    return name if name in _PLAIN else None


def _collated(column: Column) -> bool:
    """A ``varchar``/``char`` column whose collation is not the database's (introspection names it)."""
    return column.type_name in ("varchar", "char") and bool(_COLLATION_NAME.match(column.collation))


def declared_type(column: Column) -> str:
    """The type a value of ``column`` travels as: a parameter's declared type and its ``OPENJSON ...
    WITH`` type. The column's own declared type (never the value's length: one plan per length is
    plan-cache pollution, FACTS.md "Statement shapes"), except ``nvarchar(max)`` for a ``varchar`` of
    another collation (converted in the statement by :func:`value_sql`) and for types without a
    :func:`sql_type`."""
    target = sql_type(column)
    return "nvarchar(max)" if target is None or _collated(column) else target


def increment_type(column: Column) -> str:
    """The type a delta's increment (``new - old``) travels as: wide enough for the difference of any
    two values of ``column``, which may not fit the column itself (only the sum must; the sum out of
    range is error 8115 or 220, ``INVALID_DATA`` ``out_of_range``): ``bigint`` for tinyint, smallint
    and int, ``decimal(20,0)`` for bigint, ``decimal(p+1,s)`` (38 digits at most) for decimal,
    numeric, money and smallmoney, ``float`` for float and real."""
    if column.kind is Kind.FLOAT:
        return "float"
    if column.kind is Kind.INTEGER:
        return "decimal(20,0)" if column.type_name == "bigint" else "bigint"
    return f"decimal({min((column.precision or 38) + 1, 38)},{column.scale or 0})"


def value_sql(column: Column, ref: str) -> str:
    """``ref`` (a parameter or an OPENJSON column) as a value of ``column``: unchanged, or for a
    ``varchar`` of another collation ``CAST(ref COLLATE <collation> AS varchar(n))``, so its own code
    page decides what survives (``convert`` has checked that all of it does) and a key comparison
    stays a seek. A ``varchar`` of the database's collation arrives as ``varchar(n)`` already: never
    as ``nvarchar``, which would convert the column side (a scan, and under HOLDLOCK a range lock on
    the whole table)."""
    return f"CAST({ref} COLLATE {column.collation} AS {sql_type(column)})" if _collated(column) else ref


def read_value(value: Any, column: Column) -> Any:
    """A value as read back: a rowversion (8 bytes from the driver) as its hex text ``0x`` + 16
    upper-case digits (e.g. ``0x00000000000007D1``), the form a ``version_column`` is compared in;
    any other value as the driver returns it. (Converted here, not in SQL: Babelfish has no
    ``CONVERT(varchar, varbinary, 1)``.)"""
    if column.type_name in ROWVERSION and isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex().upper()
    return value


def json_value(value: Any, column: Column) -> Any:
    """One JSON cell of a rows parameter: :func:`to_driver`'s value (decimals as exact text, temporal
    values as ISO 8601 text, UUIDs as text), with bytes as ``0x`` hex text."""
    driver = to_driver(value, column)
    if isinstance(driver, (bytes, bytearray)):
        return "0x" + bytes(driver).hex()
    return driver


def rows_json(rows: Sequence[Sequence[Any]], columns: Sequence[Column]) -> str:
    """The ``@rows`` parameter: a JSON array of arrays, cell ``i`` of each row typed as ``columns[i]``."""
    cells = [[json_value(v, c) for v, c in zip(row, columns, strict=True)] for row in rows]
    return json_text(cells)


def json_text(cells: Any) -> str:
    """``cells`` as compact JSON, ASCII only (other characters as ``\\u`` escapes, surrogate pairs for
    emoji), so the text survives pymssql's literal and FreeTDS's character conversion unchanged."""
    return json.dumps(cells, separators=(",", ":"), default=str)


def lock_order(value: Any, column: Column) -> Any:
    """The sort key of a row key: keys are locked in this order by every statement (see README "SQL
    Server", locks). A ``uniqueidentifier`` sorts as SQL Server compares it (bytes 10-15 first, then
    8-9, 6-7, 4-5, 0-3); text case-folded (the default collations ignore case); numbers as numbers."""
    driver = to_driver(value, column)
    if column.kind is Kind.UUID:
        digits = str(driver).replace("-", "").lower()
        return (digits[20:], digits[16:20], digits[12:16], digits[8:12], digits[:8])
    return str(driver).casefold() if isinstance(driver, str) else driver


def sorted_keys(key_values: Sequence[Any], key: Column) -> list[Any]:
    """``key_values`` in :func:`lock_order`."""
    return sorted(key_values, key=lambda v: lock_order(v, key))


def nliteral(text: str) -> str:
    """``N'text'`` with its quotes doubled."""
    return "N'" + text.replace("'", "''") + "'"


ROWS = ("@rows", "nvarchar(max)")
"""The rows parameter: one JSON ``nvarchar(max)`` for any number of rows (no 1000-row chunks; the
request body is capped at ``MAX_BODY_BYTES``, 5 MiB by default, so no byte bound is needed: an
``nvarchar(max)`` parameter holds 2 GB)."""


@dataclass(frozen=True)
class Shape:
    """One statement as sent: ``EXEC sp_executesql N'<statement>', N'<declarations>', @a = %s, ...``.

    Attributes:
        statement: the inner T-SQL text. It depends only on the table, the kind of statement and the
            column set, never on the values or the number of rows, so SQL Server compiles it once and
            reuses its cached plan.
        params: ``(name, declared type)`` of each parameter, in binding order.
    """

    statement: str
    params: tuple[tuple[str, str], ...]

    def sql(self) -> str:
        """The text given to pymssql; its ``%s`` take the parameters' values in order. A ``%`` of the
        statement is already doubled (names pass through :data:`quote`)."""
        declarations = ", ".join(f"{n} {t}" for n, t in self.params)
        bindings = ", ".join(f"{n} = %s" for n, _ in self.params)
        return f"EXEC sp_executesql {nliteral(self.statement)}, {nliteral(declarations)}, {bindings}"


def execute(cursor: Any, sql: str, params: tuple[Any, ...] | None = None) -> Any:
    """``cursor.execute(sql, params)``: every statement of this dialect passes here (the benchmark
    counts the distinct texts by wrapping it); returns the cursor."""
    if params is None:
        cursor.execute(sql)
    else:
        cursor.execute(sql, params)
    return cursor


def run(cursor: Any, shape: Shape, values: Sequence[Any]) -> Any:
    """Execute ``shape`` with ``values`` (one per parameter) on a pymssql cursor; returns the cursor."""
    return execute(cursor, shape.sql(), tuple(values))


def rows_of(cursor: Any) -> list[Any]:
    """The rows of the result set the cursor stands on, and the end of its call read too.

    A call whose result set is followed by more of the server's answer (the row counts of the
    statements after it, the final DONE) would otherwise leave that unread, and the next statement
    would first cancel it: one more round trip (measured through the bench's proxy: ``put_1000`` took
    4 round trips instead of 3)."""
    found = list(cursor.fetchall())
    cursor.nextset()
    return found


_EXEC = re.compile(r"^EXEC sp_executesql N'((?:[^']|'')*)', N'", re.DOTALL)


def inner_statement(sql: str) -> str:
    """The statement SQL Server compiles for ``sql``: the inner text of an ``EXEC sp_executesql
    N'...'`` (quotes undoubled), else ``sql`` itself."""
    match = _EXEC.match(sql)
    return match.group(1).replace("''", "'") if match else sql


def shred_sql(types: Sequence[str]) -> str:
    """``OPENJSON(@rows) WITH (c0 <type> '$[0]', ...) AS j``: one typed row per element of ``@rows``
    (on Babelfish a text cell is read as ``nvarchar(max)``: see :func:`json_cell`)."""
    fields = ", ".join(f"c{i} {json_type(t)} '$[{i}]'" for i, t in enumerate(types))
    return f"OPENJSON(@rows) WITH ({fields}) AS j"


def _columns_shred(columns: Sequence[Column]) -> str:
    return shred_sql([declared_type(c) for c in columns])


_TEXT_TYPES = ("varchar", "char", "nvarchar", "nchar")


def _is_text(declared: str) -> bool:
    return declared.split("(")[0] in _TEXT_TYPES


def json_type(declared: str) -> str:
    """The ``OPENJSON ... WITH`` type of a cell declared ``declared``: itself on SQL Server; on
    Babelfish ``nvarchar(max)`` for text (its escaped form can be longer than the column)."""
    return "nvarchar(max)" if SERVER.babelfish and _is_text(declared) else declared


_JSON_ESCAPES = (
    ('\\"', "N'\"'"),
    ("\\n", "NCHAR(10)"),
    ("\\r", "NCHAR(13)"),
    ("\\t", "NCHAR(9)"),
    ("\\b", "NCHAR(8)"),
    ("\\f", "NCHAR(12)"),
    *((f"\\u{code:04x}", f"NCHAR({code})") for code in range(1, 32) if code not in (8, 9, 10, 12, 13)),
)
"""The escapes PostgreSQL's JSON output writes (besides ``\\\\``), and the character of each."""


def unescaped_sql(ref: str) -> str:
    """``ref``, a JSON string cell as Babelfish 4.2's ``OPENJSON ... WITH`` returns it, decoded.

    Babelfish returns such a cell in its escaped JSON form (``a\\"b`` for ``a"b``; checked on 4.2:
    quote, backslash and control characters stay escaped, ``\\u`` escapes of other characters are
    decoded). Decoded with ``REPLACE`` only where a backslash is present: first every ``\\\\`` becomes
    ``\\z`` (an escape JSON never writes), then each escape its character, then ``\\z`` a backslash.
    """
    text = f"REPLACE({ref}, N'\\\\', N'\\z')"
    for escape, char in _JSON_ESCAPES:
        text = f"REPLACE({text}, N'{escape}', {char})"
    text = f"REPLACE({text}, N'\\z', N'\\')"
    return f"CASE WHEN CHARINDEX(N'\\', {ref}) = 0 THEN {ref} ELSE {text} END"


def json_cell(declared: str, ref: str) -> str:
    """``ref`` (an OPENJSON column declared ``declared``) as a value: itself on SQL Server; on Babelfish
    a text cell :func:`unescaped_sql` and cast to ``declared``."""
    if SERVER.babelfish and _is_text(declared):
        return f"CAST({unescaped_sql(ref)} AS {declared})"
    return ref


def _cell(column: Column, index: int) -> str:
    """Cell ``index`` of a row of ``@rows`` as a value of ``column``."""
    return value_sql(column, json_cell(declared_type(column), f"j.c{index}"))


_LOCK_HINTS = {"update": "WITH (UPDLOCK, HOLDLOCK)", "share": "WITH (HOLDLOCK)"}


def _key_join(table: TableSchema, key: Column, columns: Sequence[Column], hint: str, shred: str = "") -> str:
    """``<table> AS t <hint> JOIN OPENJSON(@rows) ... AS j ON t.key = j.c0`` (``shred``: the
    ``OPENJSON`` source when its types are not the ``columns``' own)."""
    on = f"t.{quote(key.name)} = {_cell(key, 0)}"
    hinted = f" {hint}" if hint else ""
    return f"{qualified(table.name, quote)} AS t{hinted} JOIN {shred or _columns_shred(columns)} ON {on}"


def read_shape(table: TableSchema, key: Column, columns: Sequence[Column], lock: Lock, *, babelfish: bool) -> Shape:
    """The locking read of the rows among ``@rows`` (``[[key], ...]``): their key and ``columns``.

    SQL Server: ``SELECT ... FROM t WITH (UPDLOCK, HOLDLOCK) JOIN OPENJSON(...)`` takes, key by key
    in the order of ``@rows`` (sorted by :func:`lock_order`), an update lock on each existing key and
    a key-range lock (RangeS-U) on the gap of each missing one, held until COMMIT: no other writer can
    change, delete or insert those keys meanwhile, and a second writer of the same keys waits at its
    first common key. ``share`` takes shared key and range locks (a referenced parent, RangeS-S).

    Babelfish ignores the hints. For ``update`` the read is preceded, in the same call, by a no-op
    ``UPDATE t SET key = key`` of the same rows: its PostgreSQL core locks each existing row
    (``FOR NO KEY UPDATE``) until COMMIT, so a concurrent read-check-write of that row waits and then
    reads the committed row. (A missing row is not locked there: a concurrent first insert fails with
    2627 instead.)
    """
    selected = ", ".join(f"t.{quote(c.name)}" for c in [key, *columns])
    read = f"SELECT {selected} FROM {_key_join(table, key, [key], _LOCK_HINTS[lock])}"
    if babelfish and lock == "update":
        k = quote(key.name)
        read = f"UPDATE t SET t.{k} = t.{k} FROM {_key_join(table, key, [key], '')}; {read}"
    return Shape(read, (ROWS,))


def update_rows_shape(
    table: TableSchema,
    key: Column,
    names: Sequence[str],
    nulls: Sequence[str],
    guard: Column | None,
    adds: frozenset[str] = NO_ADDS,
) -> Shape:
    """``UPDATE t SET c = j.c1, d = t.d + j.c2, ..., n = NULL FROM t WITH (UPDLOCK) JOIN OPENJSON(@rows)
    ...`` (rows ``[[key, c...], ...]``) ``[WHERE t.owner = @owner]``: exclusive key locks on the matched
    rows, taken in the order of ``@rows`` (already held as update locks after :func:`read_shape`).
    A column in ``adds`` (``d``) takes a delta's increment, shredded as :func:`increment_type`."""
    columns = [key, *(table.columns[n] for n in names)]
    sets = _sets(table, key, names, nulls, adds)
    shred = shred_sql([increment_type(c) if i and c.name in adds else declared_type(c) for i, c in enumerate(columns)])
    statement = f"UPDATE t SET {', '.join(sets)} FROM {_key_join(table, key, columns, 'WITH (UPDLOCK)', shred)}"
    return _with_guard(statement, guard, " WHERE ")


def _with_guard(statement: str, guard: Column | None, joint: str) -> Shape:
    """``statement`` with ``<joint>t.owner = @owner`` when there is a guard (``@owner`` declared as
    the owner column's type)."""
    if guard is None:
        return Shape(statement, (ROWS,))
    condition = f"{joint}t.{quote(guard.name)} = {value_sql(guard, '@owner')}"
    return Shape(statement + condition, (ROWS, ("@owner", declared_type(guard))))


def insert_rows_shape(table: TableSchema, key: Column, names: Sequence[str]) -> Shape:
    """``INSERT INTO t (key, c...) SELECT j.c0, ... FROM OPENJSON(@rows) ...``: the insert part of
    :func:`upsert_rows_shape` alone (an exclusive lock on each new key)."""
    return Shape(_insert_rows(table, key, names), (ROWS,))


def _keys_in(table: TableSchema, key: Column) -> str:
    """``key IN (SELECT j.c0 FROM OPENJSON(@rows) ...)`` (rows ``[[key], ...]``)."""
    return f"{quote(key.name)} IN (SELECT {_cell(key, 0)} FROM {_columns_shred([key])})"


def _insert_rows(table: TableSchema, key: Column, names: Sequence[str], where: str = "") -> str:
    """``INSERT INTO t (key, c...) SELECT j.c0, ... FROM OPENJSON(@rows) ... <where>``."""
    columns = [key, *(table.columns[n] for n in names)]
    targets = ", ".join(quote(c.name) for c in columns)
    values = ", ".join(_cell(c, i) for i, c in enumerate(columns))
    rows = f"{_columns_shred(columns)}{where}"
    return f"INSERT INTO {qualified(table.name, quote)} ({targets}) SELECT {values} FROM {rows}"


def _sets(
    table: TableSchema, key: Column, names: Sequence[str], nulls: Sequence[str], adds: frozenset[str] = NO_ADDS
) -> list[str]:
    """``t.c = j.c1, t.d = t.d + j.c2, ..., t.n = NULL`` of a rows UPDATE (cell ``i`` of ``@rows`` is
    ``names[i - 1]``; a column in ``adds`` takes a delta's increment)."""
    columns = [key, *(table.columns[n] for n in names)]
    sets = [
        f"t.{quote(c.name)} = t.{quote(c.name)} + j.c{i}" if c.name in adds else f"t.{quote(c.name)} = {_cell(c, i)}"
        for i, c in enumerate(columns)
        if i
    ]
    return sets + [f"t.{quote(n)} = NULL" for n in nulls]


_SERIAL = "WITH (UPDLOCK, SERIALIZABLE)"


def upsert_rows_shape(
    table: TableSchema, key: Column, names: Sequence[str], nulls: Sequence[str], guard: Column | None
) -> Shape:
    """PUT of the rows of ``@rows`` (``[[key, c...], ...]``) in one call that answers one row, the
    number of rows written: ``UPDATE t SET ... FROM t WITH (UPDLOCK, SERIALIZABLE) JOIN OPENJSON(@rows)
    ... [WHERE t.owner = j.owner]``, then ``INSERT ... SELECT ... FROM OPENJSON(@rows) ... WHERE NOT
    EXISTS (SELECT 1 FROM t WITH (UPDLOCK, SERIALIZABLE) WHERE key = j.c0)``, then the two row counts
    added. A PUT of the key alone counts its existing rows instead of updating them.

    Locks on SQL Server: the UPDATE takes, key by key in the order of ``@rows``, an exclusive lock on
    each existing key and a key-range lock on the gap of each missing one (the single-row pattern of
    :func:`upsert_shape` for every row at once), so a concurrent insert of the same new key waits
    for COMMIT. A row whose stored owner is not the row's own (``guard``: someone else's) is neither
    updated nor inserted, and not counted. On Babelfish (hints ignored) the UPDATE locks the rows it
    writes, and a concurrent first insert of one key fails with 2627."""
    columns = [key, *(table.columns[n] for n in names)]
    target, k = qualified(table.name, quote), quote(key.name)
    missing = f" WHERE NOT EXISTS (SELECT 1 FROM {target} AS x {_SERIAL} WHERE x.{k} = {_cell(key, 0)})"
    sets = _sets(table, key, names, nulls)
    if sets:
        owned = f" WHERE t.{quote(guard.name)} = {_cell(guard, 1 + list(names).index(guard.name))}" if guard else ""
        update = f"UPDATE t SET {', '.join(sets)} FROM {_key_join(table, key, columns, _SERIAL)}{owned}"
        first = f"{update}; SET @n = @@ROWCOUNT"
    else:
        first = f"SELECT @n = COUNT(*) FROM {target} {_SERIAL} WHERE {_keys_in(table, key)}"
    insert = _insert_rows(table, key, names, missing)
    return Shape(f"DECLARE @n int; {first}; {insert}; SELECT @n + @@ROWCOUNT", (ROWS,))


def insert_new_shape(table: TableSchema, key: Column, names: Sequence[str]) -> Shape:
    """A speculative PUT (``only_new``): insert every row of ``@rows`` only if none of their keys
    exists (range locks on the keys on SQL Server), answering one row: how many rows were written
    (0 when one exists)."""
    target = qualified(table.name, quote)
    none = f" WHERE NOT EXISTS (SELECT 1 FROM {target} {_SERIAL} WHERE {_keys_in(table, key)})"
    return Shape(f"{_insert_rows(table, key, names, none)}; SELECT @@ROWCOUNT", (ROWS,))


def delete_rows_shape(table: TableSchema, key: Column, guard: Column | None) -> Shape:
    """``DELETE t FROM t JOIN OPENJSON(@rows) ... [AND t.owner = @owner]`` (rows ``[[key], ...]``):
    exclusive key locks in the order of ``@rows``."""
    return _with_guard(f"DELETE t FROM {_key_join(table, key, [key], '')}", guard, " WHERE ")


def _key_param(key: Column) -> tuple[tuple[str, str], str]:
    """The ``@k`` parameter of a per-operation statement and its value expression."""
    return ("@k", declared_type(key)), value_sql(key, "@k")


def select_value_shape(table: TableSchema, key: Column, column: Column, lock: Lock) -> Shape:
    """``SELECT column FROM t WITH (UPDLOCK, HOLDLOCK) WHERE key = @k`` (or a shared HOLDLOCK): an
    update (shared) lock on the key, or a range lock on its gap when it is missing, until COMMIT."""
    param, k = _key_param(key)
    target = f"{qualified(table.name, quote)} AS t {_LOCK_HINTS[lock]}"
    statement = f"SELECT t.{quote(column.name)} FROM {target} WHERE t.{quote(key.name)} = {k}"
    return Shape(statement, (param,))


def _value_params(
    table: TableSchema, names: Sequence[str], adds: frozenset[str] = NO_ADDS
) -> tuple[list[tuple[str, str]], list[str]]:
    """``@p0, @p1 ...`` declared as the columns ``names`` and their value expressions; a column in
    ``adds`` as ``column + @pN``, ``@pN`` declared :func:`increment_type`."""
    columns = [table.columns[n] for n in names]
    params = [(f"@p{i}", increment_type(c) if c.name in adds else declared_type(c)) for i, c in enumerate(columns)]
    values = [
        f"{quote(c.name)} + {p}" if c.name in adds else value_sql(c, p)
        for c, (p, _) in zip(columns, params, strict=True)
    ]
    return params, values


def upsert_shape(table: TableSchema, key: Column, names: Sequence[str], nulls: Sequence[str]) -> Shape:
    """PUT of one row: ``UPDATE t WITH (UPDLOCK, SERIALIZABLE) SET ... WHERE key = @k; IF @@ROWCOUNT =
    0 INSERT ...`` (``IF NOT EXISTS (SELECT ... WITH (UPDLOCK, SERIALIZABLE)) INSERT`` when there is
    nothing to update). Parameters ``@k``, then ``@p0...`` for ``names``. The UPDATE takes an update
    lock on the key, or a key-range lock on its gap, so a concurrent insert of the same key waits."""
    key_param, k = _key_param(key)
    params, values = _value_params(table, names)
    t, key_sql = qualified(table.name, quote), quote(key.name)
    targets = ", ".join([key_sql, *(quote(n) for n in names)])
    insert = f"INSERT INTO {t} ({targets}) VALUES ({', '.join([k, *values])})"
    sets = [f"{quote(n)} = {v}" for n, v in zip(names, values, strict=True)] + [f"{quote(n)} = NULL" for n in nulls]
    if sets:
        update = f"UPDATE {t} WITH (UPDLOCK, SERIALIZABLE) SET {', '.join(sets)} WHERE {key_sql} = {k}"
        statement = f"{update}; IF @@ROWCOUNT = 0 {insert}"
    else:
        statement = f"IF NOT EXISTS (SELECT 1 FROM {t} WITH (UPDLOCK, SERIALIZABLE) WHERE {key_sql} = {k}) {insert}"
    return Shape(statement, (key_param, *params))


def update_shape(table: TableSchema, key: Column, names: Sequence[str], adds: frozenset[str] = NO_ADDS) -> Shape:
    """PATCH of one row: ``UPDATE t SET c = @p0, d = d + @p1, ... WHERE key = @k`` (an exclusive key
    lock; ``d`` in ``adds``: a delta's increment, declared :func:`increment_type`)."""
    key_param, k = _key_param(key)
    params, values = _value_params(table, names, adds)
    sets = ", ".join(f"{quote(n)} = {v}" for n, v in zip(names, values, strict=True))
    return Shape(
        f"UPDATE {qualified(table.name, quote)} SET {sets} WHERE {quote(key.name)} = {k}", (key_param, *params)
    )


def delete_shape(table: TableSchema, key: Column) -> Shape:
    """DELETE of one row: ``DELETE FROM t WHERE key = @k`` (an exclusive key lock)."""
    key_param, k = _key_param(key)
    return Shape(f"DELETE FROM {qualified(table.name, quote)} WHERE {quote(key.name)} = {k}", (key_param,))


# ---- the Dialect functions: one sp_executesql call per statement ---------------------------------


def select_value(
    conn: Any, table: TableSchema, key: Column, key_value: Any, column: Column, lock: Lock
) -> tuple[bool, Any]:
    """:func:`select_value_shape`; one round trip."""
    found = rows_of(run(conn.cursor(), select_value_shape(table, key, column, lock), [to_driver(key_value, key)]))
    row = found[0] if found else None
    return (row is not None, read_value(row[0], column) if row is not None else None)


def upsert(conn: Any, put: PutRow) -> int:
    """PUT (:func:`upsert_shape`, one round trip). ``guard`` is not needed here: the engine's ``UPDLOCK,
    HOLDLOCK`` read already holds the key range, so no other session can insert or change the row
    before COMMIT (on Babelfish, which ignores the hints, a concurrent insert fails with 2627 instead)."""
    table, key, key_value, values, nulls = put.table, put.key, put.key_value, put.values, put.nulls
    names = list(values)
    params = [to_driver(key_value, key), *(to_driver(values[n], table.columns[n]) for n in names)]
    run(conn.cursor(), upsert_shape(table, key, names, nulls), params)
    return 1


def update(
    conn: Any, table: TableSchema, key: Column, key_value: Any, values: dict[str, Any], adds: frozenset[str] = NO_ADDS
) -> int:
    """PATCH (:func:`update_shape`, the columns in ``adds`` incremented); returns rows matched."""
    names = list(values)
    params = [to_driver(key_value, key), *(to_driver(values[n], table.columns[n]) for n in names)]
    return int(run(conn.cursor(), update_shape(table, key, names, adds), params).rowcount)


def delete(conn: Any, table: TableSchema, key: Column, key_value: Any) -> int:
    """DELETE (:func:`delete_shape`); returns rows deleted."""
    return int(run(conn.cursor(), delete_shape(table, key), [to_driver(key_value, key)]).rowcount)


def select_rows(
    conn: Any, table: TableSchema, key: Column, key_values: list[Any], columns: list[Column], lock: Lock
) -> list[tuple[Any, dict[str, Any]]]:
    """``(key, {column name: value})`` of the rows among ``key_values``, locked by :func:`read_shape`
    (keys sent in :func:`lock_order`); one round trip for any number of keys."""
    if not key_values:
        return []
    shape = read_shape(table, key, columns, lock, babelfish=SERVER.babelfish)
    rows = rows_json([[k] for k in sorted_keys(key_values, key)], [key])
    found = rows_of(run(conn.cursor(), shape, [rows]))
    return [(row[0], {c.name: read_value(v, c) for c, v in zip(columns, row[1:], strict=True)}) for row in found]


def select_many(
    conn: Any, table: TableSchema, key: Column, key_values: list[Any], column: Column, lock: Lock
) -> list[tuple[Any, Any]]:
    """``(key, value of column)`` of the rows among ``key_values``, locked as :func:`select_rows` locks."""
    return [(k, values[column.name]) for k, values in select_rows(conn, table, key, key_values, [column], lock)]


Rows = list[tuple[Any, dict[str, Any]]]


def _write_rows(cursor: Any, shape: Shape, table: TableSchema, key: Column, rows: Rows, tail: Sequence[Any]) -> int:
    """Run a rows statement with ``rows`` (``(key, values)``, sorted by :func:`lock_order`) as
    ``@rows`` and ``tail`` as its other parameters; returns the driver's row count (0 without rows)."""
    if not rows:
        return 0
    names = list(rows[0][1])
    columns = [key, *(table.columns[n] for n in names)]
    ordered = sorted(rows, key=lambda r: lock_order(r[0], key))
    cells = rows_json([[k, *(v[n] for n in names)] for k, v in ordered], columns)
    return int(run(cursor, shape, [cells, *tail]).rowcount)


def upsert_many(conn: Any, put: PutRows) -> int:
    """PUT of many rows: one call, :func:`upsert_rows_shape` (:func:`insert_new_shape` for
    ``only_new``), whose text is constant per table and column set. Existing rows whose ``guard``
    column is not the row's own (someone else's) are left alone and not counted; ``only_new``:
    nothing is written when a row exists.

    Returns:
        rows written.
    """
    table, key, rows, nulls, guard = put.table, put.key, put.rows, put.nulls, put.guard
    if not rows:
        return 0
    names = list(rows[0][1])
    shape = insert_new_shape(table, key, names) if put.only_new else upsert_rows_shape(table, key, names, nulls, guard)
    cursor = conn.cursor()
    _write_rows(cursor, shape, table, key, rows, ())
    found = rows_of(cursor)
    return int(found[0][0]) if found else 0


def update_many(
    conn: Any, table: TableSchema, key: Column, rows: Rows, guard: Guard = None, adds: frozenset[str] = NO_ADDS
) -> int:
    """PATCH of many rows: one :func:`update_rows_shape` (``WHERE t.owner = @owner`` with ``guard``;
    the columns in ``adds`` incremented); returns rows matched."""
    owner, tail = (guard[0], (to_driver(guard[1], guard[0]),)) if guard is not None else (None, ())
    shape = update_rows_shape(table, key, list(rows[0][1]) if rows else [], [], owner, adds)
    return _write_rows(conn.cursor(), shape, table, key, rows, tail)


def delete_many(conn: Any, table: TableSchema, key: Column, key_values: list[Any], guard: Guard = None) -> int:
    """DELETE of many rows: one :func:`delete_rows_shape` (only the caller's rows with ``guard``);
    returns rows deleted."""
    owner, tail = (guard[0], (to_driver(guard[1], guard[0]),)) if guard is not None else (None, ())
    return _write_rows(
        conn.cursor(), delete_rows_shape(table, key, owner), table, key, [(k, {}) for k in key_values], tail
    )


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


def _connection(number: int | None, message: str) -> RetryableError:
    """A connection lost, refused or timed out. pymssql reports the last number it saw, which can be
    stale (an earlier login's 5703, an earlier dead connection's 20047); FreeTDS's own (client-side,
    English) lines name the current one last."""
    db_lib = _DB_LIB.findall(message)
    return RetryableError("connection", number=int(db_lib[-1]) if db_lib else number)


def _in_process(number: int, message: str) -> RetryableError:
    return RetryableError(IN_PROCESS[number], in_process=True, number=number)


def _transient(number: int, message: str) -> RetryableError:
    return RetryableError(TRANSIENT[number], number=number, retry_after_ms=2000 if number in (40501, 10928) else 1000)


def _not_null(number: int, message: str) -> FatalOpError:
    return FatalOpError(ErrorCode.NOT_NULL_VIOLATION, column=_name(_COLUMN, message), number=number)


def _unique(number: int, message: str) -> FatalOpError:
    return FatalOpError(ErrorCode.UNIQUE_VIOLATION, constraint=_name(_CONSTRAINT, message), number=number)


def _constraint(number: int, message: str) -> FatalOpError:
    """547: for a foreign key the message's column belongs to the other table: report none."""
    kind, constraint = conflict_kind(message)
    column = _name(_COLUMN, message) if kind is ErrorCode.CHECK_VIOLATION else None
    return FatalOpError(kind or ErrorCode.CONSTRAINT_VIOLATION, column=column, constraint=constraint, number=number)


def _truncated(number: int, message: str) -> FatalOpError:
    """2628: "String or binary data would be truncated in table 't', column 'c'."."""
    return FatalOpError(ErrorCode.INVALID_DATA, column=_name(_COLUMN, message), reason=Reason.TOO_LONG, number=number)


def _data(number: int, message: str) -> FatalOpError:
    """Conversion messages quote the submitted value: no names are parsed from them."""
    return FatalOpError(ErrorCode.INVALID_DATA, reason=DATA_ERRORS[number], number=number)


def _fatal(code: ErrorCode) -> Callable[[int, str], FatalOpError]:
    return lambda number, message: FatalOpError(code, number=number)


Classifier = Callable[[int, str], FatalOpError | RetryableError]

CLASSIFIERS: dict[int, Classifier] = {
    **dict.fromkeys(IN_PROCESS, _in_process),
    **dict.fromkeys(TRANSIENT, _transient),
    **dict.fromkeys(DATA_ERRORS, _data),
    515: _not_null,
    2601: _unique,
    2627: _unique,
    547: _constraint,
    2628: _truncated,
    BABELFISH_GENERIC: lambda number, message: _babelfish(message),
    **{n: _fatal(ErrorCode.SCHEMA_MISMATCH) for n in (207, 208, 4902)},
    **{n: _fatal(ErrorCode.UNAUTHORIZED) for n in (229, 230, 262, 300)},
}
"""Error number -> classification; any other number is ``UNCLASSIFIED_ERROR`` with its number."""


def classify(exc: BaseException) -> FatalOpError | RetryableError | None:
    """Map a pymssql error by its SQL Server error number (``args[0]``) or DB-Lib number (table:
    :data:`CLASSIFIERS`; no number, a DB-Lib number or a login message: a connection failure)."""
    driver_errors: tuple[type[BaseException], ...] = (pymssql.Error, pymssql._mssql.MSSQLException)
    if not isinstance(exc, driver_errors):
        return None
    number, message = error_number(exc)
    if number is None or 20000 <= number <= 20099 or number in LOGIN_INFO:
        return _connection(number, message)
    return CLASSIFIERS.get(number, _fatal(ErrorCode.UNCLASSIFIED_ERROR))(number, message)


# ---- the ledger and the conflicts table (DESIGN.md section 3) -------------------------------------

LEDGER_TYPES = ("nvarchar(255)", "nvarchar(255)", "bigint", "bigint", "nchar(64)", "nvarchar(max)", "datetime2(3)")
"""Declared types of :data:`~._sql.LEDGER_COLUMNS` (db/migrations/mssql/002)."""
CONFLICT_TYPES = (
    "varchar(36)", "nvarchar(255)", "nvarchar(255)", "bigint", "bigint", "nvarchar(128)", "nvarchar(255)",
    "varchar(20)", "nvarchar(max)", "nvarchar(max)", "datetime2(3)", "tinyint",
)  # fmt: skip
"""Declared types of :data:`~._sql.CONFLICT_COLUMNS` (db/migrations/mssql/003)."""


def ledger_read_shape() -> Shape:
    """The ledger rows of one user and client among ``@rows`` (``[[digest], ...]``): a seek on the
    identity index (binary collation: ids compare exactly), no lock hint (rows are inserted once,
    never updated)."""
    digests = f"SELECT {json_cell('nchar(64)', 'j.c0')} FROM {shred_sql(['nchar(64)'])}"
    return Shape(
        f"SELECT {', '.join(LEDGER_READ_COLUMNS)} FROM {LEDGER_TABLE} WHERE user_id = @user AND client_id = @client "
        f"AND digest IN ({digests})",
        (("@user", "nvarchar(255)"), ("@client", "nvarchar(255)"), ROWS),
    )


def insert_json_shape(table: str, columns: Sequence[str], types: Sequence[str]) -> Shape:
    """``INSERT INTO table (columns) SELECT <cells> FROM OPENJSON(@rows) WITH (<types>)``: every row of
    ``@rows`` in one statement (exclusive locks on the new keys)."""
    cells = ", ".join(json_cell(t, f"j.c{i}") for i, t in enumerate(types))
    return Shape(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {cells} FROM {shred_sql(types)}", (ROWS,))


LEDGER_PRUNE = Shape(
    f"DELETE TOP ({PRUNE_ROWS}) FROM {LEDGER_TABLE} WHERE decided_at < @before", (("@before", "datetime2(3)"),)
)
"""At most :data:`PRUNE_ROWS` old ledger rows (exclusive locks on the rows it deletes)."""


def ledger_read(conn: Any, user_id: str, client_id: str, digests: Sequence[str]) -> list[Any]:
    """:func:`ledger_read_shape`: one statement for any number of digests."""
    cells = json_text([[d] for d in dict.fromkeys(digests)])
    return [tuple(row) for row in rows_of(run(conn.cursor(), ledger_read_shape(), [user_id, client_id, cells]))]


def _duplicate(exc: BaseException) -> bool:
    return error_number(exc)[0] in (2627, 2601)


def ledger_rows(entries: Sequence[Entry]) -> str:
    """The ``@rows`` of :func:`insert_json_shape` of the ledger."""
    cells = []
    for e in entries:
        i = e.identity
        stamp = to_driver(e.decided_at, STAMP)
        cells.append([i.user_id, i.client_id, i.first_op_id, i.last_op_id, i.digest, e.result_text(), stamp])
    return json_text(cells)


def ledger_claim(conn: Any, entries: Sequence[Entry]) -> Claim:
    """:func:`insert_json_shape` of the ledger rows; a duplicate identity (2627/2601): rolled back, the
    stored rows read again."""
    try:
        run(conn.cursor(), insert_json_shape(LEDGER_TABLE, LEDGER_COLUMNS, LEDGER_TYPES), [ledger_rows(entries)])
    except (pymssql.Error, pymssql._mssql.MSSQLException) as exc:
        if not _duplicate(exc):
            raise
        rollback(conn)
        first = entries[0].identity
        stored = ledger_read(conn, first.user_id, first.client_id, [e.identity.digest for e in entries])
        rollback(conn)  # nothing is open in autocommit mode; kept so the read can never leave a transaction
        return Claim(claimed=False, stored=tuple(stored))
    return CLAIMED


def ledger_prune(conn: Any, before: datetime) -> int:
    """:data:`LEDGER_PRUNE`; returns rows deleted."""
    return int(run(conn.cursor(), LEDGER_PRUNE, [to_driver(before, STAMP)]).rowcount)


def conflicts_insert(conn: Any, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`insert_json_shape` of every conflict row (``created_at`` a naive UTC datetime; ``resolved``
    0 by default)."""
    cells = [
        [
            to_driver(row.get(n), STAMP) if n == "created_at" else row.get(n, 0 if n == "resolved" else None)
            for n in CONFLICT_COLUMNS
        ]
        for row in rows
    ]
    run(conn.cursor(), insert_json_shape(CONFLICTS_TABLE, CONFLICT_COLUMNS, CONFLICT_TYPES), [json_text(cells)])
