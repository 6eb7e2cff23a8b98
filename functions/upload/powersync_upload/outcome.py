"""The request's results: each transaction's decided result, the recording of fatal ones (errors table,
ledger row, conflict row), and the :class:`Outcome` the handler answers from (DESIGN.md section 3).

:class:`Decisions` is the engine's record of what it decided, by transaction position.
:func:`record_decided` stores a fatal result as soon as it is decided, before any later transaction
is attempted (:func:`record_fatal` does the storing); :func:`assemble` puts the results in request
order and counts what logs and metrics report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from . import errors_table
from .config import UploadConfig
from .contract import (
    FailedOperation,
    FatalResult,
    NotAttemptedResult,
    RetryableResult,
    Transaction,
    TransactionResult,
    Upload,
)
from .errors import FatalOpError, RetryableError
from .ledger import Entry
from .replays import Replays
from .session import Session

logger = logging.getLogger(__name__)


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
        unrecorded_conflicts: conflicts that could not be stored in ``powersync_upload_conflicts``
            (their results stand, without ``conflict_id``).
        config_problems: configuration problems found against the schema in this request (a delta
            column that is not numeric, a rule on an unknown column...): logged, the table refused.
    """

    results: list[TransactionResult]
    retry_after_ms: int | None = None
    committed: int = 0
    recorded: int = 0
    replayed: int = 0
    unrecorded_conflicts: int = 0
    config_problems: int = 0
    fatal: list[tuple[int, Transaction, FatalOpError, int]] = field(default_factory=list)


def fatal_result(transaction: Transaction, exc: FatalOpError, op_index: int) -> FatalResult:
    """The ``fatal_error`` answered for ``transaction``, naming the operation at ``op_index``."""
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


def _log_retryable(exc: RetryableError, index: int) -> None:
    logger.warning(
        "retryable failure", extra={"kind": exc.kind, "error_number": exc.number, "transaction_index": index}
    )


def unavailable(upload: Upload, exc: RetryableError) -> Outcome:
    """The outcome when no transaction could be attempted (no database): retryable, answer 503."""
    _log_retryable(exc, 0)
    results: list[TransactionResult] = [RetryableResult(message=exc.message, retry_after_ms=exc.retry_after_ms)]
    results.extend(NotAttemptedResult() for _ in upload.transactions[1:])
    return Outcome(results=results, retry_after_ms=exc.retry_after_ms)


@dataclass
class Decisions:
    """The results decided so far, by transaction position.

    Attributes:
        fatal: the error and operation index of each fatal result (stored by :func:`record_decided`).
        committed: transactions committed so far.
        retry_after_ms: set when the request is to be answered 503.
        recorded: errors-table rows written for the fatal results.
    """

    upload: Upload
    results: dict[int, TransactionResult] = field(default_factory=dict)
    fatal: dict[int, tuple[FatalOpError, int]] = field(default_factory=dict)
    committed: int = 0
    retry_after_ms: int | None = None

    def success(self, position: int, result: TransactionResult) -> None:
        """A committed transaction."""
        self.results[position] = result
        self.committed += 1

    def fatal_at(self, position: int, exc: FatalOpError, op_index: int) -> None:
        """A fatal transaction, rolled back, failing at operation ``op_index``."""
        transaction = self.upload.transactions[position]
        exc.conflict_id = exc.conflict_row["id"] if exc.conflict_row is not None else None
        self.results[position] = fatal_result(transaction, exc, op_index)
        self.fatal[position] = (exc, op_index)

    recorded: int = 0

    def stopping(self, config: UploadConfig) -> bool:
        """Shape A with ``on_fatal_error: stop`` after a fatal result: nothing more is attempted."""
        return bool(self.fatal) and config.on_fatal_error == "stop" and self.upload.shape == "A"

    def stop_retryable(self, exc: RetryableError, index: int | None = None) -> None:
        """A retryable error stops the request at transaction ``index`` (default: the first undecided
        one): it is ``retryable_error``, everything after it ``not_attempted``."""
        if index is None:
            index = next((i for i in range(len(self.upload.transactions)) if i not in self.results), 0)
        _log_retryable(exc, index)
        for later in list(self.results):
            if later >= index:
                del self.results[later]
        self.results[index] = RetryableResult(message=exc.message, retry_after_ms=exc.retry_after_ms)
        if self.upload.shape == "B" or self.committed == 0:
            self.retry_after_ms = exc.retry_after_ms


