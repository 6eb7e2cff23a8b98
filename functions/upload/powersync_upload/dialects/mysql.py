"""MySQL 8 and MariaDB 10.6+ through PyMySQL.

* Upsert: ``UPDATE ... WHERE key = %s`` and, when no row matched, ``INSERT``. Never
  ``INSERT ... ON DUPLICATE KEY UPDATE``: it fires on a collision with *any* unique index and would
  silently update another row (FACTS.md, "MySQL / MariaDB"). The connection uses ``CLIENT.FOUND_ROWS``
  so an UPDATE reports rows matched, not rows changed. A concurrent insert of the same new id ends in
  a duplicate-key error or a deadlock, both of which the engine retries.
* Every session runs with a strict ``sql_mode`` (no silent truncation or '' for missing values), UTC
  ``time_zone`` and ``utf8mb4``.
* Text columns carry their character set (``information_schema.columns.character_set_name``):
  text a ``latin1`` (cp1252), ``ascii`` or ``utf8mb3`` (no characters above U+FFFF) column cannot
  hold is INVALID_DATA ``encoding`` before any SQL runs.
* Each transaction caps lock waits (``innodb_lock_wait_timeout``, whole seconds) and statement time
  (MariaDB ``max_statement_time``; MySQL ``max_execution_time``, which only limits SELECT).
* MariaDB's ``JSON`` is ``LONGTEXT`` with a ``json_valid`` CHECK: introspection reads that CHECK and
  makes the column JSON, so a value that is not JSON is INVALID_DATA before any SQL, as everywhere
  (MySQL's real JSON type is introspected as JSON directly).

Error numbers: MySQL "Server Error Message Reference" and MariaDB "MariaDB Error Codes".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT

from ..errors import ErrorCode, FatalOpError, Reason, RetryableError
from ..ledger import TABLE as LEDGER_TABLE
from ..ledger import Claim, Entry
from ..schema import BMP_ONLY, FLOAT32_MAX, INT_RANGES, Column, Kind, TableSchema
from . import NO_ADDS, PRUNE_ROWS, Guard, PutRow, PutRows, Rows
from ._sql import (
    STAMP,
    RowStatements,
    Statements,
    chunks,
    insert_values_sql,
    json_guarded,
    qualified,
    quote_with,
    run_ledger_claim,
    select_sql,
    set_clauses,
    split_by_existence,
    table_with_constraints,
)

name = "mysql"
guarded_upsert = True
ordered_batches = False
PH = "%s"
quote = quote_with("`", "`", percent=True)
SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


def connect_args(url: str, timeout_s: float) -> dict[str, Any]:
    """PyMySQL keyword arguments for ``mysql://user:password@host:port/database``."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or None,
        "connect_timeout": max(1, int(timeout_s)),
        "charset": "utf8mb4",
        "autocommit": False,
        "client_flag": CLIENT.FOUND_ROWS,
        "init_command": f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'",
    }


def connect(url: str, timeout_s: float, statement_s: float | None = None) -> Any:
    """Open a connection (autocommit off, strict mode, UTC); statements are capped per transaction by
    :func:`begin` (``statement_s`` is not used)."""
    return pymysql.connect(**connect_args(url, timeout_s))


def begin(conn: Any, timeout_s: float) -> None:
    """Cap lock waits (whole seconds, at most 5) and statement time (whole seconds) for the coming
    transaction, then ``BEGIN``. The ``SET`` is sent only when the caps differ from what this session
    already has (a warm container's next request usually needs the same): one or two round trips."""
    lock_s = max(1, min(int(timeout_s), 5))
    whole_s = max(1, int(timeout_s))
    variable = "max_statement_time" if _is_mariadb(conn) else "max_execution_time"
    value = whole_s if variable == "max_statement_time" else whole_s * 1000
    wanted = f"SET SESSION innodb_lock_wait_timeout = {lock_s}, {variable} = {value}"
    if getattr(conn, _SESSION_CAPS, None) != wanted:
        conn.cursor().execute(wanted)
        setattr(conn, _SESSION_CAPS, wanted)
    conn.begin()


