"""PostgreSQL 13+ through psycopg 3.

Upsert is ``INSERT ... ON CONFLICT (key) DO UPDATE``: only a collision on the key updates, so a
duplicate on another unique index is still a ``UNIQUE_VIOLATION``, and two sessions inserting the same
new id never fail. Each transaction sets ``statement_timeout`` and ``lock_timeout`` locally
(``set_config(..., true)``), so nothing outlives the request's deadline and no session state leaks
to a pooler. Errors are classified by SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..errors import ErrorCode, FatalOpError, Reason, RetryableError
from ..ledger import TABLE as LEDGER_TABLE
from ..ledger import Claim, Entry
from ..schema import FLOAT32_MAX, INT_RANGES, Column, Kind, TableSchema
from . import NO_ADDS, PRUNE_ROWS, Guard, Lock, PutRow, PutRows, Rows
from ._sql import (
    LEDGER_COLUMNS,
    LEDGER_READ_COLUMNS,
    RowStatements,
    Statements,
    foreign_keys_from_rows,
    ledger_row,
    prune_in_sql,
    qualified,
    quote_with,
    run_ledger_claim,
    set_clauses,
    unique_from_rows,
    upsert_statement,
)

name = "postgresql"
guarded_upsert = True
ordered_batches = False
PH = "%s"
quote = quote_with('"', '"', percent=True)


def connect(url: str, timeout_s: float, statement_s: float | None = None) -> psycopg.Connection[Any]:
    """Open a connection with ``connect_timeout`` of at least one second (statements are capped per
    transaction by :func:`begin`; ``statement_s`` is not used). It is in autocommit mode:
    :func:`begin` opens each transaction itself, in the same round trip as its timeouts (psycopg's
    implicit BEGIN would cost one more)."""
    scheme, sep, rest = url.partition("://")
    dsn = f"postgresql{sep}{rest}" if scheme.startswith("postgres") else url
    return psycopg.connect(
        dsn, autocommit=True, connect_timeout=max(1, int(timeout_s)), application_name="powersync-upload"
    )


def begin(conn: psycopg.Connection[Any], timeout_s: float) -> None:
    """``BEGIN`` plus transaction-local statement and lock timeouts (milliseconds), one round trip."""
    statement_ms = max(100, int(timeout_s * 1000))
    lock_ms = max(100, min(statement_ms, 5000))
    conn.execute(
        f"BEGIN; SELECT set_config('statement_timeout', '{statement_ms}', true), "
        f"set_config('lock_timeout', '{lock_ms}', true)".encode()
    )


def commit(conn: psycopg.Connection[Any]) -> None:
    """COMMIT (the connection is in autocommit mode; the transaction is ours)."""
    conn.execute(b"COMMIT")


def rollback(conn: psycopg.Connection[Any]) -> None:
    """ROLLBACK."""
    conn.execute(b"ROLLBACK")


_INTROSPECT = """
SELECT c.column_name, c.data_type, c.udt_name, c.is_nullable, c.column_default, c.is_identity,
       c.is_generated, c.character_maximum_length, c.numeric_precision, c.numeric_scale, c.datetime_precision