def record_decided(decisions: Decisions, session: Session, replays: Replays, position: int) -> RetryableError | None:
    """Store the fatal result just decided at ``position`` (:func:`record_fatal`) before anything
    after it is attempted, and keep what to answer for it.

    A rejection and its rows stand or fall together, and they must stand before a later transaction
    commits: were the storing to fail after a later commit, the client would send the rejected
    transaction again, and it could then commit after the later one, out of queue order.

    Returns:
        the temporary failure that kept it from being stored (the caller stops the request there:
        :meth:`Decisions.stop_retryable`), else ``None``.
    """
    transaction = decisions.upload.transactions[position]
    exc, op_index = decisions.fatal[position]
    result = decisions.results[position]
    assert isinstance(result, FatalResult)
    answered, recorded = record_fatal(session, replays, transaction, exc, op_index, result)
    if isinstance(answered, RetryableError):
        del decisions.fatal[position]
        return answered
    decisions.results[position] = answered
    if isinstance(answered, FatalResult) and answered.failed_operation.error_code == exc.code.value:
        decisions.recorded += recorded
    else:  # decided first by a concurrent attempt: answered from its ledger row
        del decisions.fatal[position]
    return None


def assemble(decisions: Decisions, session: Session) -> Outcome:
    """The outcome: results in request order (``not_attempted`` where nothing was decided) and the
    request's counters (fatal results are stored already: :func:`record_decided`)."""
    upload = decisions.upload
    results: list[TransactionResult] = []
    outcome = Outcome(results=results, committed=decisions.committed, retry_after_ms=decisions.retry_after_ms)
    outcome.recorded = decisions.recorded
    for index, transaction in enumerate(upload.transactions):
        result = decisions.results.get(index, NotAttemptedResult())
        if index in decisions.fatal and isinstance(result, FatalResult):
            exc, op_index = decisions.fatal[index]
            outcome.fatal.append((index, transaction, exc, op_index))
        results.append(result)
    counters = session.counters
    outcome.replayed = counters.replayed
    outcome.unrecorded_conflicts = counters.unrecorded_conflicts
    outcome.config_problems = counters.config_problems
    return outcome


def _recorded(
    session: Session, row: dict[str, Any], entry: Entry | None, conflicts: list[dict[str, Any]]
) -> errors_table.Recorded:
    """:func:`errors_table.record` on the session's connection; no connection is a temporary failure."""
    try:
        conn = session.db.connection(5.0)
    except RetryableError as exc:
        return errors_table.Recorded(committed=False, retry=exc)
    return errors_table.record(
        conn,
        session.db,
        session.config.errors_table,
        row,
        ledger_entries=[entry] if entry is not None else (),
        conflicts=conflicts,
    )


def record_fatal(
    session: Session, replays: Replays, transaction: Transaction, exc: FatalOpError, op_index: int, result: FatalResult
) -> tuple[TransactionResult | RetryableError, int]:
    """Store a fatal result: its errors-table row, its ledger row and its conflict row together in one
    short transaction (:func:`errors_table.record`).

    Returns:
        the result to answer (from the ledger when a concurrent attempt decided the transaction first;
        without ``conflict_id`` when the conflict could not be recorded), or the temporary failure
        that kept it from being stored; and the number of errors-table rows written (0 or 1).
    """
    config = session.config
    entry = replays.entry(transaction, result)
    rows = [exc.conflict_row] if exc.conflict_row is not None else []
    if not (config.errors_table or entry is not None or rows):
        return result, 0
    operation = transaction.operations[min(op_index, len(transaction.operations) - 1)]
    row = errors_table.row_values(
        session.caller.user_id,
        session.client_id,
        transaction.tx_id,
        op_index,
        operation.op_id,
        operation.table,
        operation.id,
        exc,
    )
    recorded = _recorded(session, row, entry, rows)
    if recorded.retry is not None:  # the row and the fatal answer stand or fall together: send again
        return recorded.retry, 0
    if entry is not None:
        if not recorded.claim.claimed:  # the first attempt decided it meanwhile: answer from its row
            stored = replays.stored(recorded.claim, entry.identity)
            answered = replays.answer_stored(transaction, [stored] if stored is not None else [])
            if answered is None:
                return RetryableError("ledger_race", retry_after_ms=1000), 0
            session.counters.replayed += 1
            return answered, 0
        if recorded.committed:
            replays.remember(entry)
    if rows and not recorded.committed:  # the result stands, without its conflict_id
        logger.warning("could not record a conflict", extra={"table": operation.table})
        session.counters.unrecorded_conflicts += 1
        exc.conflict_id = None
        result = fatal_result(transaction, exc, op_index)
    return result, int(recorded.errors_row)
