"""SQL text shared by more than one dialect, built from already-quoted names and a placeholder.

Nothing here quotes: callers pass names through their dialect's ``quote`` first, so a name can never
come from a request (the engine only passes names of introspected columns). The ``run_*`` functions
at the end execute those statements through any DB-API cursor, for the dialects whose driver takes
the same shape of call (pymssql, PyMySQL, sqlite3).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..conflicts import TABLE as CONFLICTS_TABLE
from ..ledger import CLAIMED, Claim, Entry
from ..ledger import TABLE as LEDGER_TABLE
from ..schema import Column, ForeignKey, Kind, TableSchema, on_delete_rule
from . import NO_ADDS, Guard, Lock, Rows

T = TypeVar("T")

Quote = Callable[[str], str]


def quote_with(open_: str, close: str, *, percent: bool) -> Quote:
    """A quoting function: wraps a name in ``open_``/``close``, doubling ``close`` inside it.

    ``percent=True`` also doubles ``%`` for drivers that interpolate ``%s`` placeholders (psycopg,
    pymssql, PyMySQL), so a column named ``a%sb`` cannot turn into a placeholder.
    """

    def quote(name: str) -> str:
        inner = name.replace(close, close + close)
        if percent:
            inner = inner.replace("%", "%%")
        return f"{open_}{inner}{close}"

    return quote


def qualified(name: str, quote: Quote) -> str:
    """Quote ``schema.table`` part by part (a dot inside a quoted catalog name is not supported)."""
    return ".".join(quote(part) for part in name.split("."))


def select_sql(table: str, key: str, column: str, ph: str, suffix: str = "") -> str:
    """``SELECT column FROM table WHERE key = ?`` plus a locking ``suffix`` (``FOR UPDATE``)."""
    return f"SELECT {column} FROM {table} WHERE {key} = {ph}{(' ' + suffix) if suffix else ''}"


def update_sql(table: str, key: str, sets: Sequence[str], ph: str) -> str:
    """``UPDATE table SET c1 = ?, ... WHERE key = ?`` (``sets``: the assignments, :func:`set_clauses`);
    parameters: the values in order, then the key."""
    return f"UPDATE {table} SET {', '.join(sets)} WHERE {key} = {ph}"


def delete_sql(table: str, key: str, ph: str) -> str:
    """``DELETE FROM table WHERE key = ?``."""
    return f"DELETE FROM {table} WHERE {key} = {ph}"


def on_conflict_upsert_sql(
    table: str,
    key: str,
    columns: Sequence[str],
    nulls: Sequence[str],
    ph: str,
    guard: str | None,
    excluded: str = "excluded",
    source: str | None = None,
    do_nothing: bool = False,
) -> str:
    """PostgreSQL/SQLite ``INSERT ... ON CONFLICT (key) DO UPDATE``: only a key collision updates.

    Parameters: the key, then ``columns`` in order (one row of placeholders), unless ``source`` gives
    the rows another way (``SELECT * FROM unnest(...)``). ``nulls`` are set to NULL on update;
    ``guard`` (a quoted column) restricts the update to rows where it equals the inserted value, so a
    row that another user inserted meanwhile is left alone (0 rows written). ``do_nothing``: insert only,
    leaving every existing row alone (the written count then says how many were new).
    """
    names = [key, *columns]
    sets = [f"{c} = {excluded}.{c}" for c in columns] + [f"{c} = NULL" for c in nulls]
    if not sets:
        sets = [f"{key} = {excluded}.{key}"]
    where = f" WHERE {table}.{guard} = {excluded}.{guard}" if guard else ""
    rows = source or f"VALUES ({', '.join(ph for _ in names)})"
    if do_nothing:
        return f"INSERT INTO {table} ({', '.join(names)}) {rows} ON CONFLICT ({key}) DO NOTHING"
    return f"INSERT INTO {table} ({', '.join(names)}) {rows} ON CONFLICT ({key}) DO UPDATE SET {', '.join(sets)}{where}"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (parameter and row-count limits of a dialect)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def select_in_sql(table: str, key: str, column: str, count: int, ph: str, suffix: str = "") -> str:
    """``SELECT key, column FROM table WHERE key IN (?, ...)`` with ``count`` placeholders."""
    marks = ", ".join(ph for _ in range(count))
    return f"SELECT {key}, {column} FROM {table} WHERE {key} IN ({marks}){(' ' + suffix) if suffix else ''}"


def delete_in_sql(table: str, key: str, count: int, ph: str, guard: str | None = None) -> str:
    """``DELETE FROM table WHERE key IN (?, ...) [AND guard = ?]`` (``guard``: a quoted column)."""
    condition = f" AND {guard} = {ph}" if guard else ""
    return f"DELETE FROM {table} WHERE {key} IN ({', '.join(ph for _ in range(count))}){condition}"


def insert_values_sql(table: str, columns: Sequence[str], count: int, ph: str) -> str:
    """``INSERT INTO table (columns) VALUES (...), (...)`` with ``count`` rows."""
    row = "(" + ", ".join(ph for _ in columns) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(row for _ in range(count))}"


def split_by_existence(
    rows: list[tuple[Any, dict[str, Any]]], found: list[tuple[Any, Any]], as_text: Callable[[Any], Any]
) -> tuple[list[tuple[Any, dict[str, Any]]], list[tuple[Any, dict[str, Any]]]]:
    """``(rows whose key was found, rows whose key was not)``; keys compare as ``as_text`` renders them,
    case-folded (SQL Server and MySQL collations usually ignore case; drivers return UUIDs as objects
    or text)."""

    def fold(value: Any) -> Any:
        text = as_text(value)
        return str(text).casefold() if isinstance(text, (str, uuid.UUID)) else text

    existing = {fold(key) for key, _ in found}
    present = [(k, v) for k, v in rows if fold(k) in existing]
    absent = [(k, v) for k, v in rows if fold(k) not in existing]
    return present, absent


ToDriver = Callable[[Any, Any], Any]
"""A dialect's ``to_driver(value, column)``."""


