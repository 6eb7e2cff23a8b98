"""The errors table: every fatal result is also stored as a row that sync rules can send back to the user.

Each rejected transaction gets one row in ``powersync_upload_errors`` (configurable), written in its
own short transaction right after the rejected one was rolled back (DESIGN.md section 3). The table's
``id`` is a text UUID, as PowerSync requires of synced tables; the migrations per dialect are in
``db/migrations/<dialect>/``. A failure to record never changes the result the client gets: it is
logged (``"could not record a rejected transaction"``) and the upload goes on.

The row holds names and codes only: the message is the engine's own, never a submitted value.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from .convert import InvalidValue, convert
from .database import Database
from .errors import FatalOpError
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


def record(conn: Any, db: Database, table_name: str, raw: dict[str, Any]) -> bool:
    """Insert one errors-table row in its own transaction.

    Returns:
        True when the row was committed; False (logged, never raised) when the table is missing or
        the insert failed.
    """
    try:
        schema = db.table(conn, table_name)
        if schema is None:
            logger.warning(
                "errors table not found; rejected transactions are not recorded", extra={"table": table_name}
            )
            return False
        key = schema.column("id")
        if key is None:
            logger.warning("errors table has no 'id' column", extra={"table": table_name})
            return False
        values: dict[str, Any] = {}
        for name, value in raw.items():
            column = schema.column(name)
            if column is None:
                continue
            if isinstance(value, str) and column.kind is Kind.TEXT:
                value = _text(value, column)
            values[column.name] = convert(value, column)
        db.dialect.begin(conn, RECORD_TIMEOUT_S)
        db.dialect.upsert(conn, schema, key, convert(str(uuid.uuid4()), key), values, [], None)
        db.dialect.commit(conn)
        return True
    except (InvalidValue, Exception) as exc:  # noqa: BLE001 - recording must never change the result
        logger.warning(
            "could not record a rejected transaction", extra={"table": table_name, "error_type": type(exc).__name__}
        )
        try:
            db.dialect.rollback(conn)
        except Exception:  # noqa: BLE001
            db.discard()
        return False
