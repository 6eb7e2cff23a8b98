"""The engine: applies client transactions, one database transaction each, and reports per transaction.

For each :class:`~powersync_upload.contract.Transaction`, in request order: validate and convert every
value against the introspected column types, authorize (``owner``, ``parents``, ``columns``), run
the operations in queue order inside one database transaction, COMMIT, and only then call it a
success. A :class:`FatalOpError` rolls that transaction back and the next one is still applied
(``on_fatal_error: continue``; ``stop`` applies to shape A only). A :class:`RetryableError` rolls back
and stops the request. Deadlock victims, lock timeouts and serialization failures are retried here
first, a few times with jittered backoff, while the deadline allows. Semantics: DESIGN.md section 3.

Fast path (default): consecutive operations of the same kind on the same table with distinct ids run
as one statement each for the ownership read, the parent checks and the write
(:mod:`powersync_upload.writes`). When anything in a fast-path transaction is fatal, the transaction
is rolled back and run again operation by operation, so the result names the failing operation
exactly as the per-operation path would.

The engine knows nothing of HTTP: :func:`apply_upload` returns an :class:`Outcome`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from . import conflicts, errors_table, ledger, writes
from .config import UploadConfig, schema_problems
from .contract import (
    FailedOperation,
    FatalResult,
    NotAttemptedResult,
    Operation,
    OperationWarning,
    RetryableResult,
    SuccessResult,
    Transaction,
    TransactionResult,
    Upload,
)
from .convert import InvalidValue, convert
from .database import Database
from .errors import ErrorCode, FatalOpError, Reason, RetryableError
from .prepare import Prepared, Target, client_column, prepare
from .schema import TableSchema

logger = logging.getLogger(__name__)

IN_PROCESS_ATTEMPTS = 3
"""Attempts for a transaction that lost a deadlock or a lock wait (the first one included)."""
SAFETY_MARGIN_S = 1.0
"""Time kept back from the deadline to roll back and answer."""


@dataclass(frozen=True)
class Deadline:
    """The moment (``time.monotonic()`` seconds) by which the request must have answered."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())