Add = Callable[[str, str, Column], str]
"""A dialect's SQL for a delta write's new value: ``(stored value, increment, column) -> expression``,
where the stored value is a quoted (maybe qualified) column and the increment a placeholder or a
column of the rows' source."""


def plus(stored: str, increment: str, column: Column) -> str:
    """``stored + increment``: where the database adds the column's values exactly as the engine does
    (PostgreSQL: the increment is typed ``numeric`` or ``float8``)."""
    return f"{stored} + {increment}"


@dataclass(frozen=True)
class Statements:
    """What the ``run_*`` helpers need from a dialect: its quoting, placeholder and value adapter,
    the rows per statement, and its delta write (:data:`Add`)."""

    quote: Quote
    ph: str
    to_driver: ToDriver
    chunk: int = 1000
    add: Add = plus


def set_clauses(
    s: Statements, table: TableSchema, names: Sequence[str], refs: Sequence[str], adds: Collection[str], alias: str = ""
) -> list[str]:
    """``c = ref`` per column ``names[i]`` with its value ``refs[i]`` (a placeholder, or a column of the
    rows' source); for a column in ``adds`` (a delta's increment) ``c = c + ref`` as :attr:`Statements.add`
    writes it. ``alias`` (``t.``) qualifies the stored value where the statement joins another row
    source (the target stays unqualified, as PostgreSQL requires; MySQL prefixes it)."""
    out = []
    for name, ref in zip(names, refs, strict=True):
        column = s.quote(name)
        value = s.add(alias + column, ref, table.columns[name]) if name in adds else ref
        out.append(f"{column} = {value}")
    return out


def run_update(
    conn: Any,
    s: Statements,
    table: TableSchema,
    key: Column,
    key_value: Any,
    values: dict[str, Any],
    adds: Collection[str] = (),
) -> int:
    """``UPDATE ... SET c = ?, d = d + ? ... WHERE key = ?`` (``d`` in ``adds``, see
    :meth:`~powersync_upload.dialects.Dialect.update`); returns the driver's row count."""
    names = list(values)
    sets = set_clauses(s, table, names, [s.ph] * len(names), adds)
    sql = update_sql(qualified(table.name, s.quote), s.quote(key.name), sets, s.ph)
    cursor = conn.cursor()
    cursor.execute(sql, (*(s.to_driver(values[n], table.columns[n]) for n in names), s.to_driver(key_value, key)))
    return int(cursor.rowcount)


