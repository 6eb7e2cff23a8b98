"""Executing a plan inside the open transaction: a batch as one statement set, or one operation at a time.

A batch (:class:`~powersync_upload.plan.Batch`) is operations of one kind on one table, writing the
same columns (and adding to the same delta columns, ``Prepared.adds``), on distinct rows; it costs
one ownership read, one read per referenced parent table and one write statement (the dialect's
``*_many`` functions) instead of that many per operation. Where the upsert itself only updates rows
the caller owns (``guarded_upsert``: PostgreSQL, SQLite), a PUT batch skips the ownership read: fewer
rows written than sent means someone else's row.

Any fatal finding in a batch raises :class:`~powersync_upload.errors.FatalOpError`; the engine then
applies the group in smaller parts, down to one statement per operation (:func:`execute_one`) in the
planner's order, to name the failing operation.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .convert import InvalidValue, convert
from .dialects import Dialect, PutRow, PutRows
from .errors import ErrorCode, FatalOpError
from .plan import identity, transient_collision
from .prepare import ParentRef, Prepared, same
from .schema import Column

Item = tuple[int, Prepared]
"""A position (in the batch, or the operation's index in its transaction) and the operation prepared."""


Known = dict[tuple[str, Hashable], dict[str, Any]]
"""Values an attempt has written so far, per (server table, row identity): server column -> value
(columns whose value is not known, such as a database default kept by a PUT, are absent)."""


class SpeculationFailed(Exception):
    """A PUT batch of several client transactions on a table with a unique index besides the key met
    an existing row: the plan assumed inserts only (:attr:`powersync_upload.plan.Batch.speculative`)."""


def execute_one(conn: Any, dialect: Dialect, item: Prepared) -> bool:
    """Run one prepared operation. Returns True when a PATCH found no row (``ROW_NOT_FOUND``).

    Raises:
        FatalOpError: ``UNAUTHORIZED`` (the row or a referenced parent belongs to someone else),
            ``FOREIGN_KEY_VIOLATION`` (a referenced parent does not exist).
    """
    operation, target = item.operation, item.target
    guard = None
    if item.owner is not None:
        found, current = dialect.select_value(conn, target.schema, target.key, item.key_value, item.owner, "update")
        if found and not same(current, item.me, item.owner):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table)
        if not found and operation.op != "PUT":
            return operation.op == "PATCH"
        guard = (item.owner, item.me)
    for ref in item.parents:
        found, owner = dialect.select_value(
            conn, ref.parent.schema, ref.parent.key, ref.key_value, ref.checked, "share"
        )
        check_parent(ref, found, owner, operation.table, item.user_id)
    if operation.op == "PUT":
        written = dialect.upsert(
            conn, PutRow(target.schema, target.key, item.key_value, item.values, item.nulls, guard)
        )
        if written == 0:
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table)
        return False
    if operation.op == "PATCH":
        return dialect.update(conn, target.schema, target.key, item.key_value, item.values, item.adds) == 0
    dialect.delete(conn, target.schema, target.key, item.key_value)
    return False


def check_parent(ref: ParentRef, found: bool, owner: Any, table: str, user_id: str) -> None:
    """A referenced parent must exist and, when it has an owner, belong to the caller.

    Raises:
        FatalOpError: ``FOREIGN_KEY_VIOLATION`` (missing) or ``UNAUTHORIZED`` (someone else's).
    """
    if not found:
        raise FatalOpError(ErrorCode.FOREIGN_KEY_VIOLATION, table=table, column=ref.client_column)
    if ref.owned and not same(owner, user_id, ref.checked):
        raise FatalOpError(ErrorCode.UNAUTHORIZED, table=table, column=ref.client_column)


def _identity(value: Any) -> Hashable:
    """A key as the database compares it (see :func:`powersync_upload.plan.identity`)."""
    return identity(value)


def execute_batch(conn: Any, dialect: Dialect, items: list[Prepared], *, speculative: bool = False) -> list[int]:
    """Run one batch (see the module docstring).

    Args:
        items: the batch's operations, in the planner's order.
        speculative: a PUT batch that holds only if no row exists yet: written as inserts only
            (``upsert_many`` of a ``PutRows`` with ``only_new``), no extra statement.

    Returns:
        positions in ``items`` of PATCH operations that found no row (``ROW_NOT_FOUND`` warnings).

    Raises:
        FatalOpError: the batch cannot be applied as it is.
        SpeculationFailed: ``speculative`` and a row exists.
    """
    if len(items) == 1 and not speculative:
        return [0] if execute_one(conn, dialect, items[0]) else []
    return _execute_run(conn, dialect, list(enumerate(items)), speculative)


