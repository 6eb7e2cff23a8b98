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

import json
import logging
import math
import random
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from . import conflicts, errors_table, ledger, plan, writes
from .config import TableConfig, UploadConfig, schema_problems
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
from .prepare import (
    Prepared,
    TableFacts,
    Target,
    client_column,
    prepare,
    self_reference_column,
    step_of,
    tables_of,
)
from .schema import Column, TableSchema

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
    replays: _LedgerRun | None = None
    """The request's use of the ledger (ledger hook)."""
    replayed: int = 0
    unrecorded_conflicts: int = 0
    config_problems: int = 0
    opened: Any = None
    """A connection whose transaction the ledger read opened and nothing wrote in yet: the first
    group's ``_begin`` takes it (ledger hook: saves a ROLLBACK and a BEGIN per request)."""
    skipped: dict[int, list[OperationWarning]] = field(default_factory=dict)
    """``CONFLICT_SKIPPED`` warnings of the last successful attempt, by transaction position (conflicts hook)."""
    known: writes.Known = field(default_factory=dict)
    """What the current attempt has written (for the unique-swap check of :func:`writes.row_by_row`)."""

    # ---- the request ------------------------------------------------------------------------------

    def apply(self) -> None:
        """Prepare every transaction, then apply the groups in order (see the module docstring)."""
        self.replays = _LedgerRun.start(self.upload, self.caller, self.config)  # ledger hook: one read,
        self.replays.load(self)  # and a replay is answered from the ledger instead of being applied
        for position, transaction in enumerate(self.upload.transactions):
            answered = self.replays.answer(transaction)
            if answered is not None:
                self.results[position] = answered
                self.replayed += 1
        try:
            if not self.fast_path:
                for tx in self._prepared():
                    if tx is not None:
                        self._apply_group([tx])
                    elif self._stopping():
                        return
                return
            self._apply_streamed()
        except _Stop:
            return

    def _apply_streamed(self) -> None:
        """Prepare transaction by transaction and apply each group as soon as the next transaction
        starts a new one, so only one group's prepared operations are held at a time (a body at the
        cap holds tens of thousands)."""
        facts: dict[str, TableFacts] = {}
        targets: dict[str, Target] = {}
        grouping = plan.Grouping(plan.Tables(), MAX_GROUP_STEPS)
        group: list[_Tx] = []
        for tx in self._prepared():
            if tx is None:  # decided fatal while preparing
                if self._stopping():
                    break
                continue
            tx.steps = [step_of(tx.position, index, item, facts) for index, item in tx.items]
            if _learn_targets(tx, targets):
                grouping.tables = tables_of(list(targets.values()), self.config)
            if grouping.starts_group(tx.steps) and group:
                self._apply_group(group)
                group = []
            group.append(tx)
        if group:
            self._apply_group(group)
        if self._stopping():
            raise _Stop

    def _stopping(self) -> bool:
        """Shape A with ``on_fatal_error: stop`` after a fatal result: nothing more is attempted."""
        return bool(self.fatal) and self.config.on_fatal_error == "stop" and self.upload.shape == "A"

    def finish(self) -> Outcome:
        """The outcome: results in request order, fatal results recorded in the errors table."""
        if self.opened is not None:  # ledger hook: no group took the ledger read's transaction
            conn, self.opened = self.opened, None
            self._rollback(conn)
        transactions = self.upload.transactions
        results: list[TransactionResult] = []
        outcome = Outcome(results=results, committed=self.committed, retry_after_ms=self.retry_after_ms)
        for index, transaction in enumerate(transactions):
            result = self.results.get(index, NotAttemptedResult())
            if index in self.fatal and isinstance(result, FatalResult):
                exc, op_index = self.fatal[index]
                result, recorded = self._record(transaction, exc, op_index, result)
                if isinstance(result, FatalResult) and result.failed_operation.error_code == exc.code.value:
                    outcome.fatal.append((index, transaction, exc, op_index))
                    outcome.recorded += recorded
                elif isinstance(result, RetryableResult) and self.upload.shape == "B":
                    outcome.retry_after_ms = result.retry_after_ms
            results.append(result)
        outcome.replayed = self.replayed
        outcome.unrecorded_conflicts = self.unrecorded_conflicts
        outcome.config_problems = self.config_problems
        if self.replays is not None:
            self.replays.prune_if_due(self)  # ledger hook
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
        """A fatal result; under shape A ``stop`` nothing after it is attempted (raises ``_Stop``)."""
        self._note_fatal(position, exc, op_index)
        if self._stopping():
            raise _Stop

    def _note_fatal(self, position: int, exc: FatalOpError, op_index: int) -> None:
        transaction = self.upload.transactions[position]
        exc.conflict_id = exc.conflict_row["id"] if exc.conflict_row is not None else None  # conflicts hook
        self.results[position] = _fatal_result(transaction, exc, op_index)
        self.fatal[position] = (exc, op_index)

    def _record(
        self, transaction: Transaction, exc: FatalOpError, op_index: int, result: FatalResult
    ) -> tuple[TransactionResult, int]:
        """Store a fatal result: its errors-table row, its ledger row and its conflict row together in
        one short transaction. Returns the result to answer (from the ledger when a concurrent attempt
        decided the transaction first; without ``conflict_id`` when the conflict could not be
        recorded) and the number of errors-table rows written."""
        replays = self.replays
        entry = replays.entry(transaction, result) if replays is not None else None  # ledger hook
        rows = [exc.conflict_row] if exc.conflict_row is not None else []  # conflicts hook
        if not (self.config.errors_table or entry is not None or rows):
            return result, 0
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
        try:
            recorded = errors_table.record(
                self.db.connection(5.0),
                self.db,
                self.config.errors_table,
                row,
                ledger_entries=[entry] if entry is not None else (),
                conflicts=rows,
            )
        except RetryableError as unreachable:  # no connection for the recording transaction
            recorded = errors_table.Recorded(committed=False, retry=unreachable)
        if recorded.retry is not None:  # the row and the fatal answer stand or fall together: send again
            return RetryableResult(message=recorded.retry.message, retry_after_ms=recorded.retry.retry_after_ms), 0
        if entry is not None and replays is not None:
            if not recorded.claim.claimed:  # ledger hook: the first attempt decided it meanwhile
                stored = replays.stored(recorded.claim, entry.identity)
                answered = replays.answer_stored(transaction, [stored] if stored is not None else [])
                if answered is None:
                    error = RetryableError("ledger_race", retry_after_ms=1000)
                    return RetryableResult(message=error.message, retry_after_ms=error.retry_after_ms), 0
                self.replayed += 1
                return answered, 0
            if recorded.committed:
                replays.remember(entry)
        if rows and not recorded.committed:  # conflicts hook: the result stands, without its conflict_id
            logger.warning("could not record a conflict", extra={"table": operation.table})
            self.unrecorded_conflicts += 1
            exc.conflict_id = None
            result = _fatal_result(transaction, exc, op_index)
        return result, int(recorded.errors_row)

    # ---- preparation ------------------------------------------------------------------------------

    def _prepared(self) -> Iterator[_Tx | None]:
        """Prepare the transactions one by one, in order; one that cannot be prepared is decided fatal
        here (no SQL ran) and yields ``None``. Transactions answered from the ledger are skipped."""
        conn: Any = None
        limit = self.config.limits.max_operations_per_transaction
        for position, transaction in enumerate(self.upload.transactions):
            if position in self.results:  # answered from the ledger
                continue
            operations = transaction.operations
            if len(operations) > limit:
                error = FatalOpError(
                    ErrorCode.INVALID_DATA, reason=Reason.TOO_LONG, limit="max_operations_per_transaction"
                )
                self._note_fatal(position, error, limit)
                yield None
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
                self._note_fatal(position, exc, op_index)
                yield None
                continue
            except RetryableError:
                raise
            except Exception as exc:
                raise self._classified(exc, operations[op_index], op_index) from exc
            yield _Tx(position, transaction, items)

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
        except _AlreadyDecided as race:  # ledger hook: a resend raced its first attempt
            self._answer_race(group, race)
            return
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
            self.results[tx.position] = _success(warnings.get(tx.position, []), self.skipped.get(tx.position, []))
            self.committed += 1
            if self.replays is not None:
                self.replays.committed(tx.transaction)  # ledger hook

    def _answer_race(self, group: list[_Tx], race: _AlreadyDecided) -> None:
        """Ledger hook: answer the group's transactions a concurrent attempt decided first; apply the
        rest again; answer 503 when none of them is visible in the ledger yet."""
        assert self.replays is not None
        answered = False
        for tx in group:
            result = self.replays.answer_stored(tx.transaction, race.stored)
            if result is not None:
                self.results[tx.position] = result
                self.replayed += 1
                answered = True
        if not answered:
            self.stop_retryable(RetryableError("ledger_race", retry_after_ms=1000), group[0].position)
            raise _Stop
        self._apply_group([tx for tx in group if tx.position not in self.results])

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
        skipped: dict[int, list[OperationWarning]] = {}
        conflict_rows: list[dict[str, Any]] = []
        self.known = {}
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
                        self._execute_one(conn, member, missing, skipped, conflict_rows)
                        self._check_deadline()
                else:
                    current = members[0]
                    self._execute_batch(conn, members, batch.speculative, missing, skipped, conflict_rows)
                    self._check_deadline()
            if conflict_rows:  # conflicts hook: skipped conflicts are recorded with the writes
                current = None
                db.dialect.conflicts_insert(conn, conflict_rows)
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
        if self.replays is not None:  # ledger hook: the ledger rows go in the same database transaction
            decided = [
                (tx.transaction, _success(missing.get(tx.position, []), skipped.get(tx.position, []))) for tx in group
            ]
            self.replays.claim(self, conn, decided)
        self._commit(conn, group)
        db.mark_used()
        self.skipped = skipped
        return missing

    def _execute_one(
        self,
        conn: Any,
        member: tuple[_Tx, int, Prepared],
        missing: dict[int, list[int]],
        skipped: dict[int, list[OperationWarning]],
        conflict_rows: list[dict[str, Any]],
    ) -> None:
        """One operation; ``ROW_NOT_FOUND`` into ``missing``, ``CONFLICT_SKIPPED`` into ``skipped``."""
        tx, index, item = member
        write, warning = _conflict_check(self, conn, tx.transaction, index, item, conflict_rows)  # conflicts hook
        if warning is not None:  # CONFLICT_SKIPPED drops only this write
            skipped.setdefault(tx.position, []).append(warning)
        if write is not None:
            if writes.execute_one(conn, self.db.dialect, write):
                missing.setdefault(tx.position, []).append(index)
            writes.remember(self.known, [write])

    def _execute_batch(
        self,
        conn: Any,
        members: list[tuple[_Tx, int, Prepared]],
        speculative: bool,
        missing: dict[int, list[int]],
        skipped: dict[int, list[OperationWarning]],
        conflict_rows: list[dict[str, Any]],
    ) -> None:
        """One planned batch (after its conflict checks, when its table has any)."""
        parts = _checked_batch(self, conn, members, conflict_rows, skipped)  # conflicts hook
        if parts is None:
            parts = [[(position, item) for position, (_, _, item) in enumerate(members)]]
        dialect = self.db.dialect
        for part in parts:
            batch = [write for _, write in part]
            swap = writes.row_by_row(conn, dialect, batch, self.known)  # a unique-value swap: queue order decides
            pieces = [[entry] for entry in part] if swap else [part]
            for piece in pieces:
                found = writes.execute_batch(conn, dialect, [write for _, write in piece], speculative=speculative)
                writes.remember(self.known, [write for _, write in piece])
                for position in found:
                    tx, index, _ = members[piece[position][0]]
                    missing.setdefault(tx.position, []).append(index)

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
        replaced once (:meth:`Database.begin`). The first one may be the transaction the ledger read
        opened (nothing written in it yet)."""
        if self.opened is not None:  # ledger hook: the ledger read's transaction, still empty
            conn, self.opened = self.opened, None
            return conn
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


def _success(missing: list[int], skipped: list[OperationWarning]) -> SuccessResult:
    """A committed transaction's result: ``ROW_NOT_FOUND`` and ``CONFLICT_SKIPPED`` warnings by index."""
    found = [OperationWarning(operation_index=i, code="ROW_NOT_FOUND") for i in missing]
    warnings = sorted([*found, *skipped], key=lambda w: w.operation_index or 0)
    return SuccessResult(warnings=warnings or None)


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
    """A concurrent attempt decided a transaction of the group first; the group was rolled back.

    Attributes:
        stored: the ledger rows read back for the group's identities (empty: not visible yet, 503).
    """

    def __init__(self, stored: list[ledger.Entry]) -> None:
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
        """The identities of the request's transactions (none without ``client_id``). A transaction
        repeated within the request keeps its identity only at its first occurrence (the repeat is
        applied again, as without the ledger: it must never make the request's own claim collide)."""
        identities: dict[int, ledger.Identity] = {}
        seen: set[ledger.Identity] = set()
        for transaction in upload.transactions:
            found = ledger.identity(caller.user_id, upload.client_id, transaction)
            if found is not None and found not in seen:
                seen.add(found)
                identities[id(transaction)] = found
        return cls(caller.user_id, upload.client_id, config.ledger_days, identities)

    def load(self, run: _Run) -> None:
        """Read the ledger rows of every identity of the request: one statement, as the first of the
        transaction the first group then writes in (its ``BEGIN`` is the liveness check of a kept
        connection; no ROLLBACK and BEGIN in between). A missing ledger table is logged and
        the request goes on without the ledger (replays then rely on idempotency, as without
        ``client_id``).

        Raises:
            RetryableError: the database cannot be read now.
        """
        if not self.identities or self.client_id is None:
            return
        db = run.db
        try:
            conn = run._begin()
        except RetryableError:
            raise
        except Exception as exc:  # a BEGIN that failed on a fresh connection: classified, the connection dropped
            raise run._unexpected(exc) from exc
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
        run.opened = conn  # the first group's writes go in this transaction (nothing was written yet)
        db.mark_used()
        known = [e for e in (ledger.from_row(self.user_id, self.client_id, r) for r in rows) if e is not None]
        cutoff = (_now() - timedelta(days=self.retention_days)).replace(tzinfo=None)
        if any(e.decided_at < cutoff for e in known):
            # Pruning is overdue: an expired row would make the new decision's insert a duplicate.
            db.dialect.ledger_prune(conn, cutoff)
            known = [e for e in known if e.decided_at >= cutoff]
        self.known = known

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

    def answer_stored(self, transaction: Transaction, stored: list[ledger.Entry]) -> TransactionResult | None:
        """The answer after a race: from the row the first attempt stored, or ``None`` (not among
        ``stored``: apply it, or answer 503 when nothing was found)."""
        ident = self.identities.get(id(transaction))
        found = ledger.find(stored, ident) if ident is not None else None
        if found is None:
            return None
        self.known.append(found)
        return self._decided(found)

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

    def claim(self, run: _Run, conn: Any, decided: Sequence[tuple[Transaction, TransactionResult]]) -> None:
        """Insert the ledger rows of the group's transactions in its open database transaction, before
        COMMIT: one statement for the whole group.

        Raises:
            _AlreadyDecided: another attempt decided one of them first (the group was rolled back).
            RetryableError: the insert failed (the group was rolled back).
        """
        entries = {id(t): e for t, r in decided if (e := self.entry(t, r)) is not None}
        if not entries:
            return
        db = run.db
        try:
            claim = db.dialect.ledger_claim(conn, list(entries.values()))
        except Exception as exc:
            run._rollback(conn)
            classified = db.dialect.classify(exc)
            if isinstance(classified, RetryableError):
                raise classified from exc
            logger.error("cannot write the ledger", extra={"error_type": type(exc).__name__})
            raise RetryableError("ledger", retry_after_ms=5000) from exc
        if not claim.claimed:
            db.mark_used()
            raise _AlreadyDecided([e for e in (self.stored(claim, x.identity) for x in entries.values()) if e])
        self.pending.update(entries)

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