_SESSION_CAPS = "_powersync_session_caps"
"""Attribute of a PyMySQL connection holding the last caps ``begin`` set on its session."""


def commit(conn: Any) -> None:
    """COMMIT."""
    conn.commit()


def rollback(conn: Any) -> None:
    """ROLLBACK."""
    conn.rollback()


def _is_mariadb(conn: Any) -> bool:
    return "mariadb" in str(conn.get_server_info()).lower()


_INTROSPECT = """
SELECT column_name, data_type, column_type, is_nullable, column_default, extra,
       character_maximum_length, numeric_precision, numeric_scale, datetime_precision, character_set_name,
       collation_name
FROM information_schema.columns
WHERE table_schema = COALESCE(%s, DATABASE()) AND table_name = %s
ORDER BY ordinal_position
"""

_INTS = {"tinyint": "tinyint", "smallint": "smallint", "mediumint": "mediumint", "int": "int", "bigint": "bigint"}


CHARSET_CODECS: dict[str, str | None] = {
    "utf8mb4": None,
    "utf16": None,
    "utf16le": None,
    "utf32": None,
    "gb18030": None,
    "binary": None,
    "utf8": BMP_ONLY,
    "utf8mb3": BMP_ONLY,
    "ucs2": BMP_ONLY,
    "latin1": "cp1252",  # MySQL's latin1 is Windows-1252
    "ascii": "ascii",
    "latin2": "iso8859_2",
    "latin5": "iso8859_9",
    "latin7": "iso8859_13",
    "greek": "iso8859_7",
    "hebrew": "iso8859_8",
    "cp1250": "cp1250",
    "cp1251": "cp1251",
    "cp1256": "cp1256",
    "cp1257": "cp1257",
    "cp850": "cp850",
    "cp852": "cp852",
    "cp866": "cp866",
    "koi8r": "koi8_r",
    "koi8u": "koi8_u",
    "macroman": "mac_roman",
    "tis620": "tis_620",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "ujis": "euc_jp",
    "eucjpms": "euc_jp",
    "gbk": "gbk",
    "gb2312": "gb2312",
    "big5": "big5",
    "euckr": "euc_kr",
}
"""MySQL/MariaDB character set -> Python codec (:data:`BMP_ONLY`: no characters above U+FFFF; ``None``:
any text). A character set missing here maps to ``ascii``, which refuses what it cannot prove fits."""


def codec_for(charset: str | None) -> str | None:
    """The :attr:`Column.encoding` of a column in ``charset`` (``None`` for non-text columns)."""
    if not charset:
        return None
    return CHARSET_CODECS.get(str(charset).lower(), "ascii")


_KINDS = {
    **dict.fromkeys(_INTS, Kind.INTEGER),
    "decimal": Kind.DECIMAL,
    "float": Kind.FLOAT,
    "double": Kind.FLOAT,
    "datetime": Kind.TIMESTAMP,
    "timestamp": Kind.TIMESTAMP,
    "date": Kind.DATE,
    "time": Kind.TIME,
    "json": Kind.JSON,
    **dict.fromkeys(("varchar", "char", "text", "tinytext", "mediumtext", "longtext"), Kind.TEXT),
}
"""``information_schema.columns.data_type`` -> kind (``tinyint(1)`` is a boolean; any other: OTHER)."""


def key_folding(collation: str | None) -> dict[str, Any]:
    """How a text column's collation compares (DESIGN.md section 3, "One device id, one row"):
    ``pads_spaces`` unless the collation is NO PAD (MariaDB ``*_nopad_*``, MySQL 8 ``*_0900_*``,
    ``binary``); ``ignores_case`` for ``*_ci`` collations (MariaDB/MySQL name the comparison in the
    collation's suffix)."""
    name = str(collation or "").lower()
    if not name:
        return {}
    no_pad = "nopad" in name or "_0900_" in name or name == "binary"
    return {"pads_spaces": not no_pad, "ignores_case": name.endswith("_ci")}


