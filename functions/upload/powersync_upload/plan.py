"""The planner: a group of client transactions becomes ordered batches, one per table, kind and columns.

Pure: it takes :class:`Step` values (what the engine knows of each prepared operation) and
:class:`Tables` (the foreign keys and unique indexes the schema introspection found, plus the
configured ``parents``) and returns a :class:`Plan`. It opens no connection, reads no clock and knows
no SQL. The contract is DESIGN.md section 3, "Order inside a transaction" and group commit.

How it orders. Every step gets a *slot* ``(round, phase, rank, kind)``: phase 0 writes (PUT, then
PATCH) tables parents first (``rank``), phase 1 deletes children first. Steps that must follow another
step (an *edge*) go to the first round whose slot comes after it. The edges:

* the same row: queue order, whatever the transaction;
* a write that references a parent row comes after the writes of that row in its transaction (so a
  child may be sent before its parent); a parent's delete comes after its transaction's operations
  on child tables (``ON DELETE NO ACTION``/``RESTRICT``), or keeps queue order with them (``CASCADE``,
  ``SET NULL``, ``SET DEFAULT``); in a self-referencing table deletes are ordered row by row from the
  rows' current references (``Step.current_parent``, read by the engine);
* between client transactions of one group: the same row and references to a row the other
  transaction writes keep transaction order. What the edges cannot order cheaply ends the group
  instead (:func:`powersync_upload.grouping.groups`): a parent-table delete beside an operation on a
  child table, and, on a table with a unique index besides its key, a delete or a PATCH of indexed
  columns of a row the transaction did not insert itself. A PUT is planned as an insert; when the
  database says that a PUT batch of several client transactions on such a table updated an existing
  row (:attr:`Batch.speculative`), the engine applies the group again in smaller parts, since an
  update may free a value an earlier transaction's write needed.

A cycle (new rows that reference each other) cannot be ordered: the plan is then queue order, one
step per batch, and the database's foreign keys decide (``FOREIGN_KEY_VIOLATION``).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["PUT", "PATCH", "DELETE"]
OnDelete = Literal["restrict", "cascade"]
"""What a parent delete does to child rows: ``restrict`` (NO ACTION, RESTRICT: children must go
first) or ``cascade`` (CASCADE, SET NULL, SET DEFAULT: the delete changes child rows, so it keeps
queue order with the writes to them)."""

RowRef = tuple[str, Hashable]
"""A row: (server table, key identity as :func:`identity` gives it)."""


def identity(value: object) -> Hashable:
    """A key as the database compares it, for set and dict lookups: text case-folded (a collation may
    treat 'A' and 'a' as the same row, so treating them as one is always the safe side); UUIDs by
    their canonical lower-case text."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@dataclass(slots=True)
class Step:
    """One prepared operation as the planner sees it (not frozen: one is built per operation, and a
    frozen dataclass's ``__init__`` costs several times as much; nothing changes a step once built,
    :func:`dataclasses.replace` makes a new one).

    Attributes:
        tx: position of its client transaction in the group (0-based).
        index: position of the operation in its client transaction.
        table: the server table.
        kind: PUT, PATCH or DELETE.
        row: the row's key identity.
        columns: the columns written (PUT and PATCH), in order: a batch shares them.
        refs: parent rows the written values reference (single-column foreign keys and ``parents``).
        sets_unique: the write sets a column of a unique index other than the key (PUT always does on
            such a table).
        current_parent: DELETE in a self-referencing table: the row its reference currently points to.
    """

    tx: int
    index: int
    table: str
    kind: Kind
    row: Hashable
    columns: tuple[str, ...] = ()
    refs: tuple[RowRef, ...] = ()
    sets_unique: bool = False
    current_parent: Hashable | None = None


@dataclass(frozen=True)
class Tables:
    """What the planner knows of the tables.

    Attributes:
        parents: child table -> (parent table, what a parent delete does), from the introspected
            foreign keys and the configured ``parents`` (a table may reference itself).
        unique: tables that have a unique index other than the key.
    """

    parents: dict[str, tuple[tuple[str, OnDelete], ...]] = field(default_factory=dict)
    unique: frozenset[str] = frozenset()

    def children(self, table: str) -> list[tuple[str, OnDelete]]:
        """Tables referencing ``table`` (itself included when it references itself), with the rule."""
        return [(child, rule) for child, refs in self.parents.items() for parent, rule in refs if parent == table]


