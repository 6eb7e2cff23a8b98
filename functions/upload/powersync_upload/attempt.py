"""The unit of work: apply one group of prepared client transactions in one database transaction and
say what happened: committed, fatal at an operation, or retryable (DESIGN.md section 3, group commit).

:func:`apply_group` opens the transaction (:meth:`Session.begin`), plans the group's operations into
ordered batches (:mod:`powersync_upload.plan`), runs each batch (:mod:`powersync_upload.writes`)
after its conflict checks (:mod:`powersync_upload.conflict_checks`), inserts the ledger rows of the
group (:meth:`Replays.claim`) and commits once. It rolls back on any failure and returns an
:data:`Attempt` value; it changes nothing outside the database transaction it opened. Trying again,
in halves or one operation at a time, is :mod:`powersync_upload.fallback`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import conflict_checks, plan, writes
from .contract import OperationWarning, SuccessResult
from .convert import convert
from .errors import FatalOpError, RetryableError
from .ledger import Entry
from .prepare import Prepared, PreparedTransaction
from .replays import AlreadyDecided, Replays
from .session import Session
from .steps import TableFacts, self_reference_column, step_of, tables_of

Member = conflict_checks.Member


@dataclass(frozen=True)
class Committed:
    """The group's COMMIT returned.

    Attributes:
        missing: operation indices of PATCHes that found no row (``ROW_NOT_FOUND``), by transaction position.
        skipped: ``CONFLICT_SKIPPED`` warnings, by transaction position.
        wrote: False when the group had nothing to write (no database transaction was opened).
    """

    missing: dict[int, list[int]]
    skipped: dict[int, list[OperationWarning]]
    wrote: bool = True

    def result(self, position: int) -> SuccessResult:
        """The ``success`` of the transaction at ``position``, with its warnings by operation index."""
        found = [OperationWarning(operation_index=i, code="ROW_NOT_FOUND") for i in self.missing.get(position, [])]
        warnings = sorted([*found, *self.skipped.get(position, [])], key=lambda w: w.operation_index or 0)
        return SuccessResult(warnings=warnings or None)


@dataclass(frozen=True)
class Fatal:
    """A fatal error, rolled back; ``error.operation_index`` is the operation it names."""

    error: FatalOpError


@dataclass(frozen=True)
class NotAsPlanned:
    """A PUT batch planned as inserts only met an existing row (:class:`writes.SpeculationFailed`)."""


@dataclass(frozen=True)
class Retryable:
    """A temporary error (deadlock, lock timeout, lost connection, deadline...), rolled back."""

    error: RetryableError


@dataclass(frozen=True)
class Raced:
    """A concurrent attempt decided a transaction of the group first (its ledger row exists); rolled
    back. ``stored``: the ledger rows read back (empty: not visible yet)."""

    stored: list[Entry]


Attempt = Committed | Fatal | NotAsPlanned | Retryable | Raced
"""What one attempt of a group gave."""


@dataclass
class _Progress:
    """What the attempt has done so far (local to one attempt; ``at`` is the operation running)."""

    missing: dict[int, list[int]] = field(default_factory=dict)
    skipped: dict[int, list[OperationWarning]] = field(default_factory=dict)
    conflict_rows: list[dict[str, Any]] = field(default_factory=list)
    known: writes.Known = field(default_factory=dict)
    remembering: bool = True
    at: Member | None = None


def apply_group(
    session: Session, replays: Replays, group: list[PreparedTransaction], *, per_operation: bool
) -> Attempt:
    """Apply ``group`` in one database transaction (see the module docstring).

    Args:
        per_operation: one statement per operation in the planner's order (names the failing
            operation), instead of batches.
    """
    if all(not tx.items for tx in group):
        return Committed({}, {}, wrote=False)
    try:
        return _apply(session, replays, group, per_operation)
    except FatalOpError as exc:
        return Fatal(exc)
    except writes.SpeculationFailed:
        return NotAsPlanned()
    except RetryableError as exc:
        return Retryable(exc)
    except AlreadyDecided as exc:
        return Raced(exc.stored)


def _apply(session: Session, replays: Replays, group: list[PreparedTransaction], per_operation: bool) -> Committed:
    """BEGIN, the batches, the ledger rows, COMMIT; raises what :func:`apply_group` turns into values."""
    db = session.db
    conn: Any = None
    progress = _Progress()
    try:
        conn = session.begin()
        _execute_plan(session, conn, group, per_operation, progress)
        if progress.conflict_rows:  # skipped conflicts are recorded with the writes
            progress.at = None
            db.dialect.conflicts_insert(conn, progress.conflict_rows)
    except FatalOpError as exc:
        session.rollback(conn)
        db.mark_used()
        if progress.at is not None:
            exc.operation_index = progress.at[1]
        raise
    except (RetryableError, writes.SpeculationFailed):
        session.rollback(conn)
        raise
    except Exception as exc:
        session.rollback(conn)
        if progress.at is None:
            raise session.unexpected(exc) from exc
        raise session.classified(exc, progress.at[2].operation, progress.at[1]) from exc
    committed = Committed(progress.missing, progress.skipped)
    replays.claim(session, conn, [(tx.transaction, committed.result(tx.position)) for tx in group])
    session.commit(conn, len(group[-1].transaction.operations) - 1)
    db.mark_used()
    return committed


def _execute_plan(
    session: Session, conn: Any, group: list[PreparedTransaction], per_operation: bool, progress: _Progress
) -> None:
    """Plan the group and run its batches in order, checking the deadline after each."""
    items = [(tx, index, item) for tx in group for index, item in tx.items]
    planned = _planned(session, conn, group, items)
    progress.remembering = not per_operation and _reads_known(session, planned, items)
    for batch in planned.batches:
        members = [items[i] for i in batch.steps]
        if per_operation or len(members) == 1:
            for member in members:
                progress.at = member
                _execute_one(session, conn, member, progress)
                session.check_deadline()
        else:
            progress.at = members[0]
            _execute_batch(session, conn, members, batch.speculative, progress)
            session.check_deadline()


def _reads_known(session: Session, planned: plan.Plan, items: list[Member]) -> bool:
    """Whether :func:`writes.row_by_row` may read what the attempt wrote (``_Progress.known``): only for
    a PATCH batch of two or more rows on a table with a unique index besides the key, on a dialect
    whose batches visit rows in their own order. Otherwise the writes are not noted (a dict per row)."""
    if session.db.dialect.ordered_batches:
        return False
    return any(
        batch.kind == "PATCH" and len(batch.steps) > 1 and items[batch.steps[0]][2].target.schema.unique
        for batch in planned.batches
    )


def _planned(session: Session, conn: Any, group: list[PreparedTransaction], items: list[Member]) -> plan.Plan:
    """The group's plan (steps the grouping computed, or computed here; current parents read)."""
    facts: dict[str, TableFacts] = {}
    steps = [
        step
        for tx in group
        for step in (tx.steps or [step_of(tx.position, index, item, facts) for index, item in tx.items])
    ]
    steps = _with_current_parents(session, conn, steps, [item for _, _, item in items])
    return plan.plan(steps, _tables(session, group))