_RULES: dict[str, tuple[TableSchema, TableConfig, conflicts.TableRules | None]] = {}
"""Compiled rules per client table, for the schema object and configuration they were compiled from;
``None``: the schema check failed."""


def _table_rules(run: _Run, target: Target) -> conflicts.TableRules:
    """The table's compiled rules. The schema check of DESIGN.md section 4 runs here, at first use of
    an introspected table (again after a schema refresh): a problem is logged and counted (once per
    schema), and the table's operations are then ``SCHEMA_MISMATCH``."""
    table = target.config
    if not table.reads_rows:
        return conflicts.NO_RULES
    cached = _RULES.get(target.client_table)
    if cached is None or cached[0] is not target.schema or cached[1] is not table:
        problems = schema_problems(target.client_table, table, target.schema)
        if problems:
            run.config_problems += len(problems)
            logger.error(
                "configuration does not fit the table", extra={"table": target.client_table, "problems": problems}
            )
        compiled = None if problems else conflicts.compile_rules(table, target.schema)
        cached = _RULES[target.client_table] = (target.schema, table, compiled)
    if cached[2] is None:
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=target.client_table)
    return cached[2]


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
) -> tuple[Prepared | None, OperationWarning | None]:
    """Check one prepared operation against its current row (one locking read); give what to write.

    Returns:
        ``(write, warning)`` as :func:`_adjusted` gives them; ``(item, None)`` for a table without
        conflicts, deltas or rules; ``(None, None)`` for a PATCH that sent only the version.

    Raises:
        FatalOpError: as :func:`_change_of` and :func:`_adjusted` raise.
    """
    rules = _table_rules(run, item.target)
    if not rules.active:
        return item, None
    change, values = _change_of(item, rules)
    if change is None:
        return None, None
    current = _current_rows(run, conn, [item], rules, change.values).get(plan.identity(item.key_value))
    return _adjusted(run, conn, transaction, op_index, item, rules, change, values, current, rows)