@dataclass(frozen=True)
class Batch:
    """Steps that run as one statement: one table, one kind, the same columns, distinct rows.

    Attributes:
        steps: positions in the planner's input, in the order the rows must be written.
        speculative: a PUT batch of several client transactions on a table with a unique index: the
            plan holds only if every row is an insert (the engine checks it).
    """

    table: str
    kind: Kind
    steps: tuple[int, ...]
    speculative: bool = False


@dataclass(frozen=True)
class Plan:
    """Ordered batches; ``ordered`` is False when a cycle forced queue order."""

    batches: tuple[Batch, ...]
    ordered: bool = True

    def sequence(self) -> list[int]:
        """Every step once, in the planner's order (the one-statement-per-operation fallback)."""
        return [i for batch in self.batches for i in batch.steps]


_KIND_ORDER = {"PUT": 0, "PATCH": 1, "DELETE": 0}


def table_ranks(tables: Tables, names: Sequence[str]) -> dict[str, int]:
    """Parents before children (self-references ignored; tables in a cycle keep first-seen order)."""
    pending = list(dict.fromkeys(names))
    ranks: dict[str, int] = {}
    while pending:
        for name in pending:
            parents = [p for p, _ in tables.parents.get(name, ()) if p != name and p in pending]
            if not parents:
                break
        else:
            name = pending[0]  # a cycle between tables: the foreign keys decide at execution
        ranks[name] = len(ranks)
        pending.remove(name)
    return ranks


class _Graph:
    """Edges between steps, plus zero-width barrier nodes (a barrier stands for "all of these steps"
    so that a table-level rule costs one edge per step instead of one per pair)."""

    def __init__(self, count: int) -> None:
        self.steps = count
        self.before: list[set[int]] = [set() for _ in range(count)]

    def barrier(self, members: set[int]) -> int:
        self.before.append(set(members))
        return len(self.before) - 1

    def add(self, a: int, b: int) -> None:
        if a != b:
            self.before[b].add(a)


def _edges(steps: Sequence[Step], tables: Tables) -> _Graph:
    """The ordering constraints of one group (see the module docstring)."""
    graph = _Graph(len(steps))
    by_row = _same_row_edges(steps, graph)
    for b, step in enumerate(steps):
        for parent in step.refs:
            for a in by_row.get(parent, ()):
                _reference_edge(steps, a, b, graph)
    deleting = {step.tx for step in steps if step.kind == "DELETE"}
    by_tx: dict[int, list[int]] = {}
    for i, step in enumerate(steps):
        if step.tx in deleting:  # only a transaction that deletes has delete edges
            by_tx.setdefault(step.tx, []).append(i)
    for members in by_tx.values():
        _delete_edges([(i, steps[i]) for i in members], tables, graph)
    return graph


def _same_row_edges(steps: Sequence[Step], graph: _Graph) -> dict[RowRef, list[int]]:
    """Queue order between the steps on one row (an edge from each to the next); returns the steps
    of each row some step references, in order (the other rows' lists are not needed)."""
    referenced = {ref for step in steps for ref in step.refs}
    last: dict[RowRef, int] = {}
    by_row: dict[RowRef, list[int]] = {}
    for i, step in enumerate(steps):
        row = (step.table, step.row)
        before = last.get(row)
        if before is not None:
            graph.add(before, i)
        last[row] = i
        if row in referenced:
            by_row.setdefault(row, []).append(i)
    return by_row


def _reference_edge(steps: Sequence[Step], a: int, b: int, graph: _Graph) -> None:
    """Step ``b`` references the row step ``a`` writes: within one client transaction the parent's
    writes go first (its delete keeps its place: :func:`_delete_edges`); across transactions, queue order."""
    other, step = steps[a], steps[b]
    if other.tx == step.tx:
        if other.kind != "DELETE":
            graph.add(a, b)  # the parent's writes first, wherever the client put them
    elif other.tx < step.tx:
        graph.add(a, b)
    else:
        graph.add(b, a)


