"""Group commit's grouping: which consecutive client transactions may share one database transaction.

Pure, like the planner it feeds (:mod:`powersync_upload.plan`): it takes the planner's :class:`Step`
values and :class:`Tables` and returns ranges of transaction positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .plan import RowRef, Step, Tables


@dataclass
class Grouping:
    """Forms groups of consecutive client transactions one transaction at a time (see :func:`groups`),
    so the engine can apply a group as soon as it is complete and keep only that group in memory."""

    tables: Tables
    max_steps: int = 1000
    _count: int = 0
    _deleted: set[str] = field(default_factory=set)
    _touched: set[str] = field(default_factory=set)
    _setters: set[str] = field(default_factory=set)

    def starts_group(self, transaction: Sequence[Step]) -> bool:
        """Add the next transaction; True when it starts a new group (the one before is complete)."""
        tables = self.tables
        deleted = {s.table for s in transaction if s.kind == "DELETE"}
        touched = {s.table for s in transaction}
        setters = {s.table for s in transaction if s.kind != "DELETE" and s.sets_unique}
        linked = any(child in self._touched for parent in deleted for child, _ in tables.children(parent)) or any(
            child in touched for parent in self._deleted for child, _ in tables.children(parent)
        )
        linked = linked or bool(_frees_unique(transaction, tables) & self._setters)
        new = self._count > 0 and (linked or self._count + len(transaction) > self.max_steps)
        if new:
            self._count = 0
            self._deleted, self._touched, self._setters = set(), set(), set()
        self._deleted |= deleted
        self._touched |= touched
        self._setters |= setters
        self._count += max(1, len(transaction))
        return new


def groups(transactions: Sequence[Sequence[Step]], tables: Tables, max_steps: int = 1000) -> list[range]:
    """Split consecutive client transactions into groups that may share one database transaction.

    A transaction starts a new group when, together with the group so far, a later transaction's
    write could change an earlier one's outcome in a way the per-step edges do not order: a delete
    in a parent table and an operation on one of its child tables, or, on a table with a unique index
    besides the key, a delete or a PATCH of indexed columns of a row the transaction did not insert
    itself. A group also ends at ``max_steps`` steps (a single larger transaction is a group alone).

    Returns:
        ranges of transaction positions, covering ``transactions`` in order.
    """
    grouping = Grouping(tables, max_steps)
    result: list[range] = []
    start = 0
    for position, transaction in enumerate(transactions):
        if grouping.starts_group(transaction) and position > start:
            result.append(range(start, position))
            start = position
    if transactions:
        result.append(range(start, len(transactions)))
    return result


def _frees_unique(transaction: Sequence[Step], tables: Tables) -> set[str]:
    """Tables with a unique index where the transaction may free an indexed value of a row it did not
    insert itself (a delete, or a PATCH of indexed columns)."""
    unique = tables.unique
    may_free = (s.kind == "DELETE" or (s.kind == "PATCH" and s.sets_unique) for s in transaction if s.table in unique)
    if not any(may_free):
        return set()  # nothing could free a value (a transaction of PUTs): no row needs following
    inserted: set[RowRef] = set()
    seen: set[RowRef] = set()
    frees: set[str] = set()
    for step in transaction:
        ref = (step.table, step.row)
        if ref not in seen and step.kind == "PUT":
            inserted.add(ref)
        seen.add(ref)
        frees_value = step.kind == "DELETE" or (step.kind == "PATCH" and step.sets_unique)
        if frees_value and step.table in tables.unique and ref not in inserted:
            frees.add(step.table)
    return frees