def column_from_catalog(row: tuple[Any, ...]) -> Column:
    """A :class:`Column` from one ``information_schema.columns`` row of :data:`_INTROSPECT`."""
    col, data_type, column_type, nullable, default, extra, max_len, precision, scale, dt_precision = row[:10]
    charset = row[10] if len(row) > 10 else None
    collation = row[11] if len(row) > 11 else None
    data_type, column_type, extra = str(data_type).lower(), str(column_type).lower(), str(extra or "").lower()
    kind = Kind.BOOLEAN if column_type.startswith("tinyint(1)") else _KINDS.get(data_type, Kind.OTHER)
    facts: dict[str, Any] = {}
    if kind is Kind.INTEGER:
        low, high = INT_RANGES[_INTS[data_type]]
        facts["int_range"] = (0, high * 2 + 1) if "unsigned" in column_type else (low, high)
    elif kind is Kind.DECIMAL:
        facts.update(precision=precision, scale=scale)
    elif kind is Kind.FLOAT:
        facts["float_max"] = FLOAT32_MAX if data_type == "float" else None
    elif kind in (Kind.TIMESTAMP, Kind.TIME):
        facts["fraction_digits"] = dt_precision or 0
    elif kind is Kind.TEXT:
        facts.update(max_length=max_len, encoding=codec_for(charset), **key_folding(collation))
    return Column(
        kind=kind,
        name=col,
        type_name=column_type,
        nullable=nullable == "YES",
        # MariaDB reports DEFAULT NULL as the string 'NULL'
        has_default=(default is not None and str(default).upper() != "NULL") or "auto_increment" in extra,
        writable="generated" not in extra,
        **facts,
    )


def introspect(conn: Any, table: str) -> TableSchema | None:
    """Read the table's columns, foreign keys, primary key and unique indexes from ``information_schema``; ``None``
    when it does not exist (three round trips, once per container)."""
    schema, _, bare = table.rpartition(".")
    cursor = conn.cursor()
    cursor.execute(_INTROSPECT, (schema or None, bare))
    rows = cursor.fetchall()
    if not rows:
        return None
    columns = {row[0]: column_from_catalog(row) for row in rows}
    if _is_mariadb(conn):
        cursor.execute(_JSON_CHECKS, (schema or None, bare))
        columns = with_json_checks(columns, [str(r[0]) for r in cursor.fetchall()])
    return table_with_constraints(cursor, table, columns, _FOREIGN_KEYS, _UNIQUE, (schema or None, bare))


_JSON_CHECKS = """
SELECT check_clause FROM information_schema.check_constraints
WHERE constraint_schema = COALESCE(%s, DATABASE()) AND table_name = %s AND check_clause LIKE 'json\\_valid(%%'
"""
"""MariaDB's JSON columns: ``LONGTEXT`` with a ``json_valid(`c`)`` CHECK (one round trip, MariaDB only:
MySQL 8 has a real JSON type and its ``check_constraints`` has no ``table_name``)."""
_JSON_VALID = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)


def with_json_checks(columns: dict[str, Column], clauses: list[str]) -> dict[str, Column]:
    """``columns`` with each text column that a ``json_valid(`c`)`` CHECK guards turned into a JSON
    column, so a value that is not JSON is ``INVALID_DATA`` before any SQL (as on the other dialects),
    never the CHECK_VIOLATION of the constraint."""
    matches = [_JSON_VALID.fullmatch(clause.strip()) for clause in clauses]
    return json_guarded(columns, {m.group(1).replace("``", "`") for m in matches if m})


_FOREIGN_KEYS = """
SELECT k.constraint_name, k.column_name, k.referenced_table_name, k.referenced_column_name, r.delete_rule
FROM information_schema.key_column_usage k
JOIN information_schema.referential_constraints r
  ON r.constraint_schema = k.constraint_schema AND r.constraint_name = k.constraint_name
 AND r.table_name = k.table_name
WHERE k.table_schema = COALESCE(%s, DATABASE()) AND k.table_name = %s AND k.referenced_table_name IS NOT NULL
ORDER BY k.constraint_name, k.ordinal_position
"""
# The primary key and the unique indexes; MySQL's functional key parts have no column_name (None
# rows, which make their index loose). No index is partial here.
_UNIQUE = """
SELECT index_name, column_name, index_name = 'PRIMARY', 0 FROM information_schema.statistics
WHERE table_schema = COALESCE(%s, DATABASE()) AND table_name = %s AND non_unique = 0
ORDER BY index_name, seq_in_index
"""


