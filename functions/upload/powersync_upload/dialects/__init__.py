"""Dialects: everything that differs between databases, one module per database.

Each module (``mssql``, ``postgresql``, ``mysql``, ``sqlite``) implements the :class:`Dialect`
protocol with plain module-level functions. Only dialect modules import database drivers, and a
dialect module is imported only when a URL names it, so the SQL Server function never loads psycopg.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlsplit

from ..errors import FatalOpError, RetryableError
from ..ledger import Claim, Entry
from ..schema import Column, TableSchema

Lock = Literal["update", "share"]
Guard = tuple[Column, Any] | None
"""A guarded write's condition: (owner column, the caller's value for it), or no condition."""
Rows = list[tuple[Any, dict[str, Any]]]
"""Rows by key: ``(key value, {server column: value})``, as batch writes take them and ``select_rows`` returns them."""
NO_ADDS: frozenset[str] = frozenset()
"""No incremented columns: ``update``/``update_many`` set every value as it is (a delta column's
increment is named in ``adds``; see :meth:`Dialect.update`)."""


@dataclass(frozen=True)
class PutRow:
    """A PUT of one row, as :meth:`Dialect.upsert` takes it.

    Attributes:
        table: the target table's introspected schema; ``key``: its key column; ``key_value``: the row's key.
        values: server column -> value.
        nulls: columns set to NULL on update only.
        guard: update only where that column equals that value (``None``: any row).
    """

    table: TableSchema
    key: Column
    key_value: Any
    values: dict[str, Any]
    nulls: list[str]
    guard: Guard = None


@dataclass(frozen=True)
class PutRows:
    """A PUT of several rows with distinct keys and the same columns, as :meth:`Dialect.upsert_many` takes it.

    Attributes:
        table: the target table's introspected schema; ``key``: its key column.
        rows: ``(key value, {server column: value})``, every row with the same columns.
        nulls: columns set to NULL on update only.
        guard: update only rows whose ``guard`` column equals the row's value for it (``None``: any row).
        only_new: insert only (the planner's speculative insert of several client transactions).
    """

    table: TableSchema
    key: Column
    rows: Rows
    nulls: list[str]
    guard: Column | None = None
    only_new: bool = False


PRUNE_ROWS = 10_000
"""Most ledger rows one ``ledger_prune`` statement deletes (keeps the statement short)."""

SCHEMES = {
    "mssql": "mssql",
    "sqlserver": "mssql",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}


class Dialect(Protocol):
    """What the engine needs from a database. All SQL text is written inside the dialect.

    Every function that takes ``conn`` runs inside the transaction the engine opened with ``begin``;
    values passed in are already converted by :func:`powersync_upload.convert.convert`; every value
    becomes a bound parameter, and names come only from the introspected :class:`TableSchema`.
    Driver exceptions propagate; the engine hands them to ``classify``.
    """

    name: str
    guarded_upsert: bool
    ordered_batches: bool
    """True when ``update_many`` writes its rows one at a time in the given order (SQLite's
    ``executemany``), so a batch meets unique indexes exactly as queue order would; elsewhere a batch
    statement visits rows in an order of its own, and the engine checks for unique-value swaps first."""
    """True when ``upsert_many`` honours ``guard`` atomically (the written count then tells whether a
    row belonged to someone else), so a PUT run needs no ownership read first."""

    def connect(self, url: str, timeout_s: float, statement_s: float | None = None) -> Any:
        """Open a DB-API connection (autocommit off) with a login timeout of ``timeout_s`` seconds.

        ``statement_s``: the longest any statement may run on this connection, for a driver that
        fixes that once per connection (SQL Server: the request deadline, ``DEADLINE_S``), never
        the time left in the request that happens to open it; ``None``: ``timeout_s``. The other
        dialects cap statements per transaction in ``begin`` and ignore it."""

    def begin(self, conn: Any, timeout_s: float) -> None:
        """Start a transaction whose statements and lock waits give up after ``timeout_s`` seconds.
        It is the request's first statement, so it doubles as the liveness check of a kept connection."""

    def commit(self, conn: Any) -> None:
        """COMMIT the open transaction."""

    def rollback(self, conn: Any) -> None:
        """ROLLBACK the open transaction."""

    def introspect(self, conn: Any, table: str) -> TableSchema | None:
        """Read one table (``name`` or ``schema.name``) from the catalog; ``None`` when it does not exist."""

    def select_value(
        self, conn: Any, table: TableSchema, key: Column, key_value: Any, column: Column, lock: Lock
    ) -> tuple[bool, Any]:
        """``(found, value of column)`` for the row whose key is ``key_value``, locking it (``update``
        for a row about to be written, ``share`` for a referenced parent) until the transaction ends."""

    def upsert(self, conn: Any, put: PutRow) -> int:
        """PUT (:class:`PutRow`): insert the row, or update it in place (never delete + insert), safe
        against a concurrent insert of the same key.

        Returns:
            rows written (0 when ``put.guard`` stopped the update).
        """

    def update(
        self,
        conn: Any,
        table: TableSchema,
        key: Column,
        key_value: Any,
        values: dict[str, Any],
        adds: frozenset[str] = NO_ADDS,
    ) -> int:
        """PATCH: set exactly ``values`` on the row; returns the number of rows matched (0 or 1).

        ``adds``: the columns of ``values`` whose value is an increment, not a value (a delta column's
        ``new - old``): the statement adds it to the stored value, ``SET c = c + ?`` (NULL stays NULL),
        typed wide enough for any difference of two values of the column, so a total never goes back
        even where a lock did not hold. A sum out of the column's range fails in the database, which
        ``classify`` reports as ``INVALID_DATA`` ``out_of_range`` (SQLite has no such error: its
        integer sum past 64 bits becomes a REAL; its write lock always holds, and the engine checks
        the sum first). The statement text depends on the columns and on ``adds``, never on values."""

    def delete(self, conn: Any, table: TableSchema, key: Column, key_value: Any) -> int:
        """DELETE by key; returns the number of rows deleted."""

    def select_many(
        self, conn: Any, table: TableSchema, key: Column, key_values: list[Any], column: Column, lock: Lock
    ) -> list[tuple[Any, Any]]:
        """``(key, value of column)`` for the rows among ``key_values``, locked as :meth:`select_value`
        does; one statement (or one per chunk of a dialect's parameter limit)."""

    def upsert_many(self, conn: Any, put: PutRows) -> int:
        """PUT of several rows with distinct keys and the same columns (:class:`PutRows`); when
        ``put.only_new`` and some row exists, fewer rows than sent are written (maybe none) and the
        caller rolls the transaction back.

        Returns:
            rows written (fewer than ``len(put.rows)`` when ``put.guard`` stopped an update).
        """

    def update_many(
        self,
        conn: Any,
        table: TableSchema,
        key: Column,
        rows: Rows,
        guard: Guard = None,
        adds: frozenset[str] = NO_ADDS,
    ) -> int:
        """PATCH of several rows with distinct keys and the same columns, one statement per chunk;
        ``guard``: only rows whose column equals the value (the caller's own); ``adds``: columns whose
        values are increments, added to the stored values as :meth:`update` adds them (the same for
        every row). Returns rows matched."""

    def delete_many(
        self, conn: Any, table: TableSchema, key: Column, key_values: list[Any], guard: Guard = None
    ) -> int:
        """DELETE several rows by key, only where ``guard`` matches when given; returns rows deleted."""

    def classify(self, exc: BaseException) -> FatalOpError | RetryableError | None:
        """Map a driver exception to the taxonomy (server names in it); ``None`` if not a driver error."""

    def select_rows(
        self, conn: Any, table: TableSchema, key: Column, key_values: list[Any], columns: list[Column], lock: Lock
    ) -> Rows:
        """``(key, {column name: value})`` of the rows among ``key_values`` (values as the driver returns
        them), locked as :meth:`select_value` locks (``update``: the lock the write takes, so a conflict
        check and its write see the same row). One statement per chunk of the dialect's parameter limit;
        one round trip for any real batch."""

    def ledger_read(self, conn: Any, user_id: str, client_id: str, digests: Sequence[str]) -> list[tuple[Any, ...]]:
        """The ledger rows ``(first_op_id, last_op_id, digest, result JSON text, decided_at)`` of one user
        and client among ``digests``: one statement for a whole request (one per chunk of the parameter
        limit), a seek on the identity index, no lock (rows are inserted once, never updated). Runs in the
        transaction the engine opened."""

    def ledger_claim(self, conn: Any, entries: Sequence[Entry]) -> Claim:
        """Insert the ledger rows of transactions decided in the open transaction: one statement (one
        per 1000 rows). The identity index makes a concurrent attempt of the same transaction wait for
        this one (or this one for it) until COMMIT or ROLLBACK; a lock timeout there is raised as usual.

        Returns:
            :data:`~powersync_upload.ledger.CLAIMED`; or, when an identity is already in the ledger (a
            resend raced its first attempt, which committed first), ``Claim(claimed=False, stored=...)``:
            the open transaction has then been rolled back here (nothing of it stays) and the stored
            rows were read again in a new one (one more round trip). The duplicate never reaches
            ``classify`` as a ``UNIQUE_VIOLATION``.
        """

    def ledger_prune(self, conn: Any, before: datetime) -> int:
        """Delete ledger rows decided before ``before`` (naive UTC), at most :data:`PRUNE_ROWS` of them,
        oldest first: one statement in the open transaction, locking the rows it deletes. Returns rows
        deleted."""

    def conflicts_insert(self, conn: Any, rows: Sequence[dict[str, Any]]) -> None:
        """Insert conflict rows into ``powersync_upload_conflicts`` (values by column name, see
        :data:`~powersync_upload.dialects._sql.CONFLICT_COLUMNS`): one statement in the open transaction."""


def dialect_name(url: str) -> str:
    """The dialect a database URL names (``mssql://...`` -> ``mssql``).

    Raises:
        ValueError: the scheme is not one of :data:`SCHEMES`.
    """
    scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported database URL scheme '{scheme}'; use one of {sorted(set(SCHEMES))}")
    return SCHEMES[scheme]


def load(name: str) -> Dialect:
    """Import the dialect module ``name`` (``mssql``, ``postgresql``, ``mysql`` or ``sqlite``)."""
    return cast(Dialect, importlib.import_module(f"{__name__}.{name}"))
