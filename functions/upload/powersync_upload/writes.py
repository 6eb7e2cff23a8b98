"""Executing prepared operations inside the open transaction: one at a time, or in runs.

A *run* is a sequence of consecutive operations of one kind (PUT, PATCH or DELETE) on one table,
writing the same columns, with distinct ids; it ends where another table, another kind, another set
of columns or a repeated id begins, so queue order is kept. A run of several operations costs one
ownership read, one read per referenced parent table and one write statement (the dialect's
``*_many`` functions) instead of that many per operation. Where the upsert itself only updates rows
the caller owns (``guarded_upsert``: PostgreSQL, SQLite), a PUT run skips the ownership read: fewer
rows written than sent means someone else's row, and the transaction is re-run per operation.

Any fatal finding in a run raises :class:`~powersync_upload.errors.FatalOpError`; the engine then
re-runs the transaction one operation at a time (:func:`execute_one`) to name the failing operation.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from .convert import convert
from .dialects import Dialect
from .errors import ErrorCode, FatalOpError, RetryableError
from .prepare import ParentRef, Prepared, same
from .schema import Column

Item = tuple[int, Prepared]
"""An operation's index in its transaction, and the operation prepared."""


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
        written = dialect.upsert(conn, target.schema, target.key, item.key_value, item.values, item.nulls, guard)
        if written == 0:
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table)
        return False
    if operation.op == "PATCH":
        return dialect.update(conn, target.schema, target.key, item.key_value, item.values) == 0
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
    """A key as the database compares it, for set and dict lookups (text case-folded: a collation may
    treat 'A' and 'a' as the same row; splitting a run there is always safe)."""
    return value.casefold() if isinstance(value, str) else value


def runs(items: list[Item]) -> list[list[Item]]:
    """Split prepared operations into runs (see the module docstring), in order."""
    result: list[list[Item]] = []
    current: list[Item] = []
    seen: set[Hashable] = set()
    shape: tuple[Any, ...] = ()
    for item in items:
        prepared = item[1]
        item_shape = (prepared.target.schema.name, prepared.operation.op, tuple(prepared.values))
        identity = _identity(prepared.key_value)
        if current and (item_shape != shape or identity in seen):
            result.append(current)
            current, seen = [], set()
        current.append(item)
        seen.add(identity)
        shape = item_shape
    if current:
        result.append(current)
    return result


def execute(conn: Any, dialect: Dialect, items: list[Item], remaining: Callable[[], float]) -> list[int]:
    """Run prepared operations in runs.

    Args:
        remaining: seconds left before the request's deadline.

    Returns:
        indices of PATCH operations that found no row (``ROW_NOT_FOUND`` warnings).

    Raises:
        FatalOpError: a run cannot be applied (the engine re-runs the transaction per operation).
        RetryableError: the deadline is near.
    """
    missing: list[int] = []
    for run in runs(items):
        if len(run) == 1:
            index, prepared = run[0]
            if execute_one(conn, dialect, prepared):
                missing.append(index)
        else:
            missing.extend(_execute_run(conn, dialect, run))
        if remaining() <= 1.0:
            raise RetryableError("deadline", retry_after_ms=1000)
    return missing


def _execute_run(conn: Any, dialect: Dialect, run: list[Item]) -> list[int]:
    first = run[0][1]
    target, op, table = first.target, first.operation.op, first.operation.table
    schema, key = target.schema, target.key
    active = run
    missing: list[int] = []
    if first.owner is not None and not (op == "PUT" and dialect.guarded_upsert):
        keys = [p.key_value for _, p in run]
        owners = _lookup(dialect.select_many(conn, schema, key, keys, first.owner, "update"), key)
        for _, prepared in run:
            identity = _identity(prepared.key_value)
            if identity in owners and not same(owners[identity], prepared.me, first.owner):
                raise FatalOpError(ErrorCode.UNAUTHORIZED, table=table)
        if op != "PUT":
            active = [(i, p) for i, p in run if _identity(p.key_value) in owners]
            missing = [i for i, p in run if _identity(p.key_value) not in owners] if op == "PATCH" else []
    elif op == "PATCH":
        keys = [p.key_value for _, p in run]
        existing = _lookup(dialect.select_many(conn, schema, key, keys, key, "update"), key)
        active = [(i, p) for i, p in run if _identity(p.key_value) in existing]
        missing = [i for i, p in run if _identity(p.key_value) not in existing]
    if op != "DELETE":
        _check_parents(conn, dialect, active, table)
    if not active:
        return missing
    rows = [(p.key_value, p.values) for _, p in active]
    if op == "PUT":
        written = dialect.upsert_many(conn, schema, key, rows, first.nulls, first.owner)
        if first.owner is not None and written < len(rows):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=table)  # a row someone else inserted meanwhile
    elif op == "PATCH":
        dialect.update_many(conn, schema, key, rows)
    else:
        dialect.delete_many(conn, schema, key, [p.key_value for _, p in active])
    return missing


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