def to_driver(value: Any, column: Column) -> Any:
    """Adapt a converted value for PyMySQL (booleans as 0/1, UUIDs as text, decimals exact)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


_LOCKS = {"update": "FOR UPDATE", "share": "LOCK IN SHARE MODE"}


def insert_sql(table: str, key: str, columns: list[str]) -> str:
    """``INSERT INTO table (key, columns...) VALUES (...)``."""
    names = [key, *columns]
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(PH for _ in names)})"


def upsert(conn: Any, put: PutRow) -> int:
    """UPDATE in place, INSERT when no row matched (see the module docstring). ``guard`` is not needed:
    the engine's ``FOR UPDATE`` read already locked the row or the gap where it would go."""
    table, key, key_value, values, nulls = put.table, put.key, put.key_value, put.values, put.nulls
    names = list(values)
    table_sql, key_sql = qualified(table.name, quote), quote(key.name)
    key_param = to_driver(key_value, key)
    params = [to_driver(values[n], table.columns[n]) for n in names]
    cursor = conn.cursor()
    if names or nulls:
        sets = [f"{quote(n)} = {PH}" for n in names] + [f"{quote(n)} = NULL" for n in nulls]
        cursor.execute(f"UPDATE {table_sql} SET {', '.join(sets)} WHERE {key_sql} = {PH}", (*params, key_param))
        matched = cursor.rowcount
    else:
        matched = cursor.execute(select_sql(table_sql, key_sql, key_sql, PH, "FOR UPDATE"), (key_param,))
    if not matched:
        cursor.execute(insert_sql(table_sql, key_sql, [quote(n) for n in names]), (key_param, *params))
    return 1


def add(stored: str, increment: str, column: Column) -> str:
    """A delta write's new value: ``stored + increment``; for a DECIMAL column the increment (sent as
    exact text: MySQL would add text as a DOUBLE, inexact past 15 digits) cast to ``DECIMAL(65, s)``,
    which holds the difference of any two values of the column up to ``DECIMAL(64, s)``. The sum out
    of the column's range is error 1264 (or 1690 past BIGINT), ``INVALID_DATA`` ``out_of_range``."""
    if column.kind is Kind.DECIMAL:
        return f"{stored} + CAST({increment} AS DECIMAL(65, {column.scale or 0}))"
    return f"{stored} + {increment}"


CHUNK = 10000
"""Rows per multi-row statement and keys per IN list (PyMySQL sends parameters inline, so only
``max_allowed_packet``, 16 MiB by default on MariaDB and 64 MiB on MySQL 8, bounds a statement; a request
body is capped below that)."""
STATEMENTS = Statements(quote, PH, to_driver, CHUNK, add)

ROWS = RowStatements(STATEMENTS, _LOCKS)
"""The row statements this dialect runs as the others do (:class:`~powersync_upload.dialects._sql.RowStatements`)."""
select_value = ROWS.select_value
update = ROWS.update
delete = ROWS.delete
select_many = ROWS.select_many
delete_many = ROWS.delete_many
select_rows = ROWS.select_rows
ledger_read = ROWS.ledger_read
conflicts_insert = ROWS.conflicts_insert


