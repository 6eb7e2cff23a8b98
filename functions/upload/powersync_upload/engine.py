"""The engine: applies the client transactions of a request in groups and reports per transaction.

The loop, per request (DESIGN.md section 5):

1. **replays**: transactions the ledger already decided are answered from it (:mod:`.replays`);
2. **prepare**: every operation is validated, converted and pre-authorized, transaction by
   transaction (:mod:`.prepare`); one that cannot be prepared is decided fatal here, no SQL run;
3. **group**: consecutive transactions form a group (:class:`powersync_upload.grouping.Grouping`);
4. **attempt**: a group is applied in one database transaction and committed once
   (:func:`powersync_upload.attempt.apply_group`), falling back to halves and to one operation at a
   time when it fails (:func:`powersync_upload.fallback.settle`);
5. **decide**: each part's outcome becomes its transactions' results (:func:`_decide`): committed
   is ``success``, fatal is ``fatal_error`` (and ``on_fatal_error: stop`` ends the request, shape A
   only), retryable is ``retryable_error`` with the rest ``not_attempted``;
6. **record**: a fatal result goes to the errors table with its ledger and conflict rows as soon as
   it is decided, before any later transaction is attempted (:func:`_record`; a temporary failure
   there stops the request as a retryable error would), and the results are assembled in request
   order (:mod:`.outcome`).

Only after a group's COMMIT is any of its transactions a success; groups committed earlier stand.
The per-operation baseline (``fast_path=False``) applies one statement per operation and one database
transaction per client transaction (the benchmark's baseline). The engine knows nothing of HTTP:
:func:`apply_upload` returns an :class:`Outcome`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import plan
from .attempt import Attempt, Committed, Fatal, Raced, Retryable, apply_group
from .config import UploadConfig
from .contract import Transaction, Upload
from .database import Database
from .errors import ErrorCode, FatalOpError, Reason, RetryableError
from .fallback import Group, settle
from .grouping import Grouping
from .ledger import Entry
from .outcome import Decisions, Outcome, assemble, record_decided, unavailable
from .prepare import Prepared, PreparedTransaction, Target, prepare
from .replays import Replays, prune_if_due
from .session import Caller, Deadline, Session
from .steps import TableFacts, step_of, tables_of

__all__ = ["MAX_GROUP_STEPS", "Caller", "Deadline", "Outcome", "apply_upload", "unavailable"]

MAX_GROUP_STEPS = 1000
"""Operations per group of client transactions (a larger single transaction is a group alone)."""


class _Stop(Exception):
    """Nothing more is attempted (``on_fatal_error: stop``, or a retryable error)."""


@dataclass(frozen=True)
class _Request:
    """What every step of one request works with."""

    upload: Upload
    session: Session
    replays: Replays
    decisions: Decisions
    fast_path: bool


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
    session = Session(db, deadline, config, caller, upload.client_id)
    replays = Replays.start(upload, caller, config)
    request = _Request(upload, session, replays, Decisions(upload), fast_path)
    try:
        _answer_replays(request)
        _apply_all(request)
    except _Stop:
        pass
    except RetryableError as exc:
        request.decisions.stop_retryable(exc)
    session.release()  # the ledger read's transaction, when no group took it
    outcome = assemble(request.decisions, session)
    prune_if_due(replays, session)
    return outcome


def _answer_replays(request: _Request) -> None:
    """Step 1: one read of the ledger; a transaction it already decided is answered from it."""
    request.replays.load(request.session)
    for position, transaction in enumerate(request.upload.transactions):
        answered = request.replays.answer(transaction)
        if answered is not None:
            request.decisions.results[position] = answered
            request.session.counters.replayed += 1


def _apply_all(request: _Request) -> None:
    """Steps 2 and 3: prepare transaction by transaction and apply each group as soon as the next
    transaction starts a new one, so only one group's prepared operations are held at a time (a body
    at the cap holds tens of thousands). The baseline applies each transaction alone."""
    config = request.session.config
    facts: dict[str, TableFacts] = {}
    targets: dict[str, Target] = {}
    grouping = Grouping(plan.Tables(), MAX_GROUP_STEPS)
    group: Group = []
    for tx in _prepared(request):
        if isinstance(tx, int):  # decided fatal while preparing: the group before it first, then its rows
            if group:
                _apply_group(request, group)
                group = []
            _record(request, tx)
            if request.decisions.stopping(config):
                break
            continue
        if not request.fast_path:
            _apply_group(request, [tx])
            continue
        tx.steps = [step_of(tx.position, index, item, facts) for index, item in tx.items]
        if _learn_targets(tx, targets):
            grouping.tables = tables_of(list(targets.values()), config)
        if grouping.starts_group(tx.steps) and group:
            _apply_group(request, group)
            group = []
        group.append(tx)
    if group:
        _apply_group(request, group)


def _prepared(request: _Request) -> Iterator[PreparedTransaction | int]:
    """Step 2: prepare the transactions one by one, in order; one that cannot be prepared is decided
    fatal here (no SQL ran) and yields its position. Transactions answered from the ledger are skipped."""
    session, decisions = request.session, request.decisions
    conn: Any = None
    limit = session.config.limits.max_operations_per_transaction
    for position, transaction in enumerate(request.upload.transactions):
        if position in decisions.results:  # answered from the ledger
            continue
        refused = _refused(transaction, limit)
        if refused is not None:
            decisions.fatal_at(position, *refused)
            yield position
            continue
        if conn is None and transaction.operations:
            conn = session.db.connection(min(10.0, session.budget()))
        prepared = _prepare_transaction(request, conn, position, transaction)
        yield position if prepared is None else prepared


def _refused(transaction: Transaction, limit: int) -> tuple[FatalOpError, int] | None:
    """``(error, operation index)`` for a transaction that is fatal before any SQL: refused by the
    contract (an entry's ``op``, ``table`` or ``id`` of the wrong kind, ``TOO_LARGE``), or longer than
    ``max_operations_per_transaction``; ``None`` otherwise."""
    if transaction.refused is not None:
        index, error = transaction.refused
        return error, index
    if len(transaction.operations) > limit:
        error = FatalOpError(ErrorCode.INVALID_DATA, reason=Reason.TOO_LONG, limit="max_operations_per_transaction")
        return error, limit
    return None


def _prepare_transaction(
    request: _Request, conn: Any, position: int, transaction: Transaction
) -> PreparedTransaction | None:
    """One transaction's operations prepared; ``None`` when one is fatal (decided here).

    Raises:
        RetryableError: the schema could not be read now (or an unexpected error, classified); a
            database error the dialect classes as fatal rejects the transaction instead.
    """
    session = request.session
    cache: dict[tuple[Any, ...], Any] = {}
    items: list[tuple[int, Prepared]] = []
    op_index = 0
    operations = transaction.operations
    try:
        for op_index, operation in enumerate(operations):
            item = prepare(conn, operation, session.caller.user_id, session.config, session.db, cache, session.counters)
            if item is not None:
                items.append((op_index, item))
    except FatalOpError as exc:
        exc.operation_index = op_index
        request.decisions.fatal_at(position, exc, op_index)
        return None
    except RetryableError:
        raise
    except Exception as exc:
        error = session.classified(exc, operations[op_index], op_index)
        if isinstance(error, RetryableError):
            raise error from exc
        request.decisions.fatal_at(position, error, op_index)  # e.g. a table dropped: not a 503 for ever
        return None
    return PreparedTransaction(position, transaction, items)


def _apply_group(request: _Request, group: Group) -> None:
    """Steps 4 and 5: attempt a group (with its fallbacks) and decide each part's results.

    Raises:
        _Stop: nothing more is to be attempted.
    """
    session = request.session

    def attempt(part: Group, per_operation: bool) -> Attempt:
        return apply_group(session, request.replays, part, per_operation=per_operation)

    for part, outcome in settle(group, attempt, session.deadline, fast_path=request.fast_path):
        _decide(request, part, outcome)


def _decide(request: _Request, part: Group, outcome: Attempt) -> None:
    """Step 5: one part's outcome as its transactions' results.

    Raises:
        _Stop: a retryable error, or a fatal one under shape A ``on_fatal_error: stop``.
    """
    decisions = request.decisions
    if isinstance(outcome, Committed):
        for tx in part:
            decisions.success(tx.position, outcome.result(tx.position))
            if outcome.wrote:
                request.replays.committed(tx.transaction)
    elif isinstance(outcome, Raced):
        _answer_race(request, part, outcome.stored)
    elif isinstance(outcome, Retryable):
        decisions.stop_retryable(outcome.error, part[0].position)
        raise _Stop from outcome.error
    else:
        assert isinstance(outcome, Fatal)
        decisions.fatal_at(part[0].position, outcome.error, outcome.error.operation_index)
        _record(request, part[0].position)
        if decisions.stopping(request.session.config):
            raise _Stop


def _record(request: _Request, position: int) -> None:
    """Store the fatal result just decided at ``position`` before anything after it is attempted
    (:func:`~powersync_upload.outcome.record_decided`), in a short transaction of its own (the ledger
    read's, if still open, is ended first).

    Raises:
        _Stop: it could not be stored now: the request stops there (retryable; 503 in shape B).
    """
    request.session.release()
    error = record_decided(request.decisions, request.session, request.replays, position)
    if error is not None:
        request.decisions.stop_retryable(error, position)
        raise _Stop from error


def _answer_race(request: _Request, group: Group, stored: list[Entry]) -> None:
    """A resend raced its first attempt: answer the group's transactions a concurrent attempt decided
    first and apply the rest again; answer 503 when none of them is visible in the ledger yet."""
    decisions = request.decisions
    answered = False
    for tx in group:
        result = request.replays.answer_stored(tx.transaction, stored)
        if result is not None:
            decisions.results[tx.position] = result
            request.session.counters.replayed += 1
            answered = True
    if not answered:
        decisions.stop_retryable(RetryableError("ledger_race", retry_after_ms=1000), group[0].position)
        raise _Stop
    rest = [tx for tx in group if tx.position not in decisions.results]
    if rest:
        _apply_group(request, rest)


def _learn_targets(tx: PreparedTransaction, targets: dict[str, Target]) -> bool:
    """Add the tables ``tx`` writes or references to ``targets``; True when one was new."""
    new = False
    for _, item in tx.items:
        if item.target.schema.name not in targets:
            targets[item.target.schema.name] = item.target
            new = True
        for ref in item.parents:
            if ref.parent.schema.name not in targets:
                targets[ref.parent.schema.name] = ref.parent
                new = True
    return new
