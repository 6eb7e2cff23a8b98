"""The engine: applies the client transactions of a request in groups and reports per transaction.

For each request, in order: every operation is validated and converted against the introspected
column types and pre-authorized (:mod:`powersync_upload.prepare`); consecutive client transactions
form groups (:func:`powersync_upload.plan.groups`); each group is planned into ordered batches
(:mod:`powersync_upload.plan`), run in one database transaction (:mod:`powersync_upload.writes`) and
committed once (group commit). Only after that COMMIT is any of its transactions a success.

When a group of several transactions meets a fatal error (or a PUT batch's insert-only assumption
fails), it is rolled back and applied again in two halves, recursively, so that every result is what
one database transaction per client transaction gives (DESIGN.md section 3). A single transaction
that fails as batches is applied again one statement per operation in the planner's order, which
names the failing operation. A fatal transaction is rolled back alone and the next one is still
applied (``on_fatal_error: continue``; ``stop`` applies to shape A only). A :class:`RetryableError`
rolls back and stops the request: the first transaction of the group is ``retryable_error``, the
rest ``not_attempted``; groups committed earlier stand. Deadlock victims, lock timeouts and
serialization failures are retried here first, a few times with jittered backoff, while the deadline
allows.

The per-operation baseline (``fast_path=False``) applies the same plan one statement per operation,
one database transaction per client transaction, with ownership and parent checks as separate reads.

The engine knows nothing of HTTP: :func:`apply_upload` returns an :class:`Outcome`.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

from . import errors_table, plan, writes
from .config import UploadConfig
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
from .convert import convert
from .database import Database
from .errors import ErrorCode, FatalOpError, Reason, RetryableError
from .prepare import (
    Prepared,
    TableFacts,
    client_column,
    prepare,
    self_reference_column,
    step_of,
    tables_of,
)

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
    """

    results: list[TransactionResult]
    retry_after_ms: int | None = None
    committed: int = 0
    recorded: int = 0
    fatal: list[tuple[int, Transaction, FatalOpError, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Caller:
    """The authenticated user: ``user_id`` is the JWT ``sub``."""

    user_id: str


MAX_GROUP_STEPS = 1000
"""Operations per group of client transactions (a larger single transaction is a group alone)."""


def apply_upload(
    upload: Upload, caller: Caller, config: UploadConfig, db: Database, deadline: Deadline, *, fast_path: bool = True
) -> Outcome:
    """Apply every transaction of ``upload`` in order.

    Args:
        fast_path: plan batches and group transactions (default); ``False`` runs one statement per
            operation and one database transaction per client transaction (the benchmark's baseline).

    Returns:
        an :class:`Outcome`; ``retry_after_ms`` is set (answer 503) when a retryable error stopped a
        shape-B request, or a shape-A request before anything was committed.
    """
    run = _Run(caller, config, db, deadline, fast_path, upload)
    try:
        run.apply()
    except RetryableError as exc:
        run.stop_retryable(exc)
    return run.finish()


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
class _Tx:
    """One client transaction of the request, prepared: ``items`` are (operation index, prepared
    write); PATCHes that change nothing are left out."""

    position: int
    transaction: Transaction
    items: list[tuple[int, Prepared]]
    steps: list[plan.Step] = field(default_factory=list)


class _Stop(Exception):
    pass


@dataclass
class _Run:
    """One request's work: the caller, the configuration, the database, the deadline and the results."""

    caller: Caller
    config: UploadConfig
    db: Database
    deadline: Deadline
    fast_path: bool
    upload: Upload
    results: dict[int, TransactionResult] = field(default_factory=dict)
    fatal: dict[int, tuple[FatalOpError, int]] = field(default_factory=dict)
    committed: int = 0
    retry_after_ms: int | None = None

    # ---- the request ------------------------------------------------------------------------------

    def apply(self) -> None:
        """Prepare every transaction, then apply the groups in order (see the module docstring)."""
        prepared = self._prepare_all()
        try:
            if not self.fast_path:
                for tx in prepared:
                    self._apply_group([tx])
                return
            facts: dict[str, TableFacts] = {}
            for tx in prepared:
                tx.steps = [step_of(tx.position, index, item, facts) for index, item in tx.items]
            tables = self._tables(prepared)
            for bounds in plan.groups([tx.steps for tx in prepared], tables, MAX_GROUP_STEPS):
                self._apply_group([prepared[i] for i in bounds])
        except _Stop:
            return

    def finish(self) -> Outcome:
        """The outcome: results in request order, fatal results recorded in the errors table."""
        transactions = self.upload.transactions
        results: list[TransactionResult] = []
        outcome = Outcome(results=results, committed=self.committed, retry_after_ms=self.retry_after_ms)
        for index, transaction in enumerate(transactions):
            result = self.results.get(index, NotAttemptedResult())
            results.append(result)
            if index in self.fatal and isinstance(result, FatalResult):
                exc, op_index = self.fatal[index]
                outcome.fatal.append((index, transaction, exc, op_index))
                outcome.recorded += self._record(transaction, exc, op_index)
        return outcome

    def stop_retryable(self, exc: RetryableError, index: int | None = None) -> None:
        """A retryable error stops the request at transaction ``index`` (the first undecided one)."""
        if index is None:
            index = next((i for i in range(len(self.upload.transactions)) if i not in self.results), 0)
        logger.warning(
            "retryable failure", extra={"kind": exc.kind, "error_number": exc.number, "transaction_index": index}
        )
        for later in list(self.results):
            if later >= index:
                del self.results[later]
        self.results[index] = RetryableResult(message=exc.message, retry_after_ms=exc.retry_after_ms)
        if self.upload.shape == "B" or self.committed == 0:
            self.retry_after_ms = exc.retry_after_ms

    def _decide_fatal(self, position: int, exc: FatalOpError, op_index: int) -> None:
        transaction = self.upload.transactions[position]
        self.results[position] = _fatal_result(transaction, exc, op_index)
        self.fatal[position] = (exc, op_index)
        if self.config.on_fatal_error == "stop" and self.upload.shape == "A":
            raise _Stop

    def _record(self, transaction: Transaction, exc: FatalOpError, op_index: int) -> int:
        if not self.config.errors_table:
            return 0
        operation = transaction.operations[min(op_index, len(transaction.operations) - 1)]
        row = errors_table.row_values(
            self.caller.user_id,
            self.upload.client_id,
            transaction.tx_id,
            op_index,
            operation.op_id,
            operation.table,
            operation.id,
            exc,
        )
        return int(errors_table.record(self.db.connection(5.0), self.db, self.config.errors_table, row))

    # ---- preparation ------------------------------------------------------------------------------

    def _prepare_all(self) -> list[_Tx]:
        """Prepare every transaction; one that cannot be prepared is decided fatal here (no SQL ran)."""
        prepared: list[_Tx] = []
        conn: Any = None
        limit = self.config.limits.max_operations_per_transaction
        for position, transaction in enumerate(self.upload.transactions):
            operations = transaction.operations
            if len(operations) > limit:
                error = FatalOpError(
                    ErrorCode.INVALID_DATA, reason=Reason.TOO_LONG, limit="max_operations_per_transaction"
                )
                self._decide_fatal(position, error, limit)
                continue
            if conn is None and operations:
                conn = self.db.connection(min(10.0, self._budget()))
            cache: dict[tuple[Any, ...], Any] = {}
            items: list[tuple[int, Prepared]] = []
            op_index = 0
            try:
                for op_index, operation in enumerate(operations):
                    item = prepare(conn, operation, self.caller.user_id, self.config, self.db, cache)
                    if item is not None:
                        items.append((op_index, item))
            except FatalOpError as exc:
                exc.operation_index = op_index
                self._decide_fatal(position, exc, op_index)
                continue
            except RetryableError:
                raise
            except Exception as exc:
                raise self._classified(exc, operations[op_index], op_index) from exc
            prepared.append(_Tx(position, transaction, items))
        return prepared

    def _tables(self, prepared: list[_Tx]) -> plan.Tables:
        schemas = {item.target.schema.name: item.target for tx in prepared for _, item in tx.items}
        for tx in prepared:
            for _, item in tx.items:
                for ref in item.parents:
                    schemas.setdefault(ref.parent.schema.name, ref.parent)
        return tables_of(list(schemas.values()), self.config)

    # ---- one group ----------------------------------------------------------------------------------

    def _apply_group(self, group: list[_Tx]) -> None:
        """Apply a group of consecutive prepared transactions; decide each one's result."""
        group = [tx for tx in group if tx.position not in self.results]
        if not group:
            return
        if all(not tx.items for tx in group):
            for tx in group:
                self.results[tx.position] = SuccessResult()
                self.committed += 1
            return
        try:
            warnings = self._with_retries(group)
        except (FatalOpError, writes.SpeculationFailed) as exc:
            if len(group) > 1:
                middle = len(group) // 2
                self._apply_group(group[:middle])
                self._apply_group(group[middle:])
                return
            assert isinstance(exc, FatalOpError)
            self._decide_fatal(group[0].position, exc, exc.operation_index)
            return
        except RetryableError as exc:
            self.stop_retryable(exc, group[0].position)
            raise _Stop from exc
        for tx in group:
            found = warnings.get(tx.position, [])
            self.results[tx.position] = SuccessResult(
                warnings=[OperationWarning(operation_index=i, code="ROW_NOT_FOUND") for i in sorted(found)] or None
            )
            self.committed += 1

    def _with_retries(self, group: list[_Tx]) -> dict[int, list[int]]:
        """Apply a group; retry it in process after a deadlock or lock timeout, and a single transaction
        once after a UNIQUE_VIOLATION raised by a PUT: a concurrent insert of the same new id can trip
        a *second* unique index before the key conflict is seen (PostgreSQL's ON CONFLICT only
        arbitrates the key); on the second attempt the row exists and the PUT updates it. A real
        duplicate fails again."""
        attempt = 1
        while True:
            try:
                return self._attempt_group(group)
            except FatalOpError as exc:
                if len(group) > 1 or attempt > 1 or exc.code is not ErrorCode.UNIQUE_VIOLATION:
                    raise
                failed = group[0].transaction.operations[exc.operation_index]
                if failed.op != "PUT":
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

    def _attempt_group(self, group: list[_Tx]) -> dict[int, list[int]]:
        """One database transaction for the group: batches (or, for a single transaction that fails as
        batches, one statement per operation), then COMMIT. Returns ROW_NOT_FOUND operation indices per
        transaction position."""
        if self.fast_path:
            try:
                return self._attempt(group, per_operation=False)
            except FatalOpError:
                if len(group) > 1:
                    raise
                logger.debug("a batch hit a fatal error; applying the transaction one operation at a time")
        return self._attempt(group, per_operation=True)

    def _attempt(self, group: list[_Tx], *, per_operation: bool) -> dict[int, list[int]]:
        db = self.db
        conn: Any = None
        items = [(tx, index, item) for tx in group for index, item in tx.items]
        current: tuple[_Tx, int, Prepared] | None = None
        missing: dict[int, list[int]] = {}
        try:
            conn = self._begin()
            facts: dict[str, TableFacts] = {}
            steps = [
                step
                for tx in group
                for step in (tx.steps or [step_of(tx.position, index, item, facts) for index, item in tx.items])
            ]
            steps = self._with_current_parents(conn, steps, [item for _, _, item in items])
            the_plan = plan.plan(steps, self._tables(group))
            for batch in the_plan.batches:
                members = [items[i] for i in batch.steps]
                if per_operation or len(members) == 1:
                    for member in members:
                        current = member
                        tx, index, item = member
                        if writes.execute_one(conn, db.dialect, item):
                            missing.setdefault(tx.position, []).append(index)
                        self._check_deadline()
                else:
                    current = members[0]
                    found = writes.execute_batch(
                        conn, db.dialect, [item for _, _, item in members], speculative=batch.speculative
                    )
                    for position in found:
                        tx, index, _ = members[position]
                        missing.setdefault(tx.position, []).append(index)
                    self._check_deadline()
        except FatalOpError as exc:
            self._rollback(conn)
            db.mark_used()
            if current is not None:
                exc.operation_index = current[1]
            raise
        except (RetryableError, writes.SpeculationFailed):
            self._rollback(conn)
            raise
        except Exception as exc:
            self._rollback(conn)
            if current is None:
                raise self._unexpected(exc) from exc
            raise self._classified(exc, current[2].operation, current[1]) from exc
        self._commit(conn, group)
        db.mark_used()
        return missing

    def _with_current_parents(self, conn: Any, steps: list[plan.Step], items: list[Prepared]) -> list[plan.Step]:
        """For deletes in a self-referencing table (two or more in the group), read what each row
        references now, so the planner can delete children first (one locking read per table)."""
        wanted: dict[str, list[int]] = {}
        for i, step in enumerate(steps):
            if step.kind == "DELETE":
                wanted.setdefault(step.table, []).append(i)
        for positions in wanted.values():
            if len(positions) < 2:
                continue
            target = items[positions[0]].target
            column = self_reference_column(target.schema)
            if column is None:
                continue
            rows = self.db.dialect.select_many(
                conn, target.schema, target.key, [items[i].key_value for i in positions], column, "update"
            )
            current = {
                plan.identity(convert(key, target.key)): plan.identity(convert(value, target.key))
                for key, value in rows
                if value is not None
            }
            for i in positions:
                parent = current.get(steps[i].row)
                if parent is not None:
                    steps[i] = replace(steps[i], current_parent=parent)
        return steps

    def _check_deadline(self) -> None:
        if self.deadline.remaining() <= SAFETY_MARGIN_S:
            raise RetryableError("deadline", retry_after_ms=1000)

    def _budget(self) -> float:
        budget = self.deadline.remaining() - SAFETY_MARGIN_S
        if budget <= 0.2:
            raise RetryableError("deadline", retry_after_ms=1000)
        return budget

    def _begin(self) -> Any:
        """A connection with an open transaction; a kept connection the server closed while idle is
        replaced once (:meth:`Database.begin`)."""
        return self.db.begin(self._budget)

    def _commit(self, conn: Any, group: list[_Tx]) -> None:
        db = self.db
        try:
            db.dialect.commit(conn)
        except Exception as exc:
            classified = db.dialect.classify(exc)
            self._rollback(conn)
            if isinstance(classified, FatalOpError):  # a deferred constraint
                classified.operation_index = len(group[-1].transaction.operations) - 1
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

    def _unexpected(self, exc: Exception) -> FatalOpError | RetryableError:
        """A driver error before any operation ran (a self-reference read, say): never fatal."""
        classified = self.db.dialect.classify(exc)
        if isinstance(classified, RetryableError):
            if classified.kind in ("connection", "commit_unknown", "internal"):
                self.db.discard()
            return classified
        logger.error("unexpected error before applying a group", extra={"error_type": type(exc).__name__})
        self.db.discard()
        return RetryableError("internal", retry_after_ms=5000)

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