def upsert_many(conn: Any, put: PutRows) -> int:
    """One locking read (``FOR UPDATE``, of the key and the ``guard`` column) splits the rows: existing
    rows whose guard matches are updated with one multi-row UPDATE ... JOIN, new rows inserted with one
    multi-row INSERT, per chunk; existing rows whose guard differs (someone else's) are left alone and
    not counted. Never ``ON DUPLICATE KEY UPDATE`` (see the module docstring). ``only_new``: nothing is
    written when a row exists."""
    table, key, rows, nulls, guard, only_new = put.table, put.key, put.rows, put.nulls, put.guard, put.only_new
    checked = guard or key
    found = select_many(conn, table, key, [k for k, _ in rows], checked, "update")
    present, absent = split_by_existence(rows, found, lambda k: to_driver(k, key))
    if only_new and present:
        return 0
    refused = 0
    if guard is not None and present:
        owners = {_folded(to_driver(k, key)): _folded(v) for k, v in found}

        def mine(row: tuple[Any, dict[str, Any]]) -> bool:
            return bool(owners.get(_folded(to_driver(row[0], key))) == _folded(to_driver(row[1][guard.name], guard)))

        allowed = [row for row in present if mine(row)]
        refused, present = len(present) - len(allowed), allowed
    names = list(rows[0][1])
    if present and (names or nulls):
        _update_join(conn, table, key, present, names, nulls)
    cursor = conn.cursor()
    columns = [quote(key.name), *(quote(n) for n in names)]
    for part in chunks(absent, CHUNK):
        params = [
            value for k, v in part for value in (to_driver(k, key), *(to_driver(v[n], table.columns[n]) for n in names))
        ]
        cursor.execute(insert_values_sql(qualified(table.name, quote), columns, len(part), PH), params)
    return len(rows) - refused


def _folded(value: Any) -> Any:
    """Text compared as the default collations and UUID columns do: case-insensitively."""
    return str(value).casefold() if isinstance(value, (str, uuid.UUID)) else value


def _update_join(
    conn: Any,
    table: TableSchema,
    key: Column,
    rows: Rows,
    names: list[str],
    nulls: list[str],
    guard: Guard = None,
    adds: frozenset[str] = NO_ADDS,
) -> int:
    """``UPDATE t JOIN (SELECT ? AS k, ? AS c0 UNION ALL SELECT ?, ? ...) v ON t.k = v.k SET t.c = v.c0,
    t.d = t.d + v.c1 [WHERE t.owner = ?]`` (``d`` in ``adds``: a delta's increment, :func:`add`)."""
    cursor = conn.cursor()
    matched = 0
    aliases = ["k", *(f"c{i}" for i in range(len(names)))]
    sets = [f"t.{c}" for c in set_clauses(STATEMENTS, table, names, [f"v.{a}" for a in aliases[1:]], adds, "t.")]
    sets += [f"t.{quote(n)} = NULL" for n in nulls]
    for part in chunks(rows, CHUNK):
        first = "SELECT " + ", ".join(f"{PH} AS {a}" for a in aliases)
        rest = " UNION ALL SELECT " + ", ".join(PH for _ in aliases)
        derived = first + rest * (len(part) - 1)
        sql = (
            f"UPDATE {qualified(table.name, quote)} AS t JOIN ({derived}) AS v ON t.{quote(key.name)} = v.k "
            f"SET {', '.join(sets)}"
        )
        params = [
            value for k, v in part for value in (to_driver(k, key), *(to_driver(v[n], table.columns[n]) for n in names))
        ]
        if guard is not None:
            sql += f" WHERE t.{quote(guard[0].name)} = {PH}"
            params.append(to_driver(guard[1], guard[0]))
        cursor.execute(sql, params)
        matched += cursor.rowcount
    return matched


def update_many(
    conn: Any, table: TableSchema, key: Column, rows: Rows, guard: Guard = None, adds: frozenset[str] = NO_ADDS
) -> int:
    """One multi-row ``UPDATE ... JOIN`` per chunk, ``WHERE t.owner = ?`` with ``guard``; the columns in
    ``adds`` incremented (:func:`_update_join`)."""
    return _update_join(conn, table, key, rows, list(rows[0][1]), [], guard, adds)


IN_PROCESS = {1213: "deadlock", 1205: "lock_timeout"}
TRANSIENT = {
    1040: "too_many_connections",
    1053: "server_shutdown",
    1290: "read_only",
    1836: "read_only",
    1317: "interrupted",
    1927: "connection_killed",
    1969: "timeout",
    3024: "timeout",
    1045: "login_failed",
    2002: "connection",
    2003: "connection",
    2006: "connection",
    2013: "connection",
    2014: "connection",
    2055: "connection",
    1152: "connection",
    1158: "connection",
    1159: "connection",
    1160: "connection",
    1161: "connection",
    1180: "commit_unknown",
    1614: "commit_unknown",
}
"""Retryable error numbers (server 1xxx/3xxx, client 2xxx)."""