def run_delete(conn: Any, s: Statements, table: Any, key: Any, key_value: Any) -> int:
    """``DELETE ... WHERE key = ?``; returns the driver's row count."""
    cursor = conn.cursor()
    cursor.execute(delete_sql(qualified(table.name, s.quote), s.quote(key.name), s.ph), (s.to_driver(key_value, key),))
    return int(cursor.rowcount)


def run_select_in(
    conn: Any, s: Statements, table_sql: str, key: Any, key_values: Sequence[Any], column: Any, suffix: str = ""
) -> list[tuple[Any, Any]]:
    """``SELECT key, column FROM table_sql WHERE key IN (...) suffix`` per chunk of keys."""
    cursor = conn.cursor()
    found: list[tuple[Any, Any]] = []
    for part in chunks(key_values, s.chunk):
        sql = select_in_sql(table_sql, s.quote(key.name), s.quote(column.name), len(part), s.ph, suffix)
        cursor.execute(sql, tuple(s.to_driver(v, key) for v in part))
        found.extend((row[0], row[1]) for row in cursor.fetchall())
    return found


def run_delete_in(
    conn: Any, s: Statements, table: Any, key: Any, key_values: Sequence[Any], guard: tuple[Any, Any] | None = None
) -> int:
    """``DELETE ... WHERE key IN (...) [AND owner = ?]`` per chunk of keys; returns rows deleted."""
    cursor = conn.cursor()
    deleted = 0
    column = s.quote(guard[0].name) if guard else None
    tail = (s.to_driver(guard[1], guard[0]),) if guard else ()
    for part in chunks(key_values, s.chunk):
        sql = delete_in_sql(qualified(table.name, s.quote), s.quote(key.name), len(part), s.ph, column)
        cursor.execute(sql, (*(s.to_driver(v, key) for v in part), *tail))
        deleted += int(cursor.rowcount)
    return deleted


def upsert_statement(
    s: Statements,
    table: Any,
    key: Any,
    names: Sequence[str],
    nulls: Sequence[str],
    guard: Any | None,
    source: str | None = None,
    do_nothing: bool = False,
) -> str:
    """:func:`on_conflict_upsert_sql` with every name quoted by the dialect (``guard``: a column or None)."""
    return on_conflict_upsert_sql(
        qualified(table.name, s.quote),
        s.quote(key.name),
        [s.quote(n) for n in names],
        [s.quote(n) for n in nulls],
        s.ph,
        s.quote(guard.name) if guard is not None else None,
        source=source,
        do_nothing=do_nothing,
    )


def run_select_value(
    conn: Any, s: Statements, table_sql: str, key: Any, key_value: Any, column: Any, suffix: str = ""
) -> tuple[bool, Any]:
    """``(found, value)`` from ``SELECT column FROM table_sql WHERE key = ? suffix``."""
    cursor = conn.cursor()
    cursor.execute(
        select_sql(table_sql, s.quote(key.name), s.quote(column.name), s.ph, suffix), (s.to_driver(key_value, key),)
    )
    row = cursor.fetchone()
    return (row is not None, row[0] if row is not None else None)


# ---- the ledger and the conflicts table (DESIGN.md section 3) --------------------------------------

LEDGER_COLUMNS = ("user_id", "client_id", "first_op_id", "last_op_id", "digest", "result", "decided_at")
"""Columns written per ledger row (``seq`` is the database's)."""
LEDGER_READ_COLUMNS = ("first_op_id", "last_op_id", "digest", "result", "decided_at")
"""Columns ``ledger_read`` returns, in this order (:func:`powersync_upload.ledger.from_row`)."""
CONFLICT_COLUMNS = (
    "id",
    "user_id",
    "client_id",
    "transaction_id",
    "op_id",
    "table_name",
    "row_id",
    "reason",
    "client_values",
    "server_values",
    "created_at",
    "resolved",
)
"""Columns of ``powersync_upload_conflicts``, in the order :func:`run_conflicts_insert` binds them."""
STAMP = Column("decided_at", Kind.TIMESTAMP, fraction_digits=3)
"""The product tables' timestamps (``datetime2(3)``, ``timestamp(3)``...): naive UTC, milliseconds."""


