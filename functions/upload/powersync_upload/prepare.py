"""From a CrudEntry to a prepared write: table resolved, values converted, authorization decided as far
as it can be without reading rows.

Everything here is Python work on the configuration and the introspected schema (an unknown name may
trigger one schema refresh); no row is read or written. The engine then executes a
:class:`Prepared` alone (:mod:`powersync_upload.engine`) or with its neighbours
(:mod:`powersync_upload.writes`), checking row ownership inside the transaction;
:mod:`powersync_upload.steps` describes prepared writes to the planner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Limits, TableConfig, UploadConfig, key_problems
from .contract import Operation, Transaction
from .convert import Converter, InvalidValue, check_key, convert, converter, json_text
from .database import Database
from .errors import CONFIG_HINT, AuthReason, ErrorCode, FatalOpError, Reason
from .plan import Step
from .schema import Column, TableSchema

logger = logging.getLogger(__name__)


@dataclass
class Target:
    """An operation's table, resolved: configuration, schema and key column; ``patch_only`` is
    ``config.patch_only``, read once (a pydantic private attribute costs a microsecond per read)."""

    client_table: str
    config: TableConfig
    schema: TableSchema
    key: Column
    patch_only: bool = False


@dataclass(frozen=True, slots=True)
class ParentRef:
    """A written reference to a configured parent table (DESIGN section 3, ``parents``).

    Attributes:
        client_column: the referencing column as the client names it.
        parent: the parent table.
        key_value: the referenced key, converted for the parent's key column.
        checked: the parent's owner column, or its key column when the parent has no owner.
        owned: whether the parent's owner must be the caller.
    """

    client_column: str
    parent: Target
    key_value: Any
    checked: Column
    owned: bool


@dataclass(slots=True)
class Prepared:
    """One operation ready to run.

    Attributes:
        operation: the CrudEntry.
        target: its table.
        key_value: the converted row key.
        values: server column -> converted value to write (for PUT, the owner column is filled in).
        nulls: PUT only: columns set to NULL on update (writable, not sent, no default).
        owner: the owner column when the table has one.
        me: the caller's id converted for ``owner``.
        parents: references to check before writing (PUT and PATCH).
        user_id: the caller (JWT ``sub``).
        adds: PATCH only: the columns of ``values`` that hold an increment to add to the stored value
            (``SET c = c + v``: a delta column's ``new - old``, set by the conflict checks), not a
            value to write.
    """

    operation: Operation
    target: Target
    key_value: Any
    values: dict[str, Any]
    user_id: str
    nulls: list[str] = field(default_factory=list)
    owner: Column | None = None
    me: Any = None
    parents: list[ParentRef] = field(default_factory=list)
    adds: frozenset[str] = frozenset()


@dataclass
class PreparedTransaction:
    """One client transaction of the request, prepared.

    Attributes:
        position: its index in the request.
        items: (operation index, prepared write); PATCHes that change nothing are left out.
        steps: what the planner needs of each item (:func:`step_of`), filled in when grouping.
    """

    position: int
    transaction: Transaction
    items: list[tuple[int, Prepared]]
    steps: list[Step] = field(default_factory=list)


class Tally(Protocol):
    """Where configuration problems found against the schema are counted (``session.Counters``)."""

    config_problems: int


Problems = Callable[[str, TableConfig, TableSchema], list[str]]
"""A check of a table's configuration against its introspected schema: messages, empty when it fits."""
SchemaChecks = dict[str, tuple[TableSchema, TableConfig, bool]]
"""Per client table: the schema and configuration a check ran against, and whether they fit."""

_KEY_CHECKS: SchemaChecks = {}


def fits_schema(
    checks: SchemaChecks,
    problems_of: Problems,
    client_table: str,
    table_config: TableConfig,
    schema: TableSchema,
    tally: Tally | None,
) -> bool:
    """Whether ``table_config`` fits ``schema`` by ``problems_of`` (DESIGN.md section 4), checked once
    per introspected schema object and configuration (again after a schema refresh): a problem is
    logged ("configuration does not fit the table") and counted then, and remembered in ``checks``."""
    cached = checks.get(client_table)
    if cached is None or cached[0] is not schema or cached[1] is not table_config:
        problems = problems_of(client_table, table_config, schema)
        if problems:
            if tally is not None:
                tally.config_problems += len(problems)
            logger.error("configuration does not fit the table", extra={"table": client_table, "problems": problems})
        cached = checks[client_table] = (schema, table_config, not problems)
    return cached[2]


def resolve_table(
    conn: Any, client_table: str, config: UploadConfig, db: Database, tally: Tally | None = None
) -> Target:
    """The configured, existing table for a client table name.

    Args:
        tally: counts a configuration problem the first check of the table's key finds.

    Raises:
        FatalOpError: ``SCHEMA_MISMATCH`` for a table that is not configured, or configured but missing
            from the database (after one schema refresh), or whose key column is missing or does not
            identify one row (:func:`~powersync_upload.config.key_problems`; logged once).
    """
    table_config = config.tables.get(client_table)
    if table_config is None:
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=client_table)
    server_table = config.server_table(client_table)
    schema = db.table(conn, server_table)
    if schema is None and db.refresh_table(conn, server_table):
        schema = db.table(conn, server_table)
    if schema is None:
        logger.error("configured table not found in the database", extra={"table": client_table})
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=client_table)
    fits = fits_schema(_KEY_CHECKS, key_problems, client_table, table_config, schema, tally)
    key = schema.column(table_config.key)
    if key is None or not fits:
        hint = None if key is None else CONFIG_HINT
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=client_table, column=table_config.key, hint=hint)
    return Target(client_table, table_config, schema, key, table_config.patch_only)