@dataclass
class Outcome:
    """What happened to an upload.

    Attributes:
        results: one per transaction, in request order.
        retry_after_ms: set when the request must be answered 503 (nothing to keep; send again).
        committed: number of transactions committed.
        recorded: number of fatal results stored in the errors table.
        fatal: the fatal errors, for the errors table, logs and metrics.
        replayed: transactions answered from the ledger instead of being applied again.
    """

    results: list[TransactionResult]
    retry_after_ms: int | None = None
    committed: int = 0
    recorded: int = 0
    replayed: int = 0
    fatal: list[tuple[int, Transaction, FatalOpError, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Caller:
    """The authenticated user: ``user_id`` is the JWT ``sub``."""

    user_id: str


def apply_upload(
    upload: Upload, caller: Caller, config: UploadConfig, db: Database, deadline: Deadline, *, fast_path: bool = True
) -> Outcome:
    """Apply every transaction of ``upload`` in order.

    Args:
        fast_path: batch consecutive operations (default); ``False`` runs one statement per operation,
            as the reference backends do (the benchmark's baseline).

    Returns:
        an :class:`Outcome`; ``retry_after_ms`` is set (answer 503) when a retryable error stopped a
        shape-B request, or a shape-A request before anything was committed.
    """
    outcome = Outcome(results=[])
    run = _Run(caller, config, db, deadline, fast_path)
    replays = _LedgerRun.start(upload, caller, config)  # ledger hook
    try:
        replays.load(run)
    except RetryableError as exc:
        return _stop_retryable(upload, outcome, 0, exc)
    run.ledger = replays
    run.client_id = upload.client_id
    for index, transaction in enumerate(upload.transactions):
        answered = replays.answer(transaction)  # ledger hook: a replay is not applied again
        if answered is not None:
            outcome.replayed += 1
            outcome.results.append(answered)
            continue
        try:
            warnings = run.with_retries(transaction)
        except _AlreadyDecided as race:  # ledger hook: a resend raced its first attempt
            answered = replays.answer_stored(transaction, race.stored)
            if answered is None:
                return _stop_retryable(upload, outcome, index, RetryableError("ledger_race", retry_after_ms=1000))
            outcome.replayed += 1
            outcome.results.append(answered)
            continue
        except FatalOpError as exc:
            op_index = exc.operation_index
            conflict_rows = [exc.conflict_row] if exc.conflict_row is not None else []  # conflicts hook
            exc.conflict_id = exc.conflict_row["id"] if exc.conflict_row is not None else None
            result = _fatal_result(transaction, exc, op_index)
            entry = replays.entry(transaction, result)  # ledger hook
            recorded = errors_table.Recorded(committed=False)
            if config.errors_table or entry is not None or conflict_rows:
                operation = transaction.operations[op_index]
                row = errors_table.row_values(
                    caller.user_id,
                    upload.client_id,
                    transaction.tx_id,
                    op_index,
                    operation.op_id,
                    operation.table,
                    operation.id,
                    exc,
                )
                recorded = errors_table.record(
                    db.connection(5.0),
                    db,
                    config.errors_table,
                    row,
                    ledger_entries=[entry] if entry is not None else (),
                    conflicts=conflict_rows,
                )
            if conflict_rows and not recorded.committed:  # conflicts hook: the result stands, without its id
                logger.warning("could not record a conflict", extra={"table": transaction.operations[op_index].table})
                exc.conflict_id = None
                result = _fatal_result(transaction, exc, op_index)
            if entry is not None and not recorded.claim.claimed:  # ledger hook: the first attempt decided it
                answered = replays.answer_stored(transaction, replays.stored(recorded.claim, entry.identity))
                if answered is None:
                    return _stop_retryable(upload, outcome, index, RetryableError("ledger_race", retry_after_ms=1000))
                outcome.replayed += 1
                outcome.results.append(answered)
                continue
            outcome.fatal.append((index, transaction, exc, op_index))
            outcome.recorded += recorded.errors_row
            outcome.results.append(result)
            if entry is not None and recorded.committed:
                replays.remember(entry)
            if config.on_fatal_error == "stop" and upload.shape == "A":
                outcome.results.extend(NotAttemptedResult() for _ in upload.transactions[index + 1 :])
                return outcome
            continue
        except RetryableError as exc:
            return _stop_retryable(upload, outcome, index, exc)
        replays.committed(transaction)  # ledger hook
        outcome.committed += 1
        outcome.results.append(SuccessResult(warnings=warnings or None))
    replays.prune_if_due(run)  # ledger hook
    return outcome


def unavailable(upload: Upload, exc: RetryableError) -> Outcome:
    """The outcome when no transaction could be attempted (no database): retryable, answer 503."""
    return _stop_retryable(upload, Outcome(results=[]), 0, exc)


def _stop_retryable(upload: Upload, outcome: Outcome, index: int, exc: RetryableError) -> Outcome:
    logger.warning(
        "retryable failure", extra={"kind": exc.kind, "error_number": exc.number, "transaction_index": index}
    )
    outcome.results.append(RetryableResult(message=exc.message, retry_after_ms=exc.retry_after_ms))
    outcome.results.extend(NotAttemptedResult() for _ in upload.transactions[index + 1 :])
    if upload.shape == "B" or outcome.committed == 0:
        outcome.retry_after_ms = exc.retry_after_ms
    return outcome


def _fatal_result(transaction: Transaction, exc: FatalOpError, op_index: int) -> FatalResult:
    op_id = transaction.operations[op_index].op_id if op_index < len(transaction.operations) else None
    return FatalResult(
        message=exc.message,
        failed_operation=FailedOperation(
            error_code=exc.code.value,
            message=exc.message,
            operation_index=op_index,
            op_id=op_id,
            details=exc.details(),
        ),
    )


@dataclass
class _Run:
    """One request's work: the caller, the configuration, the database and the deadline."""

    caller: Caller
    config: UploadConfig
    db: Database
    deadline: Deadline
    fast_path: bool
    ledger: _LedgerRun | None = None
    client_id: str | None = None

    def with_retries(self, transaction: Transaction) -> list[OperationWarning]:
        """Apply a transaction; retry it in process after a deadlock or lock timeout, and once after a
        UNIQUE_VIOLATION raised by a PUT: a concurrent insert of the same new id can trip a *second*
        unique index before the key conflict is seen (PostgreSQL's ON CONFLICT only arbitrates the key);
        on the second attempt the row exists and the PUT updates it. A real duplicate fails again."""
        attempt = 1
        while True:
            try:
                return self.transaction(transaction)
            except FatalOpError as exc:
                failed = transaction.operations[exc.operation_index]
                if exc.code is not ErrorCode.UNIQUE_VIOLATION or failed.op != "PUT" or attempt > 1:
                    raise
                attempt += 1
            except RetryableError as exc:
                backoff = random.uniform(0.5, 1.5) * 0.05 * 2**attempt  # noqa: S311 - jitter, not cryptography
                if (
                    not exc.in_process
                    or attempt >= IN_PROCESS_ATTEMPTS
                    or self.deadline.remaining() < backoff + 2 * SAFETY_MARGIN_S
                ):
                    raise
                logger.info("retrying transaction in process", extra={"kind": exc.kind, "attempt": attempt})
                time.sleep(backoff)
                attempt += 1

    def transaction(self, transaction: Transaction) -> list[OperationWarning]:
        """One client transaction in one database transaction; COMMIT before returning."""
        if not transaction.operations:
            return []
        limit = self.config.limits.max_operations_per_transaction
        if len(transaction.operations) > limit:
            error = FatalOpError(ErrorCode.INVALID_DATA, reason=Reason.TOO_LONG, limit="max_operations_per_transaction")
            error.operation_index = limit
            raise error
        if self.fast_path and len(transaction.operations) > 1 and not _needs_rows(self.config, transaction):
            try:
                return self._attempt(transaction, fast=True)
            except FatalOpError:
                logger.debug("fast path hit a fatal error; running the transaction operation by operation")
        return self._attempt(transaction, fast=False)

    def _budget(self) -> float:
        budget = self.deadline.remaining() - SAFETY_MARGIN_S
        if budget <= 0.2:
            raise RetryableError("deadline", retry_after_ms=1000)
        return budget

    def _begin(self) -> Any:
        """A connection with an open transaction. A connection kept from an earlier invocation that
        fails here with a connection error (before any work) is replaced once: that is the liveness
        check. The second try gets only the time that is left."""
        db = self.db
        budget = self._budget()
        conn = db.connection(min(10.0, budget))
        try:
            db.dialect.begin(conn, budget)
            return conn
        except Exception as exc:
            classified = db.dialect.classify(exc)
            if db.fresh or not (isinstance(classified, RetryableError) and classified.kind == "connection"):
                raise
            logger.info("kept connection is dead; reconnecting once")
            db.discard()
        budget = self._budget()
        conn = db.connection(min(10.0, budget))
        db.dialect.begin(conn, budget)
        return conn

    def _attempt(self, transaction: Transaction, *, fast: bool) -> list[OperationWarning]:
        db, operations = self.db, transaction.operations
        warnings: list[OperationWarning] = []
        op_index = 0
        conn: Any = None
        conflict_rows: list[dict[str, Any]] = []
        try:
            conn = self._begin()
            cache: dict[tuple[Any, ...], Any] = {}
            if fast:
                prepared: list[tuple[int, Prepared]] = []
                for op_index, operation in enumerate(operations):
                    item = prepare(conn, operation, self.caller.user_id, self.config, db, cache)
                    if item is not None:
                        prepared.append((op_index, item))
                missing = writes.execute(conn, db.dialect, prepared, self.deadline.remaining)
                warnings = [OperationWarning(operation_index=i, code="ROW_NOT_FOUND") for i in missing]
            else:
                for op_index, operation in enumerate(operations):
                    item = prepare(conn, operation, self.caller.user_id, self.config, db, cache)
                    if item is not None:  # conflicts hook: rules, detection, deltas, versions
                        write, warning = _conflict_check(self, conn, transaction, op_index, item, conflict_rows)
                        warnings.extend([warning] if warning is not None else [])
                        if not write:
                            continue
                    if item is not None and writes.execute_one(conn, db.dialect, item):
                        warnings.append(OperationWarning(operation_index=op_index, code="ROW_NOT_FOUND"))
                    if self.deadline.remaining() <= SAFETY_MARGIN_S:
                        raise RetryableError("deadline", retry_after_ms=1000)
            if conflict_rows:  # conflicts hook: skipped conflicts are recorded with the writes
                db.dialect.conflicts_insert(conn, conflict_rows)
        except FatalOpError as exc:
            self._rollback(conn)
            db.mark_used()
            exc.operation_index = op_index
            raise
        except RetryableError:
            self._rollback(conn)
            raise
        except Exception as exc:
            self._rollback(conn)
            raise self._classified(exc, operations[op_index], op_index) from exc
        if self.ledger is not None:  # ledger hook: the ledger row goes in the same database transaction
            self.ledger.claim(self, conn, transaction, SuccessResult(warnings=warnings or None))
        self._commit(conn, transaction)
        db.mark_used()
        return warnings

    def _commit(self, conn: Any, transaction: Transaction) -> None:
        db = self.db
        try:
            db.dialect.commit(conn)
        except Exception as exc:
            classified = db.dialect.classify(exc)
            self._rollback(conn)
            if isinstance(classified, FatalOpError):  # a deferred constraint
                classified.operation_index = len(transaction.operations) - 1
                raise classified from exc
            # The outcome of a failed COMMIT is unknown; never retry it here. Replays are harmless.
            db.discard()
            raise RetryableError("commit_unknown", number=getattr(classified, "number", None)) from exc

    def _rollback(self, conn: Any) -> None:
        if conn is None:
            return
        try:
            self.db.dialect.rollback(conn)
        except Exception:  # noqa: BLE001 - a dead connection rolls back by itself
            self.db.discard()

    def _classified(self, exc: Exception, operation: Operation, op_index: int) -> FatalOpError | RetryableError:
        db = self.db
        classified = db.dialect.classify(exc)
        if classified is None:
            # The stack without the exception's text, which may quote a submitted value.
            logger.error(
                "unexpected error while applying a transaction; answering retryable",
                extra={"error_type": type(exc).__name__, "stack": "".join(traceback.format_tb(exc.__traceback__))},
            )
            db.discard()
            return RetryableError("internal", retry_after_ms=5000)
        if isinstance(classified, RetryableError):
            if classified.kind in ("connection", "commit_unknown", "internal"):
                db.discard()
            return classified
        if classified.code is ErrorCode.UNCLASSIFIED_ERROR:
            logger.warning("unclassified database error", extra={"error_number": classified.number})
        table_config = self.config.tables.get(operation.table)
        classified.table = operation.table
        if classified.column and table_config is not None:
            classified.column = client_column(table_config, classified.column)
        classified.operation_index = op_index
        return classified


# ==== ledger hooks (issue 11; DESIGN.md section 3, "Replays are harmless ... exactly once") =========
# Kept apart from the engine proper: one read of the ledger per request before anything is applied,
# the ledger row of a committed transaction in the same database transaction as its writes
# (:meth:`_LedgerRun.claim`), the row of a fatal one with its errors-table row (``errors_table.record``),
# and a duplicate identity (a resend racing its first attempt) answered from the ledger, or 503.

PRUNE_INTERVAL_S = 3600.0
"""Ledger rows older than ``ledger_days`` are deleted at most this often per container (seconds)."""
_last_prune = [-math.inf]
_RESULT: TypeAdapter[TransactionResult] = TypeAdapter(TransactionResult)


class _AlreadyDecided(Exception):
    """A concurrent attempt of the same transaction decided it first; this attempt was rolled back.

    Attributes:
        stored: its ledger row as read back, or ``None`` when not visible yet (answer 503).
    """

    def __init__(self, stored: ledger.Entry | None) -> None:
        self.stored = stored
        super().__init__("already decided")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _LedgerRun:
    """One request's use of the ledger.

    Attributes:
        identities: ``id(transaction)`` -> its identity, for the transactions that have one.
        known: ledger rows read for this request, and those this request decided.
        pending: ledger rows claimed in the open database transaction, by ``id(transaction)``.
    """

    user_id: str
    client_id: str | None
    retention_days: int
    identities: dict[int, ledger.Identity]
    known: list[ledger.Entry] = field(default_factory=list)
    pending: dict[int, ledger.Entry] = field(default_factory=dict)

    @classmethod
    def start(cls, upload: Upload, caller: Caller, config: UploadConfig) -> _LedgerRun:
        """The identities of the request's transactions (none without ``client_id``)."""
        identities = {}
        for transaction in upload.transactions:
            found = ledger.identity(caller.user_id, upload.client_id, transaction)
            if found is not None:
                identities[id(transaction)] = found
        return cls(caller.user_id, upload.client_id, config.ledger_days, identities)

    def load(self, run: _Run) -> None:
        """Read the ledger rows of every identity of the request: one statement, in a transaction of
        its own (also the liveness check of a kept connection). A missing ledger table is logged and
        the request goes on without the ledger (replays then rely on idempotency, as without
        ``client_id``).

        Raises:
            RetryableError: the database cannot be read now.
        """
        if not self.identities or self.client_id is None:
            return
        db = run.db
        conn = run._begin()
        try:
            digests = [i.digest for i in self.identities.values()]
            rows = db.dialect.ledger_read(conn, self.user_id, self.client_id, digests)
        except Exception as exc:
            run._rollback(conn)
            classified = db.dialect.classify(exc)
            if isinstance(classified, RetryableError):
                raise classified from exc
            if classified is None:
                raise RetryableError("internal", retry_after_ms=5000) from exc
            logger.error("cannot read the ledger; replays are applied again", extra={"error_number": classified.number})
            self.identities.clear()
            return
        run._rollback(conn)
        db.mark_used()
        self.known = [e for e in (ledger.from_row(self.user_id, self.client_id, r) for r in rows) if e is not None]

    def answer(self, transaction: Transaction) -> TransactionResult | None:
        """The stored answer for a transaction decided before, or ``None`` to apply it."""
        ident = self.identities.get(id(transaction))
        if ident is None:
            return None
        return self._decided(ledger.find(self.known, ident))

    def _decided(self, stored: ledger.Entry | None) -> TransactionResult | None:
        decision = ledger.decide(stored, _now(), retention_days=self.retention_days)
        if decision.apply or decision.answer is None:
            return None
        return _RESULT.validate_python(decision.answer)

    def answer_stored(self, transaction: Transaction, stored: ledger.Entry | None) -> TransactionResult | None:
        """The answer after a race: from the row the first attempt stored, or ``None`` (answer 503)."""
        if stored is None:
            return None
        self.known.append(stored)
        return self._decided(stored) if self.identities.get(id(transaction)) == stored.identity else None

    def stored(self, claim: ledger.Claim, ident: ledger.Identity) -> ledger.Entry | None:
        """The row with ``ident`` among those a claim that lost its race read back."""
        rows = (ledger.from_row(ident.user_id, ident.client_id, r) for r in claim.stored)
        return ledger.find([e for e in rows if e is not None], ident)

    def entry(self, transaction: Transaction, result: TransactionResult) -> ledger.Entry | None:
        """The ledger row recording ``result`` for ``transaction`` (``None`` without an identity)."""
        ident = self.identities.get(id(transaction))
        if ident is None:
            return None
        return ledger.entry(ident, result.model_dump(mode="json", exclude_none=True), _now())

    def claim(self, run: _Run, conn: Any, transaction: Transaction, result: TransactionResult) -> None:
        """Insert the transaction's ledger row in the open database transaction, before COMMIT.

        Raises:
            _AlreadyDecided: another attempt decided it first (the transaction was rolled back).
            RetryableError: the insert failed (the transaction was rolled back).
        """
        entry = self.entry(transaction, result)
        if entry is None:
            return
        db = run.db
        try:
            claim = db.dialect.ledger_claim(conn, [entry])
        except Exception as exc:
            run._rollback(conn)
            classified = db.dialect.classify(exc)
            if isinstance(classified, RetryableError):
                raise classified from exc
            logger.error("cannot write the ledger", extra={"error_type": type(exc).__name__})
            raise RetryableError("ledger", retry_after_ms=5000) from exc
        if not claim.claimed:
            db.mark_used()
            raise _AlreadyDecided(self.stored(claim, entry.identity))
        self.pending[id(transaction)] = entry

    def committed(self, transaction: Transaction) -> None:
        """The transaction's COMMIT returned: its ledger row now answers a repeat in this request."""
        entry = self.pending.pop(id(transaction), None)
        if entry is not None:
            self.remember(entry)

    def remember(self, entry: ledger.Entry) -> None:
        """A row this request decided."""
        self.known.append(entry)

    def prune_if_due(self, run: _Run) -> None:
        """Delete ledger rows older than ``ledger_days``, at most once per :data:`PRUNE_INTERVAL_S`
        per container, in a short transaction of its own after the request's work. Never raises."""
        if not self.identities or time.monotonic() - _last_prune[0] < PRUNE_INTERVAL_S:
            return
        if run.deadline.remaining() < 3 * SAFETY_MARGIN_S:
            return
        _last_prune[0] = time.monotonic()
        db = run.db
        before = (_now() - timedelta(days=self.retention_days)).replace(tzinfo=None)
        conn = None
        try:
            conn = db.connection(2.0)
            db.dialect.begin(conn, 2.0)
            deleted = db.dialect.ledger_prune(conn, before)
            db.dialect.commit(conn)
            logger.info("ledger pruned", extra={"deleted": deleted})
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping: the next container tries again
            logger.warning("could not prune the ledger", extra={"error_type": type(exc).__name__})
            run._rollback(conn)


# ==== conflicts hooks (issue 11; DESIGN.md section 3, "Conflicts") ===================================
# The per-operation path only, for now: a table with conflicts, deltas or rules reads its current row
# under the write's lock before each write (``select_rows``), checks it with :mod:`conflicts`, and then
# writes (deltas and the version computed on that locked row), raises ``CONFLICT``, or skips the
# operation with a ``CONFLICT_SKIPPED`` warning. Transactions touching such a table take this path.

_RULES: dict[tuple[str, int], tuple[TableSchema, conflicts.TableRules | None]] = {}
"""Compiled rules per (client table, introspected schema object); ``None``: the schema check failed."""


def _needs_rows(config: UploadConfig, transaction: Transaction) -> bool:
    """Whether an operation of the transaction is on a table with conflicts, deltas or rules."""
    return any((t := config.tables.get(o.table)) is not None and t.reads_rows for o in transaction.operations)


def _table_rules(target: Target) -> conflicts.TableRules:
    """The table's compiled rules; the schema check of DESIGN section 4 runs here, at first use of an
    introspected table: a problem is logged (once per schema) and the table's operations are
    ``SCHEMA_MISMATCH``."""
    table = target.config
    if not table.reads_rows:
        return conflicts.NO_RULES
    cache_key = (target.client_table, id(target.schema))
    cached = _RULES.get(cache_key)
    if cached is None or cached[0] is not target.schema:
        problems = schema_problems(target.client_table, table, target.schema)
        if problems:
            logger.error(
                "configuration does not fit the table", extra={"table": target.client_table, "problems": problems}
            )
        compiled = None if problems else conflicts.compile_rules(table, target.schema)
        cached = _RULES[cache_key] = (target.schema, compiled)
    if cached[1] is None:
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=target.client_table)
    return cached[1]


def _server_old(target: Target, old: dict[str, Any] | None) -> dict[str, Any] | None:
    """``old`` by server column (``rename`` applied; keys the server does not know dropped)."""
    if old is None:
        return None
    out = {}
    for name, value in old.items():
        column = target.schema.column(target.config.server_column(name))
        if column is not None:
            out[column.name] = value
    return out


def _conflict_check(
    run: _Run, conn: Any, transaction: Transaction, op_index: int, item: Prepared, rows: list[dict[str, Any]]
) -> tuple[bool, OperationWarning | None]:
    """Check one prepared operation against its current row, and adjust what it writes.

    Returns:
        ``(write it?, warning)``: ``(True, None)`` to write it (``item.values`` then holds the delta
        results and the next version); ``(False, CONFLICT_SKIPPED warning)`` with its conflict row
        appended to ``rows``; ``(False, None)`` for a PATCH that sent only the version (no write).

    Raises:
        FatalOpError: ``CONFLICT`` (``on_conflict: reject``; the conflict row attached), ``INVALID_DATA``
            ``needs_previous_value``, or the delta result's conversion error.
    """
    target, operation = item.target, item.operation
    rules = _table_rules(target)
    if not rules.active:
        return True, None
    names = target.config
    old = _server_old(target, operation.old)
    seen = None
    if rules.version is not None:
        seen = (old or {}).get(rules.version.name, item.values.get(rules.version.name))
        item.values.pop(rules.version.name, None)
    values = {**item.values, **dict.fromkeys(item.nulls)}
    change = conflicts.Change(operation.op, values, old, seen)
    missing = conflicts.needs_old(change, rules)
    if missing is not None:
        raise FatalOpError(
            ErrorCode.INVALID_DATA,
            table=operation.table,
            column=client_column(names, missing),
            reason=Reason.NEEDS_PREVIOUS_VALUE,
        )
    if operation.op == "PATCH" and not item.values:
        return False, None  # only the version was sent: nothing to write
    wanted = {**rules.columns, **{n: target.schema.columns[n] for n in values}}
    if item.owner is not None:
        wanted[item.owner.name] = item.owner
    found = run.db.dialect.select_rows(
        conn, target.schema, target.key, [item.key_value], list(wanted.values()), "update"
    )
    current = found[0][1] if found else None
    if current is None or (
        item.owner is not None and not conflicts.same(current.get(item.owner.name), item.me, item.owner)
    ):
        return True, None  # an insert, ROW_NOT_FOUND or UNAUTHORIZED: the write path says which
    try:
        finding = conflicts.check(current, change, rules, target.schema.columns)
    except FatalOpError as exc:
        exc.table, exc.column = operation.table, client_column(names, exc.column or "")
        raise
    if finding is not None:
        row = _conflict_row(run, transaction, item, finding, current)
        details = {
            "table": operation.table,
            "column": client_column(names, finding.column),
            "reason": finding.reason.value,
        }
        if rules.on_conflict == "reject":
            error = FatalOpError(
                ErrorCode.CONFLICT, table=operation.table, column=details["column"], reason=finding.reason
            )
            error.conflict_row = row
            raise error
        if run.db.table(conn, conflicts.TABLE) is not None:
            rows.append(row)
            details["conflict_id"] = row["id"]
        else:
            logger.warning(
                "conflicts table not found; a skipped conflict is not recorded", extra={"table": operation.table}
            )
        return False, OperationWarning(operation_index=op_index, code="CONFLICT_SKIPPED", details=details)
    try:
        item.values.update(conflicts.delta_values(current, change, rules))
    except FatalOpError as exc:
        exc.table, exc.column = operation.table, client_column(names, exc.column or "")
        raise
    if rules.version is not None and conflicts.changed_columns(current, change, target.schema.columns):
        try:
            item.values[rules.version.name] = convert(
                convert(current[rules.version.name], rules.version) + 1, rules.version
            )
        except (InvalidValue, TypeError) as exc:
            raise FatalOpError(
                ErrorCode.INVALID_DATA,
                table=operation.table,
                column=client_column(names, rules.version.name),
                reason=Reason.OUT_OF_RANGE,
            ) from exc
    return True, None


def _conflict_row(
    run: _Run, transaction: Transaction, item: Prepared, finding: conflicts.Finding, current: dict[str, Any]
) -> dict[str, Any]:
    """The ``powersync_upload_conflicts`` row: names, the client's values of the involved columns as sent,
    and the server's (only columns the table's ``columns`` allows, all when unset)."""
    operation, names = item.operation, item.target.config
    data = operation.data or {}
    client: dict[str, Any] = {}
    server: dict[str, Any] = {}
    for column in finding.involved:
        name = client_column(names, column)
        if name in data:
            client[name] = data[name]
        elif operation.old and name in operation.old:
            client[name] = operation.old[name]
        if names.columns is None or name in names.columns or column == names.conflicts.version_column:
            server[name] = conflicts.json_safe(current.get(column))
    return {
        "id": str(uuid.uuid4()),
        "user_id": run.caller.user_id,
        "client_id": run.client_id,
        "transaction_id": transaction.tx_id,
        "op_id": operation.op_id,
        "table_name": operation.table,
        "row_id": operation.id,
        "reason": finding.reason.value,
        "client_values": json.dumps(client, default=str),
        "server_values": json.dumps(server, default=str),
        "created_at": datetime.now(UTC).replace(tzinfo=None),
        "resolved": 0,
    }