def ledger_read_sql(count: int, ph: str) -> str:
    """The ledger rows of one user and client among ``count`` digests: a seek on the identity index,
    whose first column is the digest."""
    marks = ", ".join(ph for _ in range(count))
    return (
        f"SELECT {', '.join(LEDGER_READ_COLUMNS)} FROM {LEDGER_TABLE} "
        f"WHERE user_id = {ph} AND client_id = {ph} AND digest IN ({marks})"
    )


def run_ledger_read(conn: Any, s: Statements, user_id: str, client_id: str, digests: Sequence[str]) -> list[Any]:
    """:func:`ledger_read_sql` per chunk of digests (one statement for any real request)."""
    cursor = conn.cursor()
    found: list[Any] = []
    for part in chunks(list(dict.fromkeys(digests)), s.chunk):
        cursor.execute(ledger_read_sql(len(part), s.ph), (user_id, client_id, *part))
        found.extend(tuple(row) for row in cursor.fetchall())
    return found


def ledger_row(s: Statements, e: Entry) -> tuple[Any, ...]:
    """The values of :data:`LEDGER_COLUMNS` for one entry, as the driver takes them."""
    i = e.identity
    stamp = s.to_driver(e.decided_at, STAMP)
    return (i.user_id, i.client_id, i.first_op_id, i.last_op_id, i.digest, e.result_text(), stamp)


def _insert_ledger_values(conn: Any, s: Statements, entries: Sequence[Entry]) -> None:
    cursor = conn.cursor()
    for part in chunks(entries, s.chunk):
        params = tuple(value for e in part for value in ledger_row(s, e))
        cursor.execute(insert_values_sql(LEDGER_TABLE, LEDGER_COLUMNS, len(part), s.ph), params)


def run_ledger_claim(
    conn: Any,
    s: Statements,
    entries: Sequence[Entry],
    is_duplicate: Callable[[BaseException], bool],
    rollback: Callable[[Any], None],
    insert: Callable[[Any, Statements, Sequence[Entry]], None] = _insert_ledger_values,
) -> Claim:
    """One ``INSERT`` of every entry (``insert``: multi-row ``VALUES`` per chunk unless the dialect
    has its own); on a duplicate identity: roll back, read the stored rows, and return them (see the
    ``ledger_claim`` docstring of the Dialect protocol)."""
    try:
        insert(conn, s, entries)
    except Exception as exc:
        if not is_duplicate(exc):
            raise
        rollback(conn)
        first = entries[0].identity
        stored = run_ledger_read(conn, s, first.user_id, first.client_id, [e.identity.digest for e in entries])
        rollback(conn)  # end the read's implicit transaction where the driver opened one
        return Claim(claimed=False, stored=tuple(stored))
    return CLAIMED


def run_conflicts_insert(conn: Any, s: Statements, rows: Sequence[dict[str, Any]]) -> None:
    """One ``INSERT`` of every conflict row (values by :data:`CONFLICT_COLUMNS` name; ``created_at``
    a naive UTC datetime; ``resolved`` defaults to 0)."""
    cursor = conn.cursor()
    for part in chunks(rows, s.chunk):
        params: list[Any] = []
        for row in part:
            for name in CONFLICT_COLUMNS:
                value = row.get(name, 0 if name == "resolved" else None)
                params.append(s.to_driver(value, STAMP) if name == "created_at" else value)
        cursor.execute(insert_values_sql(CONFLICTS_TABLE, CONFLICT_COLUMNS, len(part), s.ph), tuple(params))


def select_rows_in_sql(table: str, key: str, columns: Sequence[str], count: int, ph: str, suffix: str = "") -> str:
    """``SELECT key, c1, c2 ... FROM table WHERE key IN (?, ...)`` with ``count`` placeholders."""
    marks = ", ".join(ph for _ in range(count))
    names = ", ".join([key, *columns])
    return f"SELECT {names} FROM {table} WHERE {key} IN ({marks}){(' ' + suffix) if suffix else ''}"


