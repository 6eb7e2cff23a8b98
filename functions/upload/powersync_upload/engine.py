"""The engine: applies client transactions, one database transaction each, and reports per transaction.

For each :class:`~powersync_upload.contract.Transaction`, in request order: validate and convert every
value against the introspected column types, authorize (``owner``, ``parents``, ``columns``), run
the operations in queue order inside one database transaction, COMMIT, and only then call it a
success. A :class:`FatalOpError` rolls that transaction back and the next one is still applied
(``on_fatal_error: continue``; ``stop`` applies to shape A only). A :class:`RetryableError` rolls back
and stops the request. Deadlock victims, lock timeouts and serialization failures are retried here
first, a few times with jittered backoff, while the deadline allows. Semantics: DESIGN.md section 3.

The engine knows nothing of HTTP: :func:`apply_upload` returns an :class:`Outcome`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from . import errors_table
from .config import TableConfig, UploadConfig
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
    """

    results: list[TransactionResult]
    retry_after_ms: int | None = None
    committed: int = 0
    recorded: int = 0
    fatal: list[tuple[int, Transaction, FatalOpError, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Caller:
    """The authenticated user: ``user_id`` is the JWT ``sub``."""

    user_id: str


def apply_upload(upload: Upload, caller: Caller, config: UploadConfig, db: Database, deadline: Deadline) -> Outcome:
    """Apply every transaction of ``upload`` in order.

    Returns:
        an :class:`Outcome`; ``retry_after_ms`` is set (answer 503) when a retryable error stopped a
        shape-B request, or a shape-A request before anything was committed.
    """
    outcome = Outcome(results=[])
    if not upload.transactions:
        return outcome
    try:
        conn = db.connection(max(1.0, min(10.0, deadline.remaining() - SAFETY_MARGIN_S)))
    except RetryableError as exc:
        return _stop_retryable(upload, outcome, 0, exc)
    for index, transaction in enumerate(upload.transactions):
        try:
            warnings = _apply_with_retries(conn, transaction, caller, config, db, deadline)
        except FatalOpError as exc:
            op_index = exc.operation_index
            outcome.fatal.append((index, transaction, exc, op_index))
            outcome.results.append(_fatal_result(transaction, exc, op_index))
            if config.errors_table:
                operation = transaction.operations[op_index]
                row = errors_table.row_values(
                    caller.user_id,
                    upload.client_id,
                    transaction.tx_id,
                    op_index,
                    operation.op_id,
                    operation.table,
                    operation.id,
                    exc,
                )
                outcome.recorded += errors_table.record(conn, db, config.errors_table, row)
            if config.on_fatal_error == "stop" and upload.shape == "A":
                outcome.results.extend(NotAttemptedResult() for _ in upload.transactions[index + 1 :])
                return outcome
            continue
        except RetryableError as exc:
            return _stop_retryable(upload, outcome, index, exc)
        outcome.committed += 1
        outcome.results.append(SuccessResult(warnings=warnings or None))
    return outcome


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


def _apply_with_retries(
    conn: Any, transaction: Transaction, caller: Caller, config: UploadConfig, db: Database, deadline: Deadline
) -> list[OperationWarning]:
    """Apply a transaction; retry it in process after a deadlock or lock timeout, and once after a
    UNIQUE_VIOLATION raised by a PUT: a concurrent insert of the same new id can trip a *second*
    unique index before the key conflict is seen (PostgreSQL's ON CONFLICT only arbitrates the key);
    on the second attempt the row exists and the PUT updates it. A real duplicate fails again."""
    attempt = 1
    while True:
        try:
            return _apply_transaction(conn, transaction, caller, config, db, deadline)
        except FatalOpError as exc:
            failed = transaction.operations[exc.operation_index]
            if exc.code is not ErrorCode.UNIQUE_VIOLATION or failed.op != "PUT" or attempt > 1:
                raise
            attempt += 1
        except RetryableError as exc:
            backoff = random.uniform(0.5, 1.5) * 0.05 * 2**attempt  # noqa: S311 - jitter, not cryptography
            if (
                not exc.in_process
                or attempt >= IN_PROCESS_ATTEMPTS
                or deadline.remaining() < backoff + 2 * SAFETY_MARGIN_S
            ):
                raise
            logger.info("retrying transaction in process", extra={"kind": exc.kind, "attempt": attempt})
            time.sleep(backoff)
            attempt += 1


def _apply_transaction(
    conn: Any, transaction: Transaction, caller: Caller, config: UploadConfig, db: Database, deadline: Deadline
) -> list[OperationWarning]:
    """One client transaction in one database transaction; COMMIT before returning."""
    if not transaction.operations:
        return []
    budget = deadline.remaining() - SAFETY_MARGIN_S
    if budget <= 0.2:
        raise RetryableError("deadline", retry_after_ms=1000)
    warnings: list[OperationWarning] = []
    op_index = 0
    try:
        db.dialect.begin(conn, budget)
        for op_index, operation in enumerate(transaction.operations):
            if _apply_operation(conn, operation, caller, config, db):
                warnings.append(OperationWarning(operation_index=op_index, code="ROW_NOT_FOUND"))
            if deadline.remaining() <= SAFETY_MARGIN_S:
                raise RetryableError("deadline", retry_after_ms=1000)
    except FatalOpError as exc:
        _rollback(conn, db)
        exc.operation_index = op_index
        raise
    except RetryableError:
        _rollback(conn, db)
        raise
    except Exception as exc:
        _rollback(conn, db)
        raise _classified(exc, transaction.operations[op_index], config, db, op_index) from exc
    try:
        conn.commit()
    except Exception as exc:
        classified = db.dialect.classify(exc)
        _rollback(conn, db)
        if isinstance(classified, FatalOpError):
            classified.operation_index = len(transaction.operations) - 1
            classified.table = None
            raise classified from exc
        # The outcome of a failed COMMIT is unknown; never retry it here. Replays are harmless.
        db.discard()
        raise RetryableError("commit_unknown", number=getattr(classified, "number", None)) from exc
    return warnings


def _rollback(conn: Any, db: Database) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - a dead connection rolls back by itself
        db.discard()


def _classified(
    exc: Exception, operation: Operation, config: UploadConfig, db: Database, op_index: int
) -> FatalOpError | RetryableError:
    classified = db.dialect.classify(exc)
    if classified is None:
        logger.exception("unexpected error while applying a transaction; answering retryable")
        db.discard()
        return RetryableError("internal", retry_after_ms=5000)
    if isinstance(classified, RetryableError):
        if classified.kind in ("connection", "commit_unknown"):
            db.discard()
        return classified
    if classified.code is ErrorCode.UNCLASSIFIED_ERROR:
        logger.warning("unclassified database error", extra={"error_number": classified.number})
    table_config = config.tables.get(operation.table)
    classified.table = operation.table
    if classified.column and table_config is not None:
        classified.column = _client_column(table_config, classified.column)
    classified.operation_index = op_index
    return classified


def _client_column(table_config: TableConfig, server_column: str) -> str:
    for client, server in table_config.rename.items():
        if server.casefold() == server_column.casefold():
            return client
    return server_column


@dataclass
class _Target:
    """An operation's table, resolved: configuration, schema and key column."""

    client_table: str
    config: TableConfig
    schema: TableSchema
    key: Column


def _resolve_table(conn: Any, client_table: str, config: UploadConfig, db: Database) -> _Target:
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
    key = schema.column(table_config.key)
    if key is None:
        raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=client_table, column=table_config.key)
    return _Target(client_table, table_config, schema, key)


def _column(conn: Any, target: _Target, db: Database, server_name: str) -> Column | None:
    column = target.schema.column(server_name)
    if column is None and db.refresh_table(conn, target.schema.name):
        refreshed = db.table(conn, target.schema.name)
        if refreshed is not None:
            target.schema = refreshed
            column = refreshed.column(server_name)
    return column


def _convert(value: Any, column: Column, table: str, client_column: str) -> Any:
    try:
        return convert(value, column)
    except InvalidValue as exc:
        raise FatalOpError(ErrorCode.INVALID_DATA, table=table, column=client_column, reason=exc.reason) from exc


def _same(a: Any, b: Any, column: Column) -> bool:
    """Equality as the column compares: UUIDs case-insensitively, text exactly."""
    if a is None or b is None:
        return a is b
    try:
        return bool(convert(a, column) == convert(b, column))
    except InvalidValue:
        return False


def _values(conn: Any, operation: Operation, target: _Target, key_value: Any, db: Database) -> dict[str, Any]:
    """Server column -> converted value for the operation's data (the entry's own id left out)."""
    table_config = target.config
    allowed: set[str] | None = None
    if table_config.columns is not None:
        allowed = set(table_config.columns)
    protected = {c.casefold() for c in [table_config.owner, *table_config.parents] if c}
    values: dict[str, Any] = {}
    for client_column, raw in (operation.data or {}).items():
        server_name = table_config.rename.get(client_column, client_column)
        column = _column(conn, target, db, server_name)
        if column is None:
            raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=target.client_table, column=client_column)
        if column.name == target.key.name:
            if not _same(_convert(raw, column, target.client_table, client_column), key_value, column):
                raise FatalOpError(
                    ErrorCode.INVALID_DATA, table=target.client_table, column=client_column, reason=Reason.FORMAT
                )
            continue
        if not column.writable or (
            allowed is not None and client_column not in allowed and column.name.casefold() not in protected
        ):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=target.client_table, column=client_column)
        values[column.name] = _convert(raw, column, target.client_table, client_column)
    return values