def _delete_edges(members: list[tuple[int, Step]], tables: Tables, graph: _Graph) -> None:
    """Within one client transaction: a parent table's deletes against the operations on its child
    tables (NO ACTION/RESTRICT: children first; CASCADE/SET NULL: queue order), and row by row in a
    self-referencing table."""
    deleted = {step.table for _, step in members if step.kind == "DELETE"}
    for parent in deleted:
        parent_deletes = [(i, s) for i, s in members if s.table == parent and s.kind == "DELETE"]
        for child, rule in tables.children(parent):
            if child == parent:
                _self_reference(parent, parent_deletes, members, graph)
                continue
            child_ops = {i for i, s in members if s.table == child}
            if not child_ops:
                continue
            if rule == "restrict":
                _children_first(parent, parent_deletes, [(i, s) for i, s in members if i in child_ops], graph)
            else:
                _queue_order(sorted({i for i, _ in parent_deletes} | child_ops), child_ops, graph)


def _children_first(
    parent: str, deletes: list[tuple[int, Step]], child_ops: list[tuple[int, Step]], graph: _Graph
) -> None:
    """NO ACTION/RESTRICT: a parent row is deleted after the transaction's operations on the child
    table, except those that reference that very row (they need it back: its re-creation, which the
    reference edges order, comes after the delete)."""
    referencing: dict[Hashable, set[int]] = {}
    for i, step in child_ops:
        for ref_table, row in step.refs:
            if ref_table == parent:
                referencing.setdefault(row, set()).add(i)
    everyone = {i for i, _ in child_ops}
    shared = graph.barrier(everyone)
    for d, step in deletes:
        if step.row in referencing:
            for i in everyone - referencing[step.row]:
                graph.add(i, d)
        else:
            graph.add(shared, d)


def _self_reference(
    table: str, deletes: list[tuple[int, Step]], members: list[tuple[int, Step]], graph: _Graph
) -> None:
    """A row is deleted after the rows that currently reference it, and after the writes that make a
    row reference it."""
    by_row = {s.row: i for i, s in deletes}
    for i, step in deletes:
        if step.current_parent is not None and step.current_parent in by_row:
            graph.add(i, by_row[step.current_parent])
    for i, step in members:
        if step.kind != "DELETE":
            for ref_table, row in step.refs:
                if ref_table == table and row in by_row:
                    graph.add(i, by_row[row])


def _queue_order(positions: list[int], child_ops: set[int], graph: _Graph) -> None:
    """Keep queue order between two classes of steps (parent deletes, child-table operations) with a
    barrier per switch of class: O(n) edges."""
    last_barrier: dict[bool, int | None] = {True: None, False: None}
    pending: dict[bool, set[int]] = {True: set(), False: set()}
    for i in positions:
        is_child = i in child_ops
        other = not is_child
        if pending[other]:
            members = set(pending[other])
            previous = last_barrier[other]
            if previous is not None:
                members.add(previous)
            last_barrier[other] = graph.barrier(members)
            pending[other] = set()
        previous = last_barrier[other]
        if previous is not None:
            graph.add(previous, i)
        pending[is_child].add(i)


def _slot_key(step: Step, rank: int) -> tuple[int, int, int]:
    if step.kind == "DELETE":
        return (1, -rank, 0)
    return (0, rank, _KIND_ORDER[step.kind])


def _topological(graph: _Graph) -> list[int] | None:
    """Kahn's algorithm over steps and barriers, queue order among the ready steps; ``None`` on a cycle."""
    total = len(graph.before)
    after: list[list[int]] = [[] for _ in range(total)]
    waiting = [len(b) for b in graph.before]
    for b, preds in enumerate(graph.before):
        for a in preds:
            after[a].append(b)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        a = heapq.heappop(ready)
        order.append(a)
        for b in after[a]:
            waiting[b] -= 1
            if waiting[b] == 0:
                heapq.heappush(ready, b)
    return order if len(order) == total else None


Slot = tuple[int, int, int, int]