def run_select_rows(
    conn: Any,
    s: Statements,
    table_sql: str,
    key: Any,
    key_values: Sequence[Any],
    columns: Sequence[Any],
    suffix: str = "",
) -> list[tuple[Any, dict[str, Any]]]:
    """``(key, {column name: value})`` for the rows among ``key_values``, per chunk of keys."""
    cursor = conn.cursor()
    names = [c.name for c in columns]
    quoted = [s.quote(n) for n in names]
    found: list[tuple[Any, dict[str, Any]]] = []
    for part in chunks(key_values, s.chunk):
        sql = select_rows_in_sql(table_sql, s.quote(key.name), quoted, len(part), s.ph, suffix)
        cursor.execute(sql, tuple(s.to_driver(v, key) for v in part))
        found.extend((row[0], dict(zip(names, row[1:], strict=True))) for row in cursor.fetchall())
    return found


def prune_in_sql(ph: str, limit: int) -> str:
    """PostgreSQL/SQLite: delete the oldest ledger rows decided before the parameter, ``limit`` at most."""
    return (
        f"DELETE FROM {LEDGER_TABLE} WHERE seq IN "
        f"(SELECT seq FROM {LEDGER_TABLE} WHERE decided_at < {ph} ORDER BY seq LIMIT {limit})"
    )


def foreign_keys_from_rows(rows: Sequence[Sequence[Any]]) -> tuple[ForeignKey, ...]:
    """Foreign keys from catalog rows ``(constraint, column, parent table, parent column, delete rule)``
    ordered by constraint and column position."""
    found: dict[Any, list[Sequence[Any]]] = {}
    for row in rows:
        found.setdefault(row[0], []).append(row)
    return tuple(
        ForeignKey(
            columns=tuple(str(r[1]) for r in members),
            parent=str(members[0][2]),
            parent_columns=tuple(str(r[3]) for r in members if r[3] is not None),
            on_delete=on_delete_rule(str(members[0][4] or "")),
        )
        for members in found.values()
    )


