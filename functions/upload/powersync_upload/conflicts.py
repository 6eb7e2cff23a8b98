"""Conflict detection, deltas and business rules: the pure core (DESIGN.md section 3, "Conflicts").

:func:`check` takes the row as the transaction has left it so far, one operation (:class:`Change`) and
the table's compiled configuration (:class:`TableRules`), and returns a :class:`Finding` or ``None``.
Checks run in DESIGN's order after schema, conversion, ownership and row-missing (the engine's):
rules (``frozen_when``, ``transitions``), then detection (``previous_values`` or ``version``). Delta
columns are never conflict-checked; a PATCH of them writes :func:`delta_increments` (``SET c = c +
(new - old)``), after :func:`delta_values` checked ``current + (new - old)`` on the row read under the
write's lock. Equality (:func:`same`) is exact and computed in Python on converted values.

Nothing here reads a row, a clock or a random number: the engine reads rows through the dialect
(``select_rows``), calls these functions and then writes, raises or warns. A finding is a value; the
engine turns it into ``CONFLICT`` (``on_conflict: reject``) or a ``CONFLICT_SKIPPED`` warning (``skip``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from .config import CONFLICTS_TABLE, TableConfig
from .convert import InvalidValue, convert
from .errors import ConflictReason, ErrorCode, FatalOpError, Reason
from .schema import Column, Kind, TableSchema

TABLE = CONFLICTS_TABLE
"""The conflicts table (``db/migrations/<dialect>/003_powersync_upload_conflicts.sql``), synced to the user."""

_FIXED_WIDTH = ("char", "nchar", "bpchar", "character")


@dataclass(frozen=True)
class TableRules:
    """A table's ``conflicts``, ``deltas`` and ``rules``, by server column, rule values converted.

    Attributes:
        detect: ``none``, ``previous_values`` or ``version``.
        on_conflict: ``reject`` or ``skip`` (the engine's business; kept here for one lookup).
        missing_previous: ``reject``, ``apply`` or ``None`` (unset): an entry without previous values
            at all on a change that needs them (:func:`unchecked`); unset rejects a delta or version
            change and applies a ``previous_values`` PATCH unchecked, with the warning.
        version: the version column, with ``detect: version``.
        deltas: delta columns.
        frozen_when: column -> values that freeze the row.
        transitions: column -> (from value, allowed to values) pairs; a NULL current value allows any.
        columns: every server column named above, by name (the read the engine makes).
    """

    detect: Literal["none", "previous_values", "version"] = "none"
    on_conflict: Literal["reject", "skip"] = "reject"
    missing_previous: Literal["reject", "apply"] | None = None
    version: Column | None = None
    deltas: tuple[Column, ...] = ()
    frozen_when: tuple[tuple[Column, tuple[Any, ...]], ...] = ()
    transitions: tuple[tuple[Column, tuple[tuple[Any, tuple[Any, ...]], ...]], ...] = ()
    columns: Mapping[str, Column] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether the table needs the current row before a write."""
        return self.detect != "none" or bool(self.deltas or self.frozen_when or self.transitions)


NO_RULES = TableRules()


def compile_rules(table: TableConfig, schema: TableSchema) -> TableRules:
    """The table's configuration against its introspected columns. Run after
    :func:`~powersync_upload.config.schema_problems` found nothing (a name it cannot resolve is left out).
    """

    def column(client: str) -> Column | None:
        return schema.column(table.server_column(client))

    def values(col: Column, raw: list[Any]) -> tuple[Any, ...]:
        return tuple(convert(v, col) for v in raw)

    version = column(table.conflicts.version_column) if table.conflicts.version_column else None
    deltas = tuple(c for c in (column(name) for name in table.deltas) if c is not None)
    frozen = tuple((c, values(c, v)) for n, v in table.rules.frozen_when.items() if (c := column(n)) is not None)
    moves = tuple(
        (c, tuple((convert(source, c), values(c, targets)) for source, targets in by_source.items()))
        for n, by_source in table.rules.transitions.items()
        if (c := column(n)) is not None
    )
    named = [*deltas, *(c for c, _ in frozen), *(c for c, _ in moves), *([version] if version else [])]
    return TableRules(
        detect=table.conflicts.detect,
        on_conflict=table.conflicts.on_conflict,
        missing_previous=table.conflicts.missing_previous,
        version=version,
        deltas=deltas,
        frozen_when=frozen,
        transitions=moves,
        columns={c.name: c for c in named},
    )


@dataclass(frozen=True)
class Change:
    """One operation as the checks see it (after conversion and authorization).

    Attributes:
        op: ``PUT``, ``PATCH`` or ``DELETE``.
        values: server column -> converted new value, in data order (PUT: with the columns it sets
            to NULL); without the version column, which is compared, never written.
        old: server column -> the client's previous value as sent (``None`` when the entry has no ``old``).
        version_seen: with ``detect: version``, the version the client saw (``old`` first, else
            ``data``), as sent; ``None`` when it sent none.
    """

    op: Literal["PUT", "PATCH", "DELETE"]
    values: Mapping[str, Any]
    old: Mapping[str, Any] | None = None
    version_seen: Any = None


@dataclass(frozen=True)
class Finding:
    """A conflict or a refused rule.

    Attributes:
        reason: ``stale``, ``version``, ``frozen`` or ``transition``.
        column: the server column named in ``details.column`` (the first stale one in data order).
        involved: the server columns whose client and server values the conflicts table records.
    """

    reason: ConflictReason
    column: str
    involved: tuple[str, ...]


def comparable(value: Any, column: Column) -> Any:
    """A value (client-sent, converted, or as a driver returns it) in the form equality uses: text
    code point for code point (a fixed-width ``char(n)``'s trailing spaces dropped), numbers at the
    column's type, timestamps as instants at the column's precision, JSON as parsed values."""
    if value is None:
        return None
    if column.kind is Kind.JSON:
        if isinstance(value, (str, bytes)):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    if isinstance(value, timedelta) and column.kind is Kind.TIME:  # PyMySQL reads TIME as a duration
        value = (datetime(2000, 1, 1) + value).time()
    try:
        converted = convert(value, column)
    except InvalidValue:
        return ("invalid", repr(value))  # equal to nothing the column can hold
    if isinstance(converted, str) and column.type_name.lower().split("(")[0].strip() in _FIXED_WIDTH:
        return converted.rstrip(" ")
    return converted


def same(a: Any, b: Any, column: Column) -> bool:
    """Exact equality as DESIGN section 3 defines it; NULL equals NULL."""
    return bool(comparable(a, column) == comparable(b, column))


def changed_columns(current: Mapping[str, Any], change: Change, columns: Mapping[str, Column]) -> list[str]:
    """Server columns the change really changes (setting a column to its current value is not a change)."""
    out = []
    for name, new in change.values.items():
        col = columns.get(name)
        if name not in current or col is None or not same(current[name], new, col):
            out.append(name)
    return out


def check(
    current: Mapping[str, Any] | None, change: Change, rules: TableRules, columns: Mapping[str, Column]
) -> Finding | None:
    """Rules, then conflict detection, against the row as the transaction has left it so far.

    Args:
        current: server column -> value of the existing row (at least every column of
            ``rules.columns`` and of ``change.values``); ``None`` when the row does not exist (an
            insert, or ``ROW_NOT_FOUND``: nothing to check).
        change: the operation.
        rules: the table's :class:`TableRules`.
        columns: the table's columns by server name.

    Returns:
        the first :class:`Finding`, or ``None`` when the operation may be applied.

    Raises:
        FatalOpError: ``INVALID_DATA`` ``needs_previous_value``: ``detect: version`` and an update of an
            existing row that does not say which version it saw.
    """
    if current is None or not rules.active:
        return None
    changed = [] if change.op == "DELETE" else changed_columns(current, change, columns)
    if change.op != "DELETE" and not changed:
        return None  # nothing changes: not a change for rules, nothing to conflict with
    found = _rules(current, change, rules, changed)
    if found is not None:
        return found
    if change.op == "DELETE":
        return None  # deletes win
    if rules.detect == "previous_values" and change.op == "PATCH":
        if change.old is not None:
            return _stale(current, change, rules, columns)
        column = _needing_previous(change, rules)
        if column is not None and rules.missing_previous == "reject":
            raise FatalOpError(
                ErrorCode.INVALID_DATA, column=column, reason=Reason.NEEDS_PREVIOUS_VALUE, hint=NO_PREVIOUS_VALUES
            )
        return None  # apply: unchecked (CONFLICT_UNCHECKED)
    if rules.detect == "version" and rules.version is not None:
        return _version(current, change, rules, changed)
    return None


def _rules(current: Mapping[str, Any], change: Change, rules: TableRules, changed: list[str]) -> Finding | None:
    for col, frozen in rules.frozen_when:
        if any(same(current.get(col.name), value, col) for value in frozen):
            return Finding(ConflictReason.FROZEN, col.name, (col.name, *(c for c in changed if c != col.name)))
    for col, moves in rules.transitions:
        if col.name not in changed:
            continue
        now = current.get(col.name)
        if now is None:
            continue  # a NULL state allows any change
        allowed = next((targets for source, targets in moves if same(now, source, col)), ())
        if not any(same(change.values[col.name], target, col) for target in allowed):
            return Finding(ConflictReason.TRANSITION, col.name, (col.name,))
    return None


def _stale(
    current: Mapping[str, Any], change: Change, rules: TableRules, columns: Mapping[str, Column]
) -> Finding | None:
    assert change.old is not None
    deltas = {c.name for c in rules.deltas}
    stale = []
    for name, new in change.values.items():
        col = columns.get(name)
        if col is None or name in deltas or name not in change.old:
            continue  # old keys unknown to the server are ignored; deltas are never checked
        server = current.get(name)
        if not (same(server, change.old[name], col) or same(server, new, col)):  # equal to new: a replay
            stale.append(name)
    return Finding(ConflictReason.STALE, stale[0], tuple(stale)) if stale else None


def _version(current: Mapping[str, Any], change: Change, rules: TableRules, changed: list[str]) -> Finding | None:
    assert rules.version is not None
    version = rules.version
    if change.version_seen is None:
        if change.old is None and rules.missing_previous == "apply":
            return None  # unchecked (CONFLICT_UNCHECKED)
        hint = missing_hint(change)
        raise FatalOpError(ErrorCode.INVALID_DATA, column=version.name, reason=Reason.NEEDS_PREVIOUS_VALUE, hint=hint)
    if same(current.get(version.name), change.version_seen, version):
        return None
    return Finding(ConflictReason.VERSION, version.name, (version.name, *changed))


def delta_values(current: Mapping[str, Any], change: Change, rules: TableRules) -> dict[str, Any]:
    """What a PATCH leaves in its delta columns: ``current + (new - old)`` per column (NULL stays NULL,
    as ``SET c = c + ?`` leaves it), converted for the column. PUT overwrites delta columns: nothing.

    The write itself adds :func:`delta_increments`; this is the check that the result fits.

    Raises:
        FatalOpError: ``INVALID_DATA`` ``needs_previous_value`` (the entry has no non-null ``old`` for
            a delta column it changes), or the conversion's reason (a result out of the column's range).
    """
    return {col.name: result for col, _, result in _deltas(current, change, rules)}


def delta_increments(current: Mapping[str, Any], change: Change, rules: TableRules) -> dict[str, Any]:
    """What a PATCH adds to its delta columns (``SET c = c + increment``): ``new - old`` per column, of
    the column's Python type (``int``, ``Decimal`` at the column's scale, ``float``), after checking
    that ``current + increment`` fits the column (:func:`delta_values`, under the write's lock). The
    increment itself may exceed the column's range (only the sum must fit): dialects type it wider.

    Returns:
        server column -> increment; empty for a PUT, and for a delta written unchecked (no ``old`` at
        all with ``missing_previous: apply``: the value sent is written as it is).

    Raises:
        FatalOpError: as :func:`delta_values` raises.
    """
    return {col.name: increment for col, increment, _ in _deltas(current, change, rules)}


def _deltas(current: Mapping[str, Any], change: Change, rules: TableRules) -> list[tuple[Column, Any, Any]]:
    """``(column, increment, result)`` per delta column a PATCH changes (see :func:`delta_values`)."""
    out: list[tuple[Column, Any, Any]] = []
    if change.op != "PATCH":
        return out
    for col in rules.deltas:
        if col.name not in change.values:
            continue
        raw_old = (change.old or {}).get(col.name)
        new = change.values[col.name]
        if change.old is None and rules.missing_previous == "apply":
            continue  # unchecked: the value sent is written as it is (CONFLICT_UNCHECKED)
        if raw_old is None or new is None:
            hint = missing_hint(change)
            raise FatalOpError(ErrorCode.INVALID_DATA, column=col.name, reason=Reason.NEEDS_PREVIOUS_VALUE, hint=hint)
        try:
            increment = convert(new, col) - convert(raw_old, col)
            base = current.get(col.name)
            out.append((col, increment, None if base is None else convert(convert(base, col) + increment, col)))
        except InvalidValue as exc:
            raise FatalOpError(ErrorCode.INVALID_DATA, column=col.name, reason=exc.reason) from exc
    return out


def needs_old(change: Change, rules: TableRules) -> str | None:
    """The first delta column a PATCH changes without a non-null ``old`` for it (checked before any row
    is read: ``INVALID_DATA`` ``needs_previous_value``), else ``None``."""
    if change.op != "PATCH" or (change.old is None and rules.missing_previous == "apply"):
        return None
    for col in rules.deltas:
        if col.name in change.values and ((change.old or {}).get(col.name) is None or change.values[col.name] is None):
            return col.name
    return None


NO_PREVIOUS_VALUES = (
    "the connector sent no previous values for this operation: track previous values on this table in the "
    "app's schema and send them with each operation (previous_values in shape A, old in shape B), or set "
    "conflicts.missing_previous: apply for this table on the server to accept such changes unchecked"
)
"""The hint of a ``needs_previous_value`` rejection when the entry carried no previous values at all
(the reference connectors of the SDKs drop them): what the app developer can do about it."""


def missing_hint(change: Change) -> str | None:
    """:data:`NO_PREVIOUS_VALUES` when the entry carries no previous values at all, else ``None`` (it
    sent some, without the one needed: the plain ``needs_previous_value`` message says which)."""
    return NO_PREVIOUS_VALUES if change.old is None else None


def unchecked(change: Change, rules: TableRules) -> str | None:
    """The server column whose conflict check or delta this change goes without because its entry
    carries no previous values at all (with ``missing_previous: apply``, or unset for a
    ``previous_values`` check; the engine then warns ``CONFLICT_UNCHECKED``); ``None`` when nothing
    was skipped."""
    column = _needing_previous(change, rules)
    if column is None or rules.missing_previous == "apply":
        return column
    if rules.missing_previous is None and not _computed_from_previous(column, rules):
        return column  # unset: a previous_values PATCH goes unchecked, with the warning
    return None


def _computed_from_previous(column: str, rules: TableRules) -> bool:
    """Whether the write of ``column`` cannot be computed without a previous value (a delta, the
    version): such a change is rejected unless ``missing_previous: apply``."""
    return column in {c.name for c in rules.deltas} or (rules.version is not None and column == rules.version.name)


def _needing_previous(change: Change, rules: TableRules) -> str | None:
    """The first server column whose check or delta needs previous values the entry does not carry
    at all: a delta column a PATCH changes, a column a PATCH changes under ``detect:
    previous_values``, the version column under ``detect: version`` when no version was sent."""
    if change.old is not None or change.op == "DELETE":
        return None
    deltas = {c.name for c in rules.deltas}
    if change.op == "PATCH":
        delta = next((name for name in change.values if name in deltas), None)
        if delta is not None:
            return delta
        if rules.detect == "previous_values":
            return next((name for name in change.values if name not in deltas), None)
    if rules.detect == "version" and rules.version is not None and change.version_seen is None:
        return rules.version.name
    return None


def after(current: Mapping[str, Any] | None, change: Change, written: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row as the transaction leaves it after the operation (for the next check on the same row
    when rows are read once per batch): ``written`` is what the write set (deltas and version included)."""
    if change.op == "DELETE":
        return None
    if current is None and change.op == "PATCH":
        return None  # ROW_NOT_FOUND: nothing was created
    return {**(current or {}), **written}


def text_field(value: str | None, limit: int) -> str | None:
    """Client text fit for a conflicts-table column: unencodable characters replaced, NUL dropped, cut
    to ``limit`` characters (recording must not fail on an odd id)."""
    if value is None:
        return None
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:limit]


def json_safe(value: Any) -> Any:
    """A converted or driver value as JSON for the conflicts table's ``client_values``/``server_values``."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, timedelta):
        return str(value)
    return value
