"""The errors table: every fatal result is also stored as a row that sync rules can send back to the user.

Each rejected transaction gets one row in ``powersync_upload_errors`` (configurable), written in its
own short transaction right after the rejected one was rolled back (DESIGN.md section 3), together
with the transaction's ledger row and its conflict rows when there are any. The table's
``id`` is a text UUID, as PowerSync requires of synced tables; the migrations per dialect are in
``db/migrations/<dialect>/``. The row and the fatal answer stand or fall together: a failure that
may pass (a lost connection, a timeout, a deadlock, a commit whose outcome is unknown) makes the
transaction retryable (:attr:`Recorded.retry`), so the device sends it again and the rejection is
decided and recorded again (the ledger answers the replay when the first attempt did commit); a
failure that cannot pass (no errors table, no permission) is logged (``"could not record a rejected
transaction"``) and the result stands, so the queue never blocks on it.

The row holds names and codes only: the message is the engine's own, never a submitted value.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .convert import InvalidValue, convert
from .database import Database
from .dialects import PutRow
from .errors import FatalOpError, RetryableError
from .ledger import CLAIMED, Claim, Entry
from .schema import Column, Kind

logger = logging.getLogger(__name__)

RECORD_TIMEOUT_S = 2.0


def _text(value: str, column: Column) -> str:
    """Client text made storable: unencodable characters replaced, cut to the column's length."""
    clean = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    if column.max_length is not None:
        limit = column.max_length // 2 if column.length_unit in ("utf16", "bytes") else column.max_length
        clean = clean[: max(limit, 1)]
    return clean


def row_values(
    user_id: str,
    client_id: str | None,
    tx_id: int | None,
    op_index: int,
    op_id: int | None,
    table: str,
    row_id: str,
    error: FatalOpError,
) -> dict[str, Any]:
    """The errors-table row for one fatal result, by column name, before conversion."""
    return {
        "user_id": user_id,
        "client_id": client_id,
        "transaction_id": tx_id,
        "op_index": op_index,
        "op_id": op_id,
        "table_name": table,
        "row_id": row_id,
        "error_code": error.code.value,
        "message": error.message,
        "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds"),
    }


@dataclass(frozen=True)
class Recorded:
    """What :func:`record` kept.

    Attributes:
        committed: the short transaction committed (errors-table row, ledger row and conflict rows
            as given; an errors table that does not exist is skipped, logged).
        errors_row: the errors-table row is among what was committed.
        claim: the ledger's answer when a ledger row was given: not ``claimed`` means a concurrent
            attempt of the same transaction decided it first (nothing was written here).
        retry: the failure was temporary (classified retryable, or not a database error at all):
            answer the transaction retryable, never a fatal result without its rows.
    """

    committed: bool
    errors_row: bool = False
    claim: Claim = CLAIMED
    retry: RetryableError | None = None


def _errors_values(
    conn: Any, db: Database, table_name: str, raw: dict[str, Any]
) -> tuple[Any, Any, dict[str, Any]] | None:
    schema = db.table(conn, table_name)
    if schema is None and db.refresh_table(conn, table_name):  # created since (at most one look a minute)
        schema = db.table(conn, table_name)
    if schema is None:
        logger.warning("could not record a rejected transaction: errors table not found", extra={"table": table_name})
        return None
    key = schema.column("id")
    if key is None:
        logger.warning("errors table has no 'id' column", extra={"table": table_name})
        return None
    values: dict[str, Any] = {}
    for name, value in raw.items():
        column = schema.column(name)
        if column is None:
            continue
        if isinstance(value, str) and column.kind is Kind.TEXT:
            value = _text(value, column)
        values[column.name] = convert(value, column)
    return schema, key, values


def record(
    conn: Any,
    db: Database,
    table_name: str | None,
    raw: dict[str, Any] | None,
    *,
    ledger_entries: Sequence[Entry] = (),
    conflicts: Sequence[dict[str, Any]] = (),
) -> Recorded:
    """Insert one errors-table row, with the transaction's ledger row and conflict rows, together in
    their own short transaction (DESIGN.md section 3: "for a fatal result, the ledger row and the
    errors-table row are written together in their own short transaction").

    Args:
        table_name: the errors table, or ``None`` when it is disabled (ledger and conflicts still go).
        raw: the errors-table row (:func:`row_values`), or ``None``.
        ledger_entries: the ledger row of the rejected transaction (request named ``client_id``).
        conflicts: ``powersync_upload_conflicts`` rows (the conflict that made it fatal).

    Returns:
        :class:`Recorded`; never raises: a failure is logged and nothing of it stays.
    """
    try:
        prepared = _errors_values(conn, db, table_name, raw) if table_name and raw is not None else None
        db.dialect.begin(conn, RECORD_TIMEOUT_S)
        if ledger_entries:
            claim = db.dialect.ledger_claim(conn, ledger_entries)
            if not claim.claimed:
                return Recorded(committed=False, claim=claim)
        if conflicts:
            db.dialect.conflicts_insert(conn, conflicts)
        if prepared is not None:
            schema, key, values = prepared
            db.dialect.upsert(conn, PutRow(schema, key, convert(str(uuid.uuid4()), key), values, []))
        db.dialect.commit(conn)
        return Recorded(committed=True, errors_row=prepared is not None)
    except Exception as exc:  # noqa: BLE001 - classified: a temporary failure is retried, a lasting one stands
        retry = recording_failure(db, exc)
        logger.warning(
            "could not record a rejected transaction",
            extra={"table": table_name, "error_type": type(exc).__name__, "retryable": retry is not None},
        )
        try:
            db.dialect.rollback(conn)
        except Exception:  # noqa: BLE001
            db.discard()
        return Recorded(committed=False, retry=retry)


def recording_failure(db: Database, exc: BaseException) -> RetryableError | None:
    """Whether a failure to record a rejection may pass: a :class:`RetryableError` to answer (the
    device sends the transaction again) or ``None`` when it cannot (a value the table cannot hold, a
    missing table or column, no permission: the result stands without its row)."""
    if isinstance(exc, RetryableError):
        return exc
    if isinstance(exc, InvalidValue | FatalOpError):
        return None
    classified = db.dialect.classify(exc)
    if isinstance(classified, FatalOpError):
        return None
    return classified if classified is not None else RetryableError("recording_failed", retry_after_ms=1000)