def client_column(table_config: TableConfig, server_column: str) -> str:
    """The client's name for a server column (undoing ``rename``)."""
    for client, server in table_config.rename.items():
        if server.casefold() == server_column.casefold():
            return client
    return server_column


def same(a: Any, b: Any, column: Column) -> bool:
    """Equality as the column compares: UUIDs case-insensitively, text exactly."""
    if a is None or b is None:
        return a is b
    try:
        return bool(convert(a, column) == convert(b, column))
    except InvalidValue:
        return False


def _column(conn: Any, target: Target, db: Database, server_name: str) -> Column | None:
    column = target.schema.column(server_name)
    if column is None and db.refresh_table(conn, target.schema.name):
        refreshed = db.table(conn, target.schema.name)
        if refreshed is not None:
            target.schema = refreshed
            column = refreshed.column(server_name)
    return column


def _convert(value: Any, column: Column, table: str, name: str) -> Any:
    try:
        return convert(value, column)
    except InvalidValue as exc:
        raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=name, reason=exc.reason) from exc


def _key(operation: Operation, target: Target) -> Any:
    """The operation's row id converted for the key column, refused when that column would fold it
    onto another id (:func:`~powersync_upload.convert.check_key`)."""
    key_value = _convert(operation.id, target.key, operation.table, "id")
    try:
        check_key(key_value, target.key)
    except InvalidValue as exc:
        raise FatalOpError(ErrorCode.INVALID_DATA, table=operation.table, column="id", reason=exc.reason) from exc
    return key_value


def _too_long(name: str, raw: Any, limits: Limits, table: str) -> None:
    if isinstance(raw, str):
        too_long = len(raw) > limits.max_text_chars
    elif isinstance(raw, (list, dict)):
        try:
            too_long = len(json_text(raw)) > limits.max_json_chars
        except InvalidValue as exc:  # NaN or Infinity inside: not JSON, rejected for this value only
            raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=name, reason=exc.reason) from exc
    else:
        return
    if too_long:
        raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=name, reason=Reason.TOO_LONG)


def _values(
    conn: Any,
    operation: Operation,
    target: Target,
    key_value: Any,
    db: Database,
    limits: Limits,
    memo: dict[tuple[Any, ...], Any],
) -> dict[str, Any]:
    """Server column -> converted value for the operation's data (the entry's own id left out).

    The columns of a set of data keys are resolved once per transaction attempt (:func:`_resolved`,
    kept in ``memo``); the operations after the first with the same keys only check and convert their
    values. An operation whose keys do not all resolve takes the checks name by name, in the order
    sent, so the error it gets is the same as before the cache."""
    data = operation.data or {}
    if len(data) > limits.max_columns_per_operation:
        raise FatalOpError(
            ErrorCode.INVALID_DATA, table=target.client_table, reason=Reason.TOO_LONG, limit="max_columns_per_operation"
        )
    shape = ("columns", target.client_table, tuple(data))
    cached = memo.get(shape)
    if cached is None or cached[0] is not target.schema:
        columns = _resolved(conn, data, target, db, limits, key_value)
        cached = memo[shape] = (target.schema, [(c, converter(c)) if c is not None else None for c in columns])
    values: dict[str, Any] = {}
    table = target.client_table
    for (name, raw), resolved in zip(data.items(), cached[1], strict=True):
        if resolved is None:  # the key column: the same id, or refused
            _too_long(name, raw, limits, table)
            if not same(_convert(raw, target.key, table, name), key_value, target.key):
                raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=name, reason=Reason.FORMAT)
            continue
        column = resolved[0]
        values[column.name] = _value(raw, resolved, limits, table, name)
    return values