def _checked_batch(
    run: _Run,
    conn: Any,
    members: list[tuple[_Tx, int, Prepared]],
    rows: list[dict[str, Any]],
    skipped: dict[int, list[OperationWarning]],
) -> list[list[tuple[int, Prepared]]] | None:
    """The checks of a planned batch on a table with conflicts, deltas or rules: one locking read of
    every row of the batch (``select_rows``), then :func:`_adjusted` per operation.

    Returns:
        ``None`` for a table without them (run the batch as it is); otherwise the writes to run, as
        sub-batches of ``(position in members, write)`` with the same columns each (deltas change no
        column set, but a row that gets no new version, or an insert, may differ from the rest).
        Skipped operations are left out, their warnings added to ``skipped``.

    Raises:
        FatalOpError: as :func:`_change_of` and :func:`_adjusted` raise (the engine then applies the
            transaction one operation at a time, which names the operation).
    """
    rules = _table_rules(run, members[0][2].target)
    if not rules.active:
        return None
    changes: list[tuple[int, conflicts.Change, dict[str, Any]]] = []
    for position, (_, _, item) in enumerate(members):
        change, values = _change_of(item, rules)
        if change is not None:
            changes.append((position, change, values))
    written = {name: None for _, change, _ in changes for name in change.values}
    found = _current_rows(run, conn, [members[p][2] for p, _, _ in changes], rules, written) if changes else {}
    parts: dict[tuple[str, ...], list[tuple[int, Prepared]]] = {}
    for position, change, values in changes:
        tx, index, item = members[position]
        current = found.get(plan.identity(item.key_value))
        write, warning = _adjusted(run, conn, tx.transaction, index, item, rules, change, values, current, rows)
        if warning is not None:
            skipped.setdefault(tx.position, []).append(warning)
        if write is not None:
            parts.setdefault(tuple(write.values), []).append((position, write))
    return list(parts.values())