def _apply_operation(conn: Any, operation: Operation, caller: Caller, config: UploadConfig, db: Database) -> bool:
    """Run one operation. Returns True when a PATCH found no row (a ``ROW_NOT_FOUND`` warning)."""
    target = _resolve_table(conn, operation.table, config, db)
    key_value = _convert(operation.id, target.key, operation.table, "id")
    values = _values(conn, operation, target, key_value, db)
    if operation.op == "PATCH" and not values:
        return False  # {} or only the same id: a no-op that runs no SQL

    table_config = target.config
    guard: tuple[Column, Any] | None = None
    if table_config.owner:
        owner = target.schema.column(table_config.owner)
        if owner is None:
            raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=operation.table, column=table_config.owner)
        try:
            me = convert(caller.user_id, owner)
        except InvalidValue as exc:
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table, column=owner.name) from exc
        if owner.name in values:
            if not _same(values[owner.name], me, owner):
                raise FatalOpError(
                    ErrorCode.UNAUTHORIZED, table=operation.table, column=_client_column(table_config, owner.name)
                )
            if operation.op == "PATCH":
                del values[owner.name]
                if not values:
                    return False
        found, current = db.dialect.select_value(conn, target.schema, target.key, key_value, owner, "update")
        if found and not _same(current, me, owner):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table)
        if not found and operation.op != "PUT":
            return operation.op == "PATCH"
        if operation.op == "PUT":
            values[owner.name] = me
            guard = (owner, me)

    if operation.op != "DELETE":
        _check_parents(conn, operation, target, values, caller, config, db)

    if operation.op == "PUT":
        nulls = _unset_columns(target, values)
        if db.dialect.upsert(conn, target.schema, target.key, key_value, values, nulls, guard) == 0:
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table)
        return False
    if operation.op == "PATCH":
        return db.dialect.update(conn, target.schema, target.key, key_value, values) == 0
    db.dialect.delete(conn, target.schema, target.key, key_value)
    return False


