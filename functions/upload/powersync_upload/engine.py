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

import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from . import errors_table, writes
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
from .database import Database
from .errors import ErrorCode, FatalOpError, Reason, RetryableError
from .prepare import Prepared, client_column, prepare

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
    for index, transaction in enumerate(upload.transactions):
        try:
            warnings = run.with_retries(transaction)
        except FatalOpError as exc:
            op_index = exc.operation_index
            outcome.fatal.append((index, transaction, exc, op_index))
            outcome.results.append(_fatal_result(transaction, exc, op_index))
            if config.errors_table:
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
                outcome.recorded += errors_table.record(db.connection(5.0), db, config.errors_table, row)
            if config.on_fatal_error == "stop" and upload.shape == "A":
                outcome.results.extend(NotAttemptedResult() for _ in upload.transactions[index + 1 :])
                return outcome
            continue
        except RetryableError as exc:
            return _stop_retryable(upload, outcome, index, exc)
        outcome.committed += 1
        outcome.results.append(SuccessResult(warnings=warnings or None))
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
        if self.fast_path and len(transaction.operations) > 1:
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
        """A connection with an open transaction; a kept connection the server closed while idle is
        replaced once (:meth:`Database.begin`)."""
        return self.db.begin(self._budget)

    def _attempt(self, transaction: Transaction, *, fast: bool) -> list[OperationWarning]:
        db, operations = self.db, transaction.operations
        warnings: list[OperationWarning] = []
        op_index = 0
        conn: Any = None
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
                    if item is not None and writes.execute_one(conn, db.dialect, item):
                        warnings.append(OperationWarning(operation_index=op_index, code="ROW_NOT_FOUND"))
                    if self.deadline.remaining() <= SAFETY_MARGIN_S:
                        raise RetryableError("deadline", retry_after_ms=1000)
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
