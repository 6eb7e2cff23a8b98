"""Conflict checks: each write on a table with ``conflicts``, ``deltas`` or ``rules`` is checked against
its current row, read under the write's lock, and becomes what to write, a ``CONFLICT``, or a skip with
a ``CONFLICT_SKIPPED`` warning (DESIGN.md section 3, "Conflicts").

The pure decisions are :mod:`powersync_upload.conflicts`; this module reads the rows through the
dialect (``select_rows``: one locking read per operation, or per planned batch), turns a finding into
an error or a warning, and builds the ``powersync_upload_conflicts`` row. Where to look:

* :func:`check_one` / :func:`check_batch`: the two entry points (one operation; one planned batch);
* :func:`_change_of`: what the client sent, as the checks see it (``needs_previous_value`` is raised here);
* :func:`_adjusted`: rules, detection and deltas against the locked row, and the write to run instead
  (a delta column as an increment, ``SET c = c + (new - old)``);
* :func:`_conflicting`: a finding as ``CONFLICT`` (``reject``) or ``CONFLICT_SKIPPED`` (``skip``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from . import conflicts, plan
from .config import TableConfig, schema_problems
from .contract import OperationWarning, Transaction
from .convert import InvalidValue, convert
from .errors import CONFIG_HINT, ErrorCode, FatalOpError, Reason
from .prepare import Prepared, PreparedTransaction, SchemaChecks, Target, client_column, fits_schema
from .schema import Column, TableSchema
from .session import Session

logger = logging.getLogger(__name__)

Member = tuple[PreparedTransaction, int, Prepared]
"""One operation of a group: its transaction, its index there, and its prepared write."""

_CHECKS: SchemaChecks = {}
_RULES: dict[str, tuple[TableSchema, TableConfig, conflicts.TableRules]] = {}
"""Compiled rules per client table, for the schema object and configuration they were compiled from."""


def _table_rules(session: Session, target: Target) -> conflicts.TableRules:
    """The table's compiled rules. The schema check of DESIGN.md section 4 runs here, at first use of
    an introspected table (again after a schema refresh; :func:`~powersync_upload.prepare.fits_schema`):
    a problem is logged and counted once per schema, and the table's operations are then
    ``SCHEMA_MISMATCH``."""
    table, schema, name = target.config, target.schema, target.client_table
    if not table.reads_rows:
        return conflicts.NO_RULES
    if not fits_schema(_CHECKS, schema_problems, name, table, schema, session.counters):
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=name, hint=CONFIG_HINT)
    cached = _RULES.get(name)
    if cached is None or cached[0] is not schema or cached[1] is not table:
        cached = _RULES[name] = (schema, table, conflicts.compile_rules(table, schema))
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


def check_one(
    session: Session, conn: Any, transaction: Transaction, op_index: int, item: Prepared, rows: list[dict[str, Any]]
) -> tuple[Prepared | None, OperationWarning | None]:
    """Check one prepared operation against its current row (one locking read); give what to write.

    Returns:
        ``(write, warning)`` as :func:`_adjusted` gives them; ``(item, None)`` for a table without
        conflicts, deltas or rules; ``(None, None)`` for a PATCH that sent only the version.

    Raises:
        FatalOpError: as :func:`_change_of` and :func:`_adjusted` raise.
    """
    rules = _table_rules(session, item.target)
    if not rules.active:
        return item, None
    change, values = _change_of(item, rules)
    if change is None:
        return None, None
    current = _current_rows(session, conn, [item], rules, change.values).get(plan.identity(item.key_value))
    return _adjusted(session, conn, transaction, op_index, item, rules, change, values, current, rows)


def check_batch(
    session: Session,
    conn: Any,
    members: list[Member],
    rows: list[dict[str, Any]],
    skipped: dict[int, list[OperationWarning]],
) -> list[list[tuple[int, Prepared]]] | None:
    """The checks of a planned batch on a table with conflicts, deltas or rules: one locking read of
    every row of the batch (``select_rows``), then :func:`_adjusted` per operation.

    Returns:
        ``None`` for a table without them (run the batch as it is); otherwise the writes to run, as
        sub-batches of ``(position in members, write)`` with the same columns and the same
        incremented columns (``Prepared.adds``) each: deltas change no column set, but a row that
        gets no new version, an insert, or a delta written unchecked may differ from the rest.
        Skipped operations are left out, their warnings added to ``skipped``.

    Raises:
        FatalOpError: as :func:`_change_of` and :func:`_adjusted` raise (the engine then applies the
            transaction one operation at a time, which names the operation).
    """
    rules = _table_rules(session, members[0][2].target)
    if not rules.active:
        return None
    changes: list[tuple[int, conflicts.Change, dict[str, Any]]] = []
    for position, (_, _, item) in enumerate(members):
        change, values = _change_of(item, rules)
        if change is not None:
            changes.append((position, change, values))
    written = {name: None for _, change, _ in changes for name in change.values}
    found = _current_rows(session, conn, [members[p][2] for p, _, _ in changes], rules, written) if changes else {}
    parts: dict[tuple[tuple[str, ...], frozenset[str]], list[tuple[int, Prepared]]] = {}
    for position, change, values in changes:
        tx, index, item = members[position]
        current = found.get(plan.identity(item.key_value))
        write, warning = _adjusted(session, conn, tx.transaction, index, item, rules, change, values, current, rows)
        if warning is not None:
            skipped.setdefault(tx.position, []).append(warning)
        if write is not None:
            parts.setdefault((tuple(write.values), write.adds), []).append((position, write))
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
            ErrorCode.INVALID_DATA,
            table=operation.table,
            column=column,
            reason=Reason.NEEDS_PREVIOUS_VALUE,
            hint=conflicts.missing_hint(change),
        )
    if operation.op == "PATCH" and not values:
        return None, {}
    return change, values


def _adjusted(
    session: Session,
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
        ``(write, warning)``: ``write`` is the item to execute (the version the client saw removed,
        the next version in its values, and each delta column's increment ``new - old`` in its
        values and named in ``adds``, so the write is ``SET c = c + increment``: a total never goes
        back, even where a lock did not hold), or ``None`` to skip it with a ``CONFLICT_SKIPPED``
        ``warning`` (its conflict row appended to ``rows``). The delta's result is computed here
        from the locked row only to check it (out of range: ``INVALID_DATA``).

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
            return None, _conflicting(session, conn, transaction, op_index, item, finding, current, rules, rows)
        increments = conflicts.delta_increments(current, change, rules)
        values.update(increments)
    except FatalOpError as exc:
        if exc.code is not ErrorCode.CONFLICT:
            exc.table, exc.column = operation.table, client_column(names, exc.column or "")
        raise
    version = rules.version if rules.version is not None and rules.version.writable else None  # not a rowversion
    if version is not None and conflicts.changed_columns(current, change, target.schema.columns):
        values[version.name] = _next_version(current, version, operation.table, names)
    write = replace(item, values=values, adds=frozenset(increments))
    return write, _unchecked(change, rules, op_index, operation.table, names)


def _unchecked(
    change: conflicts.Change, rules: conflicts.TableRules, op_index: int, table: str, names: TableConfig
) -> OperationWarning | None:
    """The ``CONFLICT_UNCHECKED`` warning when ``missing_previous: apply`` wrote the change without its
    check or delta (its entry carried no previous values), else ``None``."""
    column = conflicts.unchecked(change, rules)
    if column is None:
        return None
    details = {"table": table, "column": client_column(names, column)}
    return OperationWarning(operation_index=op_index, code="CONFLICT_UNCHECKED", details=details)


def _current_rows(
    session: Session, conn: Any, items: list[Prepared], rules: conflicts.TableRules, written: Mapping[str, Any]
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
    found = session.db.dialect.select_rows(conn, schema, key, keys, list(wanted.values()), "update")
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
    session: Session,
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
    row = _conflict_row(session, transaction, item, finding, current)
    column = client_column(item.target.config, finding.column)
    if rules.on_conflict == "reject":
        error = FatalOpError(ErrorCode.CONFLICT, table=operation.table, column=column, reason=finding.reason)
        error.conflict_row = row
        raise error
    details = {"table": operation.table, "column": column, "reason": finding.reason.value}
    if session.db.table(conn, conflicts.TABLE) is not None:
        rows.append(row)
        details["conflict_id"] = row["id"]
    else:
        logger.warning(
            "conflicts table not found; a skipped conflict is not recorded", extra={"table": operation.table}
        )
        session.counters.unrecorded_conflicts += 1
    return OperationWarning(operation_index=op_index, code="CONFLICT_SKIPPED", details=details)


def _conflict_row(
    session: Session, transaction: Transaction, item: Prepared, finding: conflicts.Finding, current: dict[str, Any]
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
        "user_id": conflicts.text_field(session.caller.user_id, 255),
        "client_id": conflicts.text_field(session.client_id, 255),
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