def _change_of(item: Prepared, rules: conflicts.TableRules) -> tuple[conflicts.Change | None, dict[str, Any]]:
    """The operation as the checks see it, and the values it writes without the version it saw.

    Returns:
        ``(None, {})`` for a PATCH that sent only the version: nothing to check or write.

    Raises:
        FatalOpError: ``INVALID_DATA`` ``needs_previous_value`` for a delta without ``old`` (no row read).
    """
    target, operation = item.target, item.operation
    old = _server_old(target, operation.old)
    values = dict(item.values)
    seen = None
    if rules.version is not None:
        seen = (old or {}).get(rules.version.name, values.get(rules.version.name))
        values.pop(rules.version.name, None)
    change = conflicts.Change(operation.op, {**values, **dict.fromkeys(item.nulls)}, old, seen)
    missing = conflicts.needs_old(change, rules)
    if missing is not None:
        column = client_column(target.config, missing)
        raise FatalOpError(
            ErrorCode.INVALID_DATA, table=operation.table, column=column, reason=Reason.NEEDS_PREVIOUS_VALUE
        )
    if operation.op == "PATCH" and not values:
        return None, {}
    return change, values


def _adjusted(
    run: _Run,
    conn: Any,
    transaction: Transaction,
    op_index: int,
    item: Prepared,
    rules: conflicts.TableRules,
    change: conflicts.Change,
    values: dict[str, Any],
    current: dict[str, Any] | None,
    rows: list[dict[str, Any]],
) -> tuple[Prepared | None, OperationWarning | None]:
    """Rules and detection against the current row, and what to write instead of ``item``.

    The prepared item is never changed (an attempt may be repeated): the write is a copy.

    Returns:
        ``(write, warning)``: ``write`` is the item to execute (with the delta results and the next
        version in its values, the version the client saw removed), or ``None`` to skip it with a
        ``CONFLICT_SKIPPED`` ``warning`` (its conflict row appended to ``rows``).

    Raises:
        FatalOpError: ``CONFLICT`` (``on_conflict: reject``; the conflict row attached), ``INVALID_DATA``
            ``needs_previous_value`` (a version check without the version), or a delta result's
            conversion error.
    """
    target, operation, names = item.target, item.operation, item.target.config
    if current is None:
        return replace(item, values=values), None  # an insert, ROW_NOT_FOUND or UNAUTHORIZED: the write says
    try:
        finding = conflicts.check(current, change, rules, target.schema.columns)
        if finding is not None:
            return None, _conflicting(run, conn, transaction, op_index, item, finding, current, rules, rows)
        values.update(conflicts.delta_values(current, change, rules))
    except FatalOpError as exc:
        if exc.code is not ErrorCode.CONFLICT:
            exc.table, exc.column = operation.table, client_column(names, exc.column or "")
        raise
    if rules.version is not None and conflicts.changed_columns(current, change, target.schema.columns):
        values[rules.version.name] = _next_version(current, rules.version, operation.table, names)
    return replace(item, values=values), None