def plan(steps: Sequence[Step], tables: Tables) -> Plan:
    """Order the steps of one group (queue order: transaction by transaction, operation by operation)
    into batches.

    Returns:
        the batches in execution order; every step is in exactly one batch.
    """
    if not steps:
        return Plan(())
    graph = _edges(steps, tables)
    order = list(range(len(steps))) if not any(graph.before) else _topological(graph)
    if order is None:
        return Plan(tuple(Batch(s.table, s.kind, (i,)) for i, s in enumerate(steps)), ordered=False)
    ranks = table_ranks(tables, [s.table for s in steps])
    slots: list[Slot] = [(0, 0, 0, 0)] * len(graph.before)
    for b in order:
        if b >= graph.steps:  # a barrier sits at the latest of its members
            slots[b] = max((slots[a] for a in graph.before[b]), default=(0, 0, 0, 0))
            continue
        step = steps[b]
        key = _slot_key(step, ranks[step.table])
        round_ = 0
        for a in graph.before[b]:
            other = slots[a]
            round_ = max(round_, other[0] if key > other[1:] else other[0] + 1)
        slots[b] = (round_, *key)
    buckets: dict[tuple[object, ...], list[int]] = {}
    for b in order:
        if b < graph.steps:
            step = steps[b]
            buckets.setdefault((*slots[b], step.table, step.columns), []).append(b)
    batches = []
    for bucket in sorted(buckets, key=lambda k: (k[:4], buckets[k][0])):
        members = buckets[bucket]
        first = steps[members[0]]
        speculative = first.kind == "PUT" and first.table in tables.unique and len({steps[m].tx for m in members}) > 1
        batches.append(Batch(first.table, first.kind, tuple(members), speculative))
    return Plan(tuple(batches))


IndexValues = dict[str, object]
"""Values of a table's uniquely indexed columns, by column name (a column absent: unknown)."""


def transient_collision(
    transitions: Sequence[tuple[Hashable, IndexValues | None, IndexValues]], indexes: Sequence[tuple[str, ...]]
) -> bool:
    """Would writing these rows one at a time, in order, meet a duplicate among the rows themselves?

    A batch statement checks unique indexes in an order of its own (SQL Server at the end of the
    statement, PostgreSQL and MySQL row by row in the order it happens to visit them), so a batch can
    succeed where queue order fails (two rows swapping values) or the other way round. When this says
    True, the batch is written one row per statement, in order, and the database decides exactly as
    it would in queue order (DESIGN.md section 3: a unique-value swap comes out as queue order would).

    Args:
        transitions: per row, in order: its identity, the values it holds now (``None`` for a row that
            does not exist yet) and the values it will hold (columns not written keep theirs).
        indexes: column sets of the unique indexes (the key's excluded).

    Returns:
        True when some row's new values equal, on some index, what another row of the batch holds at
        that moment. NULL never collides; text compares case-insensitively (the safe side).
    """
    holders: _Holders = {}
    held: dict[Hashable, IndexValues] = {}
    for row, old, _ in transitions:
        if old is not None:
            held[row] = dict(old)
            _move(holders, row, {}, old, indexes)
    for row, old, new in transitions:
        before = held.get(row, old or {})
        after = {**before, **new}
        for number, columns in enumerate(indexes):
            wanted = _index_tuple(after, columns)
            if wanted is not None and holders.get((number, wanted), set()) - {row}:
                return True
        _move(holders, row, before, after, indexes)
        held[row] = after
    return False


_Holders = dict[tuple[int, tuple[object, ...]], set[Hashable]]
"""(index number, index values) -> the rows holding those values."""


def _move(
    holders: _Holders, row: Hashable, before: IndexValues, after: IndexValues, indexes: Sequence[tuple[str, ...]]
) -> None:
    """``row`` no longer holds its ``before`` values on each index, and now holds its ``after`` ones."""
    for number, columns in enumerate(indexes):
        previous, value = _index_tuple(before, columns), _index_tuple(after, columns)
        if previous is not None:
            holders.get((number, previous), set()).discard(row)
        if value is not None:
            holders.setdefault((number, value), set()).add(row)


def _index_tuple(values: IndexValues, columns: tuple[str, ...]) -> tuple[object, ...] | None:
    """The index's values, text case-folded; ``None`` when one is NULL or unknown."""
    out = []
    for column in columns:
        if column not in values or values[column] is None:
            return None
        value = values[column]
        out.append(value.casefold() if isinstance(value, str) else identity(value))
    return tuple(out)