def _unset_columns(target: _Target, values: dict[str, Any]) -> list[str]:
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


def _check_parents(
    conn: Any,
    operation: Operation,
    target: _Target,
    values: dict[str, Any],
    caller: Caller,
    config: UploadConfig,
    db: Database,
) -> None:
    """A written parent reference must name an existing row that the caller owns (DESIGN section 3)."""
    for parent_column, parent_table in target.config.parents.items():
        column = target.schema.column(parent_column)
        if column is None or values.get(column.name) is None:
            continue
        client_column = _client_column(target.config, column.name)
        parent = _resolve_table(conn, parent_table, config, db)
        parent_key_value = _convert(values[column.name], parent.key, operation.table, client_column)
        owner_name = parent.config.owner
        checked = parent.schema.column(owner_name) if owner_name else parent.key
        if checked is None:
            raise FatalOpError(ErrorCode.SCHEMA_MISMATCH, table=parent_table, column=owner_name)
        found, owner = db.dialect.select_value(conn, parent.schema, parent.key, parent_key_value, checked, "share")
        if not found:
            raise FatalOpError(ErrorCode.FOREIGN_KEY_VIOLATION, table=operation.table, column=client_column)
        if owner_name and not _same(owner, caller.user_id, checked):
            raise FatalOpError(ErrorCode.UNAUTHORIZED, table=operation.table, column=client_column)