DATA_ERRORS = {
    1406: Reason.TOO_LONG,
    1264: Reason.OUT_OF_RANGE,
    1690: Reason.OUT_OF_RANGE,
    1265: Reason.TYPE,
    1366: Reason.TYPE,
    1367: Reason.TYPE,
    1292: Reason.FORMAT,
    3140: Reason.FORMAT,
    1411: Reason.FORMAT,
}


_FATAL_NUMBERS = {
    **dict.fromkeys((1048, 1364), ErrorCode.NOT_NULL_VIOLATION),
    **dict.fromkeys((1062, 1586), ErrorCode.UNIQUE_VIOLATION),
    **dict.fromkeys((1451, 1452, 1216, 1217), ErrorCode.FOREIGN_KEY_VIOLATION),
    **dict.fromkeys((3819, 4025), ErrorCode.CHECK_VIOLATION),
    **dict.fromkeys(DATA_ERRORS, ErrorCode.INVALID_DATA),
    **dict.fromkeys((1054, 1146), ErrorCode.SCHEMA_MISMATCH),
    **dict.fromkeys((1142, 1143), ErrorCode.UNAUTHORIZED),
}
"""Fatal error numbers (any other number that is not retryable: ``UNCLASSIFIED_ERROR``)."""
_NAMED_BY = {
    ErrorCode.NOT_NULL_VIOLATION: ("column", ("olumn '", "ield '")),
    ErrorCode.UNIQUE_VIOLATION: ("constraint", ("for key '",)),
    ErrorCode.CHECK_VIOLATION: ("constraint", ("constraint '", "CONSTRAINT `")),
    ErrorCode.INVALID_DATA: ("column", ("column '", "olumn '")),
}
"""The name an error's message carries: which field it fills, and the markers before it (:func:`_quoted`)."""


def classify(exc: BaseException) -> FatalOpError | RetryableError | None:
    """Map a PyMySQL error by its error number (``args[0]``)."""
    if not isinstance(exc, pymysql.err.MySQLError):
        return None
    number = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if number is None or isinstance(exc, pymysql.err.InterfaceError):
        return RetryableError("connection", number=number)
    if number in IN_PROCESS:
        return RetryableError(IN_PROCESS[number], in_process=True, number=number)
    if number in TRANSIENT:
        return RetryableError(TRANSIENT[number], number=number)
    code = _FATAL_NUMBERS.get(number, ErrorCode.UNCLASSIFIED_ERROR)
    names: dict[str, Any] = {}
    if code in _NAMED_BY:
        field, markers = _NAMED_BY[code]
        names[field] = _quoted(exc, *markers)
    return FatalOpError(code, reason=DATA_ERRORS.get(number), number=number, **names)


def _quoted(exc: BaseException, *markers: str) -> str | None:
    """The name after one of ``markers`` in the server message, up to the closing quote (names only)."""
    message = str(exc.args[1]) if len(exc.args) > 1 else ""
    for marker in markers:
        start = message.find(marker)
        if start >= 0:
            start += len(marker)
            end = message.find(marker[-1], start)
            if end > start:
                found = message[start:end]
                return found.rpartition(".")[2]
    return None


# ---- the ledger, the conflicts table and current-row reads (DESIGN.md section 3) -------------------


def _duplicate(exc: BaseException) -> bool:
    return isinstance(exc, pymysql.err.IntegrityError) and bool(exc.args) and exc.args[0] == 1062


def ledger_claim(conn: Any, entries: Sequence[Entry]) -> Claim:
    """``INSERT ... VALUES``; a duplicate identity (1062): rolled back, read again in a new snapshot."""
    return run_ledger_claim(conn, STATEMENTS, entries, _duplicate, rollback)


def ledger_prune(conn: Any, before: datetime) -> int:
    """``DELETE ... WHERE decided_at < %s ORDER BY seq LIMIT n``."""
    cursor = conn.cursor()
    cursor.execute(
        f"DELETE FROM {LEDGER_TABLE} WHERE decided_at < %s ORDER BY seq LIMIT {PRUNE_ROWS}", (to_driver(before, STAMP),)
    )
    return int(cursor.rowcount)