def _execute_run(conn: Any, dialect: Dialect, run: list[Item], speculative: bool = False) -> list[int]:
    first = run[0][1]
    op = first.operation.op
    if first.owner is not None and op != "PUT":
        return _guarded_run(conn, dialect, run)
    active, missing = _rows_to_write(conn, dialect, run, speculative)
    if op != "DELETE":
        _check_parents(conn, dialect, active, first.operation.table)
    if active:
        _write_run(conn, dialect, first, active, speculative)
    return missing


def _rows_to_write(conn: Any, dialect: Dialect, run: list[Item], speculative: bool) -> tuple[list[Item], list[int]]:
    """The rows a run writes, and the positions of PATCHes that found no row: an owned table whose
    upsert cannot guard itself reads its owners first (one locking read); a PATCH reads which rows exist.

    Raises:
        FatalOpError: ``UNAUTHORIZED``, a row is someone else's.
        SpeculationFailed: ``speculative`` and a row exists.
    """
    first = run[0][1]
    schema, key = first.target.schema, first.target.key
    keys = [p.key_value for _, p in run]
    if first.owner is not None and not dialect.guarded_upsert:
        owners = _lookup(dialect.select_many(conn, schema, key, keys, first.owner, "update"), key)
        if speculative and owners:
            raise SpeculationFailed
        _check_owners(run, owners, first.owner, first.operation.table)
        return run, []
    if first.operation.op == "PATCH":
        existing = _lookup(dialect.select_many(conn, schema, key, keys, key, "update"), key)
        active = [(i, p) for i, p in run if _identity(p.key_value) in existing]
        return active, [i for i, p in run if _identity(p.key_value) not in existing]
    return run, []


def _write_run(conn: Any, dialect: Dialect, first: Prepared, active: list[Item], speculative: bool) -> None:
    """The run's one write statement (``upsert_many``, ``update_many`` or ``delete_many``).

    Raises:
        FatalOpError: ``UNAUTHORIZED``, an owned PUT wrote fewer rows than sent (someone else's row).
        SpeculationFailed: ``speculative`` and a row exists.
    """
    schema, key, op = first.target.schema, first.target.key, first.operation.op
    rows = [(p.key_value, p.values) for _, p in active]
    if op == "PUT":
        written = dialect.upsert_many(conn, PutRows(schema, key, rows, first.nulls, first.owner, speculative))
        if speculative and written < len(rows):
            raise SpeculationFailed
        if first.owner is not None and written < len(rows):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=first.operation.table)  # inserted meanwhile
    elif op == "PATCH":
        dialect.update_many(conn, schema, key, rows, adds=first.adds)
    else:
        dialect.delete_many(conn, schema, key, [p.key_value for _, p in active])


def _check_owners(run: list[Item], owners: dict[Hashable, Any], owner: Column, table: str) -> None:
    """Every row of ``run`` found in ``owners`` must be the caller's (``UNAUTHORIZED`` otherwise)."""
    for _, prepared in run:
        identity = _identity(prepared.key_value)
        if identity in owners and not same(owners[identity], prepared.me, owner):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=table)


def _guarded_run(conn: Any, dialect: Dialect, run: list[Item]) -> list[int]:
    """PATCH or DELETE on an owned table: the write itself is limited to the caller's rows (one
    statement); only when it touched fewer rows than sent does one locking read tell missing rows
    (``ROW_NOT_FOUND`` for a PATCH, nothing for a DELETE) from someone else's (``UNAUTHORIZED``)."""
    first = run[0][1]
    target, table, owner = first.target, first.operation.table, first.owner
    assert owner is not None
    schema, key = target.schema, target.key
    guard = (owner, first.me)
    if first.operation.op == "PATCH":
        rows = [(p.key_value, p.values) for _, p in run]
        touched = dialect.update_many(conn, schema, key, rows, guard, first.adds)
    else:
        touched = dialect.delete_many(conn, schema, key, [p.key_value for _, p in run], guard)
    active, missing = run, []
    if touched < len(run):
        keys = [p.key_value for _, p in run]
        owners = _lookup(dialect.select_many(conn, schema, key, keys, owner, "update"), key)
        _check_owners(run, owners, owner, table)
        active = [(i, p) for i, p in run if _identity(p.key_value) in owners]
        missing = [i for i, p in run if _identity(p.key_value) not in owners]
    if first.operation.op == "PATCH":
        _check_parents(conn, dialect, active, table)
        return missing
    return []