def _execute_one(session: Session, conn: Any, member: Member, progress: _Progress) -> None:
    """One operation, after its conflict checks; ``ROW_NOT_FOUND`` and ``CONFLICT_SKIPPED`` noted."""
    tx, index, item = member
    write, warning = conflict_checks.check_one(session, conn, tx.transaction, index, item, progress.conflict_rows)
    if warning is not None:  # CONFLICT_SKIPPED drops only this write
        progress.skipped.setdefault(tx.position, []).append(warning)
    if write is not None:
        if writes.execute_one(conn, session.db.dialect, write):
            progress.missing.setdefault(tx.position, []).append(index)
        if progress.remembering:
            writes.remember(progress.known, [write])


def _execute_batch(session: Session, conn: Any, members: list[Member], speculative: bool, progress: _Progress) -> None:
    """One planned batch (after its conflict checks, when its table has any)."""
    parts = conflict_checks.check_batch(session, conn, members, progress.conflict_rows, progress.skipped)
    if parts is None:
        parts = [[(position, item) for position, (_, _, item) in enumerate(members)]]
    for part in parts:
        swap = writes.row_by_row(conn, session.db.dialect, [write for _, write in part], progress.known)
        for piece in [[entry] for entry in part] if swap else [part]:  # a unique-value swap: queue order decides
            _write_piece(session, conn, members, piece, speculative, progress)


def _write_piece(
    session: Session,
    conn: Any,
    members: list[Member],
    piece: list[tuple[int, Prepared]],
    speculative: bool,
    progress: _Progress,
) -> None:
    """One batch statement set for ``piece`` (positions in ``members``, writes); ``ROW_NOT_FOUND`` noted."""
    found = writes.execute_batch(conn, session.db.dialect, [write for _, write in piece], speculative=speculative)
    if progress.remembering:
        writes.remember(progress.known, [write for _, write in piece])
    for position in found:
        tx, index, _ = members[piece[position][0]]
        progress.missing.setdefault(tx.position, []).append(index)


def _tables(session: Session, group: list[PreparedTransaction]) -> plan.Tables:
    """The planner's view of every table the group writes or references."""
    schemas = {item.target.schema.name: item.target for tx in group for _, item in tx.items}
    for tx in group:
        for _, item in tx.items:
            for ref in item.parents:
                schemas.setdefault(ref.parent.schema.name, ref.parent)
    return tables_of(list(schemas.values()), session.config)


def _with_current_parents(
    session: Session, conn: Any, steps: list[plan.Step], items: list[Prepared]
) -> list[plan.Step]:
    """For deletes in a self-referencing table (two or more in the group), read what each row
    references now, so the planner can delete children first (one locking read per table)."""
    wanted: dict[str, list[int]] = {}
    for i, step in enumerate(steps):
        if step.kind == "DELETE":
            wanted.setdefault(step.table, []).append(i)
    for positions in wanted.values():
        if len(positions) >= 2:
            _mark_current_parents(session, conn, steps, items, positions)
    return steps


def _mark_current_parents(
    session: Session, conn: Any, steps: list[plan.Step], items: list[Prepared], positions: list[int]
) -> None:
    """The deletes at ``positions`` (one self-referencing table): each step learns the row its row
    references now (one locking read)."""
    target = items[positions[0]].target
    column = self_reference_column(target.schema)
    if column is None:
        return
    rows = session.db.dialect.select_many(
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