def _current_rows(
    run: _Run, conn: Any, items: list[Prepared], rules: conflicts.TableRules, written: Mapping[str, Any]
) -> dict[Any, dict[str, Any]]:
    """The rows of ``items`` (one table) as the transaction has left them so far, by key identity,
    locked as the write locks them: one statement (per chunk of the dialect's parameter limit). A row
    that is someone else's is left out (the write path then reports ``UNAUTHORIZED``)."""
    first = items[0]
    schema, key, owner = first.target.schema, first.target.key, first.owner
    wanted = {**rules.columns, **{n: schema.columns[n] for n in written}}
    if owner is not None:
        wanted[owner.name] = owner
    keys = list({plan.identity(i.key_value): i.key_value for i in items}.values())
    found = run.db.dialect.select_rows(conn, schema, key, keys, list(wanted.values()), "update")
    out = {}
    for value, row in found:
        if owner is not None and not conflicts.same(row.get(owner.name), first.me, owner):
            continue
        out[plan.identity(convert(value, key))] = row
    return out


def _next_version(current: dict[str, Any], version: Column, table: str, names: TableConfig) -> Any:
    """``version + 1`` of the locked row (what ``SET version = version + 1`` writes)."""
    try:
        return convert(convert(current[version.name], version) + 1, version)
    except (InvalidValue, TypeError) as exc:
        column = client_column(names, version.name)
        raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=column, reason=Reason.OUT_OF_RANGE) from exc