def _lookup(rows: list[tuple[Any, Any]], key: Column) -> dict[Hashable, Any]:
    """Rows read back, by key as converted for the key column (drivers return UUIDs as text or objects)."""
    return {_identity(convert(found, key)): value for found, value in rows}


def _check_parents(conn: Any, dialect: Dialect, run: list[Item], table: str) -> None:
    """One read per referenced parent table for the whole run."""
    refs_by_column: dict[str, list[tuple[Prepared, ParentRef]]] = {}
    for _, prepared in run:
        for ref in prepared.parents:
            refs_by_column.setdefault(ref.client_column, []).append((prepared, ref))
    for pairs in refs_by_column.values():
        sample = pairs[0][1]
        wanted = list({_identity(ref.key_value): ref.key_value for _, ref in pairs}.values())
        rows = dialect.select_many(conn, sample.parent.schema, sample.parent.key, wanted, sample.checked, "share")
        found = _lookup(rows, sample.parent.key)
        for prepared, ref in pairs:
            identity = _identity(ref.key_value)
            check_parent(ref, identity in found, found.get(identity), table, prepared.user_id)


def row_by_row(conn: Any, dialect: Dialect, items: list[Prepared], known: Known) -> bool:
    """Whether a PATCH batch must be written one row per statement, in order, so that unique indexes
    meet the rows as queue order would (a swap of unique values between rows; DESIGN.md section 3).

    Only on dialects whose batch statements visit rows in their own order (``ordered_batches`` False),
    for a PATCH of two or more rows that sets a column of a unique index besides the key. The rows'
    current values come from ``known`` (what this attempt wrote) or from one locking read of the
    others (``select_rows``, the lock the write takes anyway).
    """
    first = items[0]
    schema, key = first.target.schema, first.target.key
    if dialect.ordered_batches or len(items) < 2 or first.operation.op != "PATCH" or not schema.unique:
        return False
    indexed = {name for columns in schema.unique for name in columns}
    if not indexed & set(first.values):
        return False
    if indexed & first.adds:
        return True  # an indexed delta column: its new values are not known here; queue order is safe
    columns = [schema.columns[name] for name in sorted(indexed) if name in schema.columns]
    held: dict[Hashable, dict[str, Any]] = {}
    unknown: list[Prepared] = []
    for item in items:
        row = identity(item.key_value)
        have = known.get((schema.name, row))
        if have is not None and all(c.name in have for c in columns):
            held[row] = {c.name: have[c.name] for c in columns}
        else:
            unknown.append(item)
    if unknown:
        found = dialect.select_rows(conn, schema, key, [i.key_value for i in unknown], columns, "update")
        for found_key, values in found:
            held[identity(convert(found_key, key))] = {n: _comparable(v, schema.columns[n]) for n, v in values.items()}
    transitions = [
        (row, held[row], {n: v for n, v in item.values.items() if n in indexed})
        for item in items
        if (row := identity(item.key_value)) in held
    ]
    return transient_collision(transitions, schema.unique)


def _comparable(value: Any, column: Column) -> Any:
    """A value read back, converted as a client value for that column is (so both compare alike)."""
    try:
        return convert(value, column)
    except InvalidValue:
        return value


def remember(known: Known, items: list[Prepared]) -> None:
    """Note what a batch (or one operation) just wrote, for :func:`row_by_row`, which reads it only for
    tables with a unique index besides the key: the writes to other tables are not noted."""
    for item in items:
        if not item.target.schema.unique:
            continue
        where = (item.target.schema.name, identity(item.key_value))
        op = item.operation.op
        if op == "PUT":
            known[where] = {**dict.fromkeys(item.nulls), **item.values}
        elif op == "PATCH":
            if where in known:
                known[where].update(item.values)
                for name in item.adds:  # an increment, not the stored total
                    del known[where][name]
        else:
            known.pop(where, None)