def unique_from_rows(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """:class:`TableSchema`'s ``primary_key``, ``unique`` and ``loose_unique``, as keyword arguments,
    from catalog rows ``(index, column, primary, loose)`` ordered by index and position: ``primary``
    marks the primary key's rows, ``loose`` an index that holds for some rows only (partial, filtered,
    deferrable); a ``column`` of ``None`` is an expression member, left out, and makes its index loose.
    An index of expressions only is not listed."""
    found: dict[Any, list[str]] = {}
    primary: set[Any] = set()
    loose: set[Any] = set()
    for index, column, is_primary, is_loose in rows:
        members = found.setdefault(index, [])
        if column is None:
            loose.add(index)
        else:
            members.append(str(column))
        if is_primary:
            primary.add(index)
        if is_loose:
            loose.add(index)
    others = [(index, tuple(columns)) for index, columns in found.items() if columns and index not in primary]
    return {
        "primary_key": next((tuple(found[index]) for index in found if index in primary), ()),
        "unique": tuple(columns for _, columns in others),
        "loose_unique": tuple(columns for index, columns in others if index in loose),
    }


def table_with_constraints(
    cursor: Any, table: str, columns: dict[str, Column], foreign_sql: str, unique_sql: str, params: tuple[Any, ...]
) -> TableSchema:
    """A :class:`TableSchema` with the foreign keys and unique indexes read by ``foreign_sql`` (rows as
    :func:`foreign_keys_from_rows` takes them) and ``unique_sql`` (the primary key and the unique
    indexes, rows as :func:`unique_from_rows` takes them), both run through a DB-API ``cursor`` with
    ``params``: two round trips."""
    cursor.execute(foreign_sql, params)
    foreign = cursor.fetchall()
    cursor.execute(unique_sql, params)
    unique = cursor.fetchall()
    return TableSchema(
        name=table, columns=columns, foreign_keys=foreign_keys_from_rows(foreign), **unique_from_rows(unique)
    )


@dataclass(frozen=True)
class RowStatements:
    """The row statements PostgreSQL, MySQL/MariaDB and SQLite run alike, bound to one dialect.

    A dialect module binds the ones it shares as its own functions (``update = ROWS.update``); the
    :class:`~powersync_upload.dialects.Dialect` protocol documents each. The one difference between
    them is the capability ``locks``: the clause that ends a locking read, by :data:`Lock`
    (``FOR UPDATE``; ``FOR SHARE`` or ``LOCK IN SHARE MODE``), or ``None`` where the open transaction
    already holds the database's write lock (SQLite's ``BEGIN IMMEDIATE``).
    """

    s: Statements
    locks: Mapping[str, str] | None

    def _suffix(self, lock: Lock) -> str:
        return self.locks[lock] if self.locks is not None else ""

    def select_value(
        self, conn: Any, table: TableSchema, key: Column, key_value: Any, column: Column, lock: Lock
    ) -> tuple[bool, Any]:
        """``SELECT column ... WHERE key = ?`` plus the lock clause: ``(found, value)``."""
        table_sql = qualified(table.name, self.s.quote)
        return run_select_value(conn, self.s, table_sql, key, key_value, column, self._suffix(lock))

    def select_many(
        self, conn: Any, table: TableSchema, key: Column, key_values: list[Any], column: Column, lock: Lock
    ) -> list[tuple[Any, Any]]:
        """``SELECT key, column ... WHERE key IN (...)`` plus the lock clause, per chunk of keys."""
        table_sql = qualified(table.name, self.s.quote)
        return run_select_in(conn, self.s, table_sql, key, key_values, column, self._suffix(lock))

    def select_rows(
        self, conn: Any, table: TableSchema, key: Column, key_values: list[Any], columns: list[Column], lock: Lock
    ) -> Rows:
        """``SELECT key, c... WHERE key IN (...)`` plus the lock clause, per chunk of keys."""
        table_sql = qualified(table.name, self.s.quote)
        return run_select_rows(conn, self.s, table_sql, key, key_values, columns, self._suffix(lock))

    def update(
        self,
        conn: Any,
        table: TableSchema,
        key: Column,
        key_value: Any,
        values: dict[str, Any],
        adds: frozenset[str] = NO_ADDS,
    ) -> int:
        """``UPDATE ... WHERE key = ?`` (:func:`run_update`); returns rows matched."""
        return run_update(conn, self.s, table, key, key_value, values, adds)

    def delete(self, conn: Any, table: TableSchema, key: Column, key_value: Any) -> int:
        """``DELETE ... WHERE key = ?``; returns rows deleted."""
        return run_delete(conn, self.s, table, key, key_value)

    def delete_many(
        self, conn: Any, table: TableSchema, key: Column, key_values: list[Any], guard: Guard = None
    ) -> int:
        """``DELETE ... WHERE key IN (...) [AND owner = ?]`` per chunk of keys; returns rows deleted."""
        return run_delete_in(conn, self.s, table, key, key_values, guard)

    def ledger_read(self, conn: Any, user_id: str, client_id: str, digests: Sequence[str]) -> list[Any]:
        """One ``SELECT`` on the identity index (per chunk of digests)."""
        return run_ledger_read(conn, self.s, user_id, client_id, digests)

    def conflicts_insert(self, conn: Any, rows: Sequence[dict[str, Any]]) -> None:
        """``INSERT ... VALUES`` of every row."""
        run_conflicts_insert(conn, self.s, rows)


def json_guarded(columns: dict[str, Column], guarded: set[str]) -> dict[str, Column]:
    """``columns`` with each text column named in ``guarded`` (a CHECK holds it to JSON: MariaDB's
    ``json_valid``, SQL Server's ``ISJSON``) turned into a JSON column, so a value that is not JSON is
    ``INVALID_DATA`` before any SQL, as on the dialects with a JSON type, never the constraint's
    ``CHECK_VIOLATION`` (shared answers: ``tests/conformance/cases/901-...``)."""
    return {
        name: replace(column, kind=Kind.JSON) if name in guarded and column.kind is Kind.TEXT else column
        for name, column in columns.items()
    }