def _value(raw: Any, resolved: tuple[Column, Converter], limits: Limits, table: str, name: str) -> Any:
    """One data value checked (:func:`_too_long`) and converted with its column's rule.

    Raises:
        FatalOpError: ``INVALID_DATA`` (too long, or not convertible).
    """
    if raw is None:
        return None
    column, rule = resolved
    if type(raw) is str:
        if len(raw) > limits.max_text_chars:
            raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=name, reason=Reason.TOO_LONG)
    else:
        _too_long(name, raw, limits, table)
    try:
        return rule(raw, column)
    except InvalidValue as exc:
        raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=name, reason=exc.reason) from exc


def _resolved(
    conn: Any, data: dict[str, Any], target: Target, db: Database, limits: Limits, key_value: Any
) -> list[Column | None]:
    """The server column of each data key, in order (``None`` for the table's key column), after the
    schema, rename, writable and allow-list checks, which raise for the first name that fails (each
    after the value checks of the names before it, as sent).

    Raises:
        FatalOpError: ``SCHEMA_MISMATCH`` (no such column), ``UNAUTHORIZED`` (not writable, or outside
            ``columns``), ``INVALID_DATA`` (a value before it too long or not convertible; the key
            column with another id).
    """
    table_config = target.config
    allowed = set(table_config.columns) if table_config.columns is not None else None
    version = table_config.conflicts.version_column  # compared, never written: accepted like the key
    protected = {c.casefold() for c in [table_config.owner, *table_config.parents, version] if c}
    columns: list[Column | None] = []
    for name, raw in data.items():
        _too_long(name, raw, limits, target.client_table)
        server_name = table_config.rename.get(name, name)
        column = _column(conn, target, db, server_name)
        if column is None:
            raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=target.client_table, column=name)
        if column.name == target.key.name:
            if not same(_convert(raw, column, target.client_table, name), key_value, column):
                raise FatalOpError(ErrorCode.INVALID_DATA, table=target.client_table, column=name, reason=Reason.FORMAT)
            columns.append(None)
            continue
        compared = version is not None and name.casefold() == version.casefold()  # a rowversion is not writable
        if (not column.writable and not compared) or (
            allowed is not None and name not in allowed and column.name.casefold() not in protected
        ):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=target.client_table, column=name)
        _convert(raw, column, target.client_table, name)
        columns.append(column)
    return columns


def unset_columns(target: Target, values: dict[str, Any]) -> list[str]:
    """PUT replaces the row: writable columns the client may write but did not send become NULL,
    except those with a database default, which keep their current value on update."""
    table_config = target.config
    allowed = None
    if table_config.columns is not None:
        allowed = {table_config.rename.get(c, c).casefold() for c in table_config.columns}
        allowed |= {c.casefold() for c in [table_config.owner, *table_config.parents] if c}
    return [
        column.name
        for column in target.schema.columns.values()
        if column.writable
        and not column.has_default
        and column.name != target.key.name
        and column.name not in values
        and (allowed is None or column.name.casefold() in allowed)
    ]


def _parents(
    conn: Any,
    operation: Operation,
    target: Target,
    values: dict[str, Any],
    config: UploadConfig,
    db: Database,
    tally: Tally | None,
) -> list[ParentRef]:
    refs = []
    for parent_column, parent_table in target.config.parents.items():
        column = target.schema.column(parent_column)
        if column is None or values.get(column.name) is None:
            continue
        name = client_column(target.config, column.name)
        parent = resolve_table(conn, parent_table, config, db, tally)
        key_value = _convert(values[column.name], parent.key, operation.table, name)
        owner_name = parent.config.owner
        checked = parent.schema.column(owner_name) if owner_name else parent.key
        if checked is None:
            raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=parent_table, column=owner_name)
        refs.append(ParentRef(name, parent, key_value, checked, owner_name is not None))
    return refs