FROM information_schema.columns c
WHERE c.table_schema = COALESCE(%s, current_schema()) AND c.table_name = %s
ORDER BY c.ordinal_position
"""

_INTS = {"smallint": "smallint", "integer": "int", "bigint": "bigint"}


_KINDS = {
    **dict.fromkeys(_INTS, Kind.INTEGER),
    "numeric": Kind.DECIMAL,
    "real": Kind.FLOAT,
    "double precision": Kind.FLOAT,
    "boolean": Kind.BOOLEAN,
    "uuid": Kind.UUID,
    "json": Kind.JSON,
    "jsonb": Kind.JSON,
    "timestamp without time zone": Kind.TIMESTAMP,
    "timestamp with time zone": Kind.TIMESTAMPTZ,
    "date": Kind.DATE,
    "time without time zone": Kind.TIME,
    "character varying": Kind.TEXT,
    "character": Kind.TEXT,
    "text": Kind.TEXT,
}
"""``information_schema.columns.data_type`` -> kind (any other type: :attr:`Kind.OTHER`)."""


def column_from_catalog(row: tuple[Any, ...]) -> Column:
    """A :class:`Column` from one ``information_schema.columns`` row of :data:`_INTROSPECT`."""
    col, data_type, udt, nullable, default, identity, generated, max_len, precision, scale, dt_precision = row
    kind = _KINDS.get(data_type, Kind.OTHER)
    return Column(
        kind=kind,
        name=col,
        type_name=udt,  # varchar, numeric, uuid, jsonb...: the cast of the batch arrays (no typmod)
        nullable=nullable == "YES",
        has_default=default is not None or identity == "YES",
        writable=generated != "ALWAYS" and identity != "YES",  # identity values are the server's
        **_type_facts(kind, data_type, max_len, precision, scale, dt_precision),
    )


def _type_facts(
    kind: Kind, data_type: str, max_len: Any, precision: Any, scale: Any, dt_precision: Any
) -> dict[str, Any]:
    """The :class:`Column` fields a kind needs: range, precision and scale, fraction digits, length."""
    if kind is Kind.INTEGER:
        return {"int_range": INT_RANGES[_INTS[data_type]]}
    if kind is Kind.DECIMAL:
        return {"precision": precision, "scale": scale}
    if kind is Kind.FLOAT:
        return {"float_max": FLOAT32_MAX if data_type == "real" else None}
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.TIME):
        return {"fraction_digits": dt_precision if dt_precision is not None else 6}
    if kind is Kind.TEXT:
        # char(n) compares ignoring trailing spaces; text and varchar compare exactly (deterministic collations)
        return {"max_length": max_len, "pads_spaces": data_type == "character"}
    return {}


# The parent table by its bare name (``relname``): ``regclass::text`` quotes names such as ``"Order"`` or
# ``"user"``, which then never matched the planner's table names, so such a parent was not written first.
_FOREIGN_KEYS = """
SELECT c.oid, a.attname, parent.relname, pa.attname, c.confdeltype
FROM pg_constraint c
CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(child, parent, position)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.child
JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = k.parent
JOIN pg_class parent ON parent.oid = c.confrelid
WHERE c.conrelid = to_regclass(%s) AND c.contype = 'f'
ORDER BY c.oid, k.position
"""
# Key columns only (``INCLUDE`` columns come after ``indnkeyatts``); an expression member (attnum 0)
# reads as a NULL name. Partial and deferrable indexes are loose: ON CONFLICT cannot use them.
_UNIQUE = """
SELECT i.indexrelid, a.attname, i.indisprimary, i.indpred IS NOT NULL OR NOT i.indimmediate
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND k.position <= i.indnkeyatts
ORDER BY i.indexrelid, k.position
"""


def introspect(conn: psycopg.Connection[Any], table: str) -> TableSchema | None:
    """Read the table's columns from ``information_schema``, its foreign keys, primary key and unique
    indexes from ``pg_constraint``/``pg_index``; ``None`` when it does not exist (three round trips,
    once per container)."""
    schema, _, bare = table.rpartition(".")
    rows = conn.execute(_INTROSPECT, (schema or None, bare)).fetchall()
    if not rows:
        return None
    regclass = qualified(table, quote_with('"', '"', percent=False))
    foreign = conn.execute(_FOREIGN_KEYS, (regclass,)).fetchall()
    unique = conn.execute(_UNIQUE, (regclass,)).fetchall()
    return TableSchema(
        name=table,
        columns={row[0]: column_from_catalog(row) for row in rows},
        foreign_keys=foreign_keys_from_rows(foreign),
        **unique_from_rows(unique),
    )


def to_driver(value: Any, column: Column) -> Any:
    """psycopg adapts the converted Python values natively (UUID, Decimal, datetime, bool)."""
    return value


STATEMENTS = Statements(quote, PH, to_driver)


_LOCKS = {"update": "FOR UPDATE", "share": "FOR SHARE"}

ROWS = RowStatements(STATEMENTS, _LOCKS)
"""The row statements this dialect runs as the others do (:class:`~powersync_upload.dialects._sql.RowStatements`)."""
select_value = ROWS.select_value
update = ROWS.update
delete = ROWS.delete
select_rows = ROWS.select_rows
conflicts_insert = ROWS.conflicts_insert


def upsert(conn: psycopg.Connection[Any], put: PutRow) -> int:
    """``INSERT ... ON CONFLICT (key) DO UPDATE ... [WHERE owner = EXCLUDED.owner]``."""
    table, key, key_value, values, nulls, guard = put.table, put.key, put.key_value, put.values, put.nulls, put.guard
    names = list(values)
    sql = upsert_statement(STATEMENTS, table, key, names, nulls, guard[0] if guard else None)
    return conn.execute(sql.encode(), [key_value, *(values[n] for n in names)]).rowcount


def select_many(
    conn: psycopg.Connection[Any], table: TableSchema, key: Column, key_values: list[Any], column: Column, lock: Lock
) -> list[tuple[Any, Any]]:
    """``SELECT key, column ... WHERE key = ANY(%s) FOR UPDATE|SHARE``: one array parameter."""
    sql = (
        f"SELECT {quote(key.name)}, {quote(column.name)} FROM {qualified(table.name, quote)} "
        f"WHERE {quote(key.name)} = ANY(%s) {_LOCKS[lock]}"
    )
    return [(r[0], r[1]) for r in conn.execute(sql.encode(), (list(key_values),)).fetchall()]


def increment_type(column: Column) -> str:
    """The type a delta's increment travels as: ``float8`` for a floating column, else ``numeric``,
    which holds the difference of any two values of an integer or numeric column (it may not fit the
    column itself: only the sum must, and assigning the sum checks the column's range, 22003)."""
    return "float8" if column.kind is Kind.FLOAT else "numeric"


def _arrays(table: TableSchema, key: Column, names: list[str], adds: frozenset[str] = NO_ADDS) -> str:
    """``unnest(%b::uuid[], %b::varchar[], ...)``: one array parameter per column, sent in binary (see
    :func:`_array_params`), cast to the column's base type without its modifier, so assigning to the
    column still checks length and range; a column in ``adds`` (an increment) as :func:`increment_type`."""
    columns = [table.columns[n] for n in names]
    types = [key.type_name, *(increment_type(c) if c.name in adds else c.type_name for c in columns)]
    return "unnest(" + ", ".join(f"%b::{quote(t)}[]" for t in types) + ")"


def _array_params(rows: Rows, names: list[str]) -> list[list[Any]]:
    """One list per column. :func:`_arrays` sends them in binary (``%b``): psycopg dumps a text array
    element by element with a quoting regex (55 ms for 10,000 rows of 3 columns here), a binary one in
    C (8 ms); the explicit ``::type[]`` casts keep the server's checks the same."""
    return [[k for k, _ in rows], *([v[n] for _, v in rows] for n in names)]


def upsert_many(conn: psycopg.Connection[Any], put: PutRows) -> int:
    """``INSERT ... SELECT * FROM unnest(arrays) ON CONFLICT (key) DO UPDATE`` (``DO NOTHING`` with
    ``only_new``): one statement, one parameter per column whatever the number of rows."""
    table, key, rows, nulls, guard, only_new = put.table, put.key, put.rows, put.nulls, put.guard, put.only_new
    names = list(rows[0][1])
    source = f"SELECT * FROM {_arrays(table, key, names)}"
    sql = upsert_statement(STATEMENTS, table, key, names, nulls, guard, source=source, do_nothing=only_new)
    return conn.execute(sql.encode(), _array_params(rows, names)).rowcount


def update_many(
    conn: psycopg.Connection[Any],
    table: TableSchema,
    key: Column,
    rows: Rows,
    guard: Guard = None,
    adds: frozenset[str] = NO_ADDS,
) -> int:
    """``UPDATE t SET c = v.c0, d = t.d + v.c1 FROM unnest(arrays) AS v(k, c0, c1...) WHERE t.key = v.k
    [AND t.owner = %s]``: ``d`` in ``adds`` (a delta's increment, typed :func:`increment_type`)."""
    names = list(rows[0][1])
    aliases = ", ".join(["k", *(f"c{i}" for i in range(len(names)))])
    sets = ", ".join(set_clauses(STATEMENTS, table, names, [f"v.c{i}" for i in range(len(names))], adds, "t."))
    source = f"{_arrays(table, key, names, adds)} AS v({aliases})"
    sql = f"UPDATE {qualified(table.name, quote)} AS t SET {sets} FROM {source} WHERE t.{quote(key.name)} = v.k"
    params: list[Any] = _array_params(rows, names)
    if guard is not None:
        sql += f" AND t.{quote(guard[0].name)} = %s"
        params.append(guard[1])
    return conn.execute(sql.encode(), params).rowcount


def delete_many(
    conn: psycopg.Connection[Any], table: TableSchema, key: Column, key_values: list[Any], guard: Guard = None
) -> int:
    """``DELETE ... WHERE key = ANY(%s) [AND owner = %s]``."""
    sql = f"DELETE FROM {qualified(table.name, quote)} WHERE {quote(key.name)} = ANY(%s)"
    params: list[Any] = [list(key_values)]
    if guard is not None:
        sql += f" AND {quote(guard[0].name)} = %s"
        params.append(guard[1])
    return conn.execute(sql.encode(), params).rowcount


_CONSTRAINTS = {
    "23502": ErrorCode.NOT_NULL_VIOLATION,
    "23505": ErrorCode.UNIQUE_VIOLATION,
    "23503": ErrorCode.FOREIGN_KEY_VIOLATION,
    "23514": ErrorCode.CHECK_VIOLATION,
}
_DATA_REASONS = {
    "22001": Reason.TOO_LONG,
    "22003": Reason.OUT_OF_RANGE,
    "22008": Reason.OUT_OF_RANGE,
    "22P02": Reason.FORMAT,
    "22007": Reason.FORMAT,
    "22021": Reason.FORMAT,
    "22P05": Reason.FORMAT,
}
_IN_PROCESS = {"40001": "serialization_failure", "40P01": "deadlock", "55P03": "lock_timeout"}
_RETRYABLE = {
    "57014": "timeout",
    "57P01": "admin_shutdown",
    "57P02": "crash_shutdown",
    "57P03": "cannot_connect_now",
    "53300": "too_many_connections",
    "53000": "insufficient_resources",
    "53100": "disk_full",
    "53200": "out_of_memory",
    "25006": "read_only_transaction",
    "40003": "commit_unknown",
}


def classify(exc: BaseException) -> FatalOpError | RetryableError | None:
    """Map a psycopg error by SQLSTATE; a connection-level failure without one is retryable."""
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate
    if state is None:  # raised by psycopg itself, not by the server
        return _without_state(exc)
    return (
        _fatal_by_state(state, exc.diag)
        or _retryable_by_state(exc, state)
        or FatalOpError(ErrorCode.UNCLASSIFIED_ERROR, number=state)
    )


def _without_state(exc: psycopg.Error) -> FatalOpError | RetryableError:
    """An error psycopg raised itself: a lost connection, a value it cannot send (NUL in text), or ours."""
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return RetryableError("connection")
    if isinstance(exc, psycopg.DataError):
        return FatalOpError(ErrorCode.INVALID_DATA, reason=Reason.FORMAT)
    return RetryableError("internal", retry_after_ms=5000)


def _fatal_by_state(state: str, diag: Any) -> FatalOpError | None:
    """Constraint (class 23), data (class 22), schema and privilege errors; ``None`` for any other."""
    if state in _CONSTRAINTS:
        return FatalOpError(_CONSTRAINTS[state], column=diag.column_name, constraint=diag.constraint_name, number=state)
    if state.startswith("23"):
        return FatalOpError(ErrorCode.CONSTRAINT_VIOLATION, constraint=diag.constraint_name, number=state)
    if state.startswith("22"):
        return FatalOpError(
            ErrorCode.INVALID_DATA, column=diag.column_name, reason=_DATA_REASONS.get(state, Reason.TYPE), number=state
        )
    if state in ("42703", "42P01", "3F000"):
        return FatalOpError(ErrorCode.SCHEMA_MISMATCH, number=state)
    if state == "42501":
        return FatalOpError(ErrorCode.UNAUTHORIZED, number=state)
    return None


def _retryable_by_state(exc: psycopg.Error, state: str) -> RetryableError | None:
    """Serialization failures, deadlocks and lock timeouts (retried in process), then the temporary
    server states (class 08, 53, 57, ...); ``None`` for any other."""
    if state in _IN_PROCESS:
        return RetryableError(_IN_PROCESS[state], in_process=True, number=state)
    if state in _RETRYABLE or state.startswith("08"):
        return RetryableError(_RETRYABLE.get(state, "connection"), number=state)
    if isinstance(exc, (pg_errors.OperationalError, pg_errors.InterfaceError)) and state.startswith(("XX", "58")):
        return RetryableError("server_error", number=state)
    return None


# ---- the ledger, the conflicts table and current-row reads (DESIGN.md section 3) -------------------


_LEDGER_ARRAYS = "%b::varchar[], %b::varchar[], %b::int8[], %b::int8[], %b::bpchar[], %b::text[], %b::timestamp[]"
_LEDGER_CLAIM = f"INSERT INTO {LEDGER_TABLE} ({', '.join(LEDGER_COLUMNS)}) SELECT * FROM unnest({_LEDGER_ARRAYS})"
_LEDGER_READ = (
    f"SELECT {', '.join(LEDGER_READ_COLUMNS)} FROM {LEDGER_TABLE} "
    "WHERE user_id = %s AND client_id = %s AND digest = ANY(%b::bpchar[])"
)
"""The ledger's statements with one array parameter per column: the same text whatever the number of
transactions, so psycopg parses it once (it never caches a statement of more than 50 parameters, and
re-parsing a 700-parameter ``VALUES`` took milliseconds per request) and the server can prepare it."""


def ledger_read(conn: psycopg.Connection[Any], user_id: str, client_id: str, digests: Sequence[str]) -> list[Any]:
    """One ``SELECT ... digest = ANY(array)`` on the identity index (its first column is the digest)."""
    params = (user_id, client_id, list(dict.fromkeys(digests)))
    return [tuple(row) for row in conn.execute(_LEDGER_READ.encode(), params).fetchall()]


def _insert_ledger_arrays(conn: psycopg.Connection[Any], s: Statements, entries: Sequence[Entry]) -> None:
    columns = zip(*(ledger_row(s, e) for e in entries), strict=True)
    conn.execute(_LEDGER_CLAIM.encode(), [list(column) for column in columns])


def _duplicate(exc: BaseException) -> bool:
    return isinstance(exc, pg_errors.UniqueViolation)


def _rollback_if_open(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        rollback(conn)


def ledger_claim(conn: psycopg.Connection[Any], entries: Sequence[Entry]) -> Claim:
    """``INSERT ... SELECT * FROM unnest(arrays)``; a unique violation (23505) aborts the transaction:
    rolled back, read again."""
    return run_ledger_claim(conn, STATEMENTS, entries, _duplicate, _rollback_if_open, _insert_ledger_arrays)


def ledger_prune(conn: psycopg.Connection[Any], before: datetime) -> int:
    """``DELETE ... WHERE seq IN (SELECT seq ... WHERE decided_at < %s ORDER BY seq LIMIT n)``."""
    return conn.execute(prune_in_sql(PH, PRUNE_ROWS).encode(), (before,)).rowcount