def _conflicting(
    run: _Run,
    conn: Any,
    transaction: Transaction,
    op_index: int,
    item: Prepared,
    finding: conflicts.Finding,
    current: dict[str, Any],
    rules: conflicts.TableRules,
    rows: list[dict[str, Any]],
) -> OperationWarning:
    """A finding as ``CONFLICT`` (raised, ``reject``) or as a ``CONFLICT_SKIPPED`` warning (``skip``)."""
    operation = item.operation
    row = _conflict_row(run, transaction, item, finding, current)
    column = client_column(item.target.config, finding.column)
    if rules.on_conflict == "reject":
        error = FatalOpError(ErrorCode.CONFLICT, table=operation.table, column=column, reason=finding.reason)
        error.conflict_row = row
        raise error
    details = {"table": operation.table, "column": column, "reason": finding.reason.value}
    if run.db.table(conn, conflicts.TABLE) is not None:
        rows.append(row)
        details["conflict_id"] = row["id"]
    else:
        logger.warning(
            "conflicts table not found; a skipped conflict is not recorded", extra={"table": operation.table}
        )
        run.unrecorded_conflicts += 1
    return OperationWarning(operation_index=op_index, code="CONFLICT_SKIPPED", details=details)


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
        "user_id": conflicts.text_field(run.caller.user_id, 255),
        "client_id": conflicts.text_field(run.upload.client_id, 255),
        "transaction_id": transaction.tx_id,
        "op_id": operation.op_id,
        "table_name": conflicts.text_field(operation.table, 128),
        "row_id": conflicts.text_field(operation.id, 255),
        "reason": finding.reason.value,
        "client_values": json.dumps(client, default=str, separators=(",", ":")),
        "server_values": json.dumps(server, default=str, separators=(",", ":")),
        "created_at": datetime.now(UTC).replace(tzinfo=None),
        "resolved": 0,
    }


def _learn_targets(tx: _Tx, targets: dict[str, Target]) -> bool:
    """Add the tables ``tx`` writes or references to ``targets``; True when one was new."""
    new = False
    for _, item in tx.items:
        for target in (item.target, *(ref.parent for ref in item.parents)):
            if target.schema.name not in targets:
                targets[target.schema.name] = target
                new = True
    return new