def prepare(
    conn: Any,
    operation: Operation,
    user_id: str,
    config: UploadConfig,
    db: Database,
    cache: dict[tuple[Any, ...], Any] | None = None,
    tally: Tally | None = None,
) -> Prepared | None:
    """Resolve, convert and pre-authorize one operation.

    Args:
        cache: shared by the operations of one transaction attempt: resolved tables, the caller's id
            per owner column and PUT's NULL columns per column set are computed once.
        tally: counts configuration problems found against the schema (:func:`resolve_table`).

    Returns:
        the prepared write, or ``None`` for a PATCH that changes nothing (``{}``, only the same id, or
        only the caller's own owner value): it runs no SQL.

    Raises:
        FatalOpError: ``SCHEMA_MISMATCH``, ``INVALID_DATA`` or ``UNAUTHORIZED`` (an owner value other
            than the caller's, a column outside the allow-list or not writable, a PUT or DELETE on a
            PATCH-only table).
    """
    memo: dict[tuple[Any, ...], Any] = cache if cache is not None else {}
    target = memo.get(("target", operation.table))
    if target is None:
        target = memo[("target", operation.table)] = resolve_table(conn, operation.table, config, db, tally)
    if target.patch_only and operation.op != "PATCH":
        raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table)
    key_value = _key(operation, target)
    values = _values(conn, operation, target, key_value, db, config.limits, memo)
    if operation.op == "PATCH" and not values:
        return None
    prepared = Prepared(operation, target, key_value, values, user_id)
    if target.config.owner:
        prepared.owner, prepared.me = _owner(operation, target, target.config.owner, values, user_id, memo)
        if operation.op == "PATCH" and not values:  # it only sent the caller's own owner value
            return None
    if operation.op != "DELETE":
        prepared.parents = _parents(conn, operation, target, values, config, db, tally)
    if operation.op == "PUT":
        shape = ("unset", target.schema.name, tuple(values))
        if shape not in memo:
            memo[shape] = unset_columns(target, values)
        prepared.nulls = memo[shape]
    return prepared


def _owner(
    operation: Operation,
    target: Target,
    name: str,
    values: dict[str, Any],
    user_id: str,
    memo: dict[tuple[Any, ...], Any],
) -> tuple[Column, Any]:
    """The owner column and the caller's id converted for it. An owner value in ``values`` must be the
    caller's: a PATCH's is dropped (it changes nothing), a PUT's owner is always the caller.

    Raises:
        FatalOpError: ``SCHEMA_MISMATCH`` (no such column), ``UNAUTHORIZED`` (someone else's id, or
            the caller's id does not fit the column).
    """
    found = memo.get(("me", target.schema.name, name))
    if found is None or found[0] is not target.schema:
        found = memo[("me", target.schema.name, name)] = (target.schema, *_caller(operation, target, name, user_id))
    owner, me = found[1], found[2]
    if owner.name in values:
        if not same(values[owner.name], me, owner):
            raise FatalOpError(
                ErrorCode.UNAUTHORIZED, table=operation.table, column=client_column(target.config, owner.name)
            )
        if operation.op == "PATCH":
            del values[owner.name]
    if operation.op == "PUT":
        values[owner.name] = me
    return owner, me


def _caller(operation: Operation, target: Target, name: str, user_id: str) -> tuple[Column, Any]:
    """The owner column ``name`` of the operation's table and the caller's id converted for it.

    Raises:
        FatalOpError: ``SCHEMA_MISMATCH`` (no such column), ``UNAUTHORIZED`` (the caller's id does not
            fit the column).
    """
    owner = target.schema.column(name)
    if owner is None:
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=operation.table, column=name)
    try:
        return owner, convert(user_id, owner)
    except InvalidValue as exc:  # a uuid owner column and an Auth0 or Firebase subject
        raise FatalOpError(
            ErrorCode.UNAUTHORIZED, table=operation.table, column=owner.name, reason=AuthReason.SUBJECT_NOT_STORABLE
        ) from exc
