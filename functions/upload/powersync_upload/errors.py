"""The error taxonomy: what can go wrong with an operation, and what the client should do about it.

Two families, as DESIGN.md sections 1 and 3 define them:

* :class:`FatalOpError` -- the operation can never be applied (constraint, bad value, unknown name,
  not allowed). Its transaction is rolled back and reported as ``fatal_error``; the client completes
  it and the device reverts at the next checkpoint.
* :class:`RetryableError` -- a temporary failure (database down, deadlock, lock or statement timeout,
  lost connection, commit outcome unknown). Nothing of the transaction is kept; the client keeps it
  queued and sends it again.

Messages are built here from codes and names only: never from the database's own text, which can
carry submitted values (SQL Server 2627/2628, PostgreSQL DETAIL).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The ``error_code`` values of DESIGN.md section 2."""

    NOT_NULL_VIOLATION = "NOT_NULL_VIOLATION"
    UNIQUE_VIOLATION = "UNIQUE_VIOLATION"
    FOREIGN_KEY_VIOLATION = "FOREIGN_KEY_VIOLATION"
    CHECK_VIOLATION = "CHECK_VIOLATION"
    CONSTRAINT_VIOLATION = "CONSTRAINT_VIOLATION"
    INVALID_DATA = "INVALID_DATA"
    SCHEMA_MISMATCH = "SCHEMA_MISMATCH"
    UNAUTHORIZED = "UNAUTHORIZED"
    CONFLICT = "CONFLICT"
    TOO_LARGE = "TOO_LARGE"
    """The transaction alone is larger than ``MAX_BODY_BYTES``: it can never be applied by any request."""
    UNCLASSIFIED_ERROR = "UNCLASSIFIED_ERROR"


class Reason(StrEnum):
    """``details.reason`` for :attr:`ErrorCode.INVALID_DATA`."""

    TYPE = "type"
    FORMAT = "format"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    NEEDS_PREVIOUS_VALUE = "needs_previous_value"
    """A delta column or a version check needs ``old`` (or the version in ``data``) and did not get it."""
    ENCODING = "encoding"


class ConflictReason(StrEnum):
    """``details.reason`` for :attr:`ErrorCode.CONFLICT` and the ``CONFLICT_SKIPPED`` warning
    (DESIGN.md section 3, "Conflicts")."""

    STALE = "stale"
    """``detect: previous_values``: a column's ``old`` no longer equals the server's value."""
    VERSION = "version"
    """``detect: version``: the version the client saw is not the row's version."""
    FROZEN = "frozen"
    """``rules.frozen_when``: the row's current value freezes it."""
    TRANSITION = "transition"
    """``rules.transitions``: the change of that column is not an allowed transition."""


class AuthReason(StrEnum):
    """``details.reason`` for :attr:`ErrorCode.UNAUTHORIZED` when the caller is not at fault."""

    SUBJECT_NOT_STORABLE = "subject_not_storable"
    """The owner column's type cannot hold the token's ``sub`` (a ``uuid`` column and an Auth0
    ``auth0|...`` or Firebase uid): no write of that user can ever pass; the configuration or the
    column must change."""


CONFIG_HINT = (
    "the table exists, but its upload configuration does not fit it (a key that does not identify one row, "
    "a delta column that is not numeric, a rule on an unknown column...): the server log names the problem "
    "('configuration does not fit the table')"
)
"""The hint of a ``SCHEMA_MISMATCH`` that the configuration causes, not a missing table or column."""

_REASON_SUMMARY: dict[StrEnum, str] = {
    AuthReason.SUBJECT_NOT_STORABLE: (
        "the owner column cannot hold the token's subject (sub): its type does not fit the identity "
        "provider's user ids; change the column's type (text) or the identity provider"
    ),
}


_SUMMARY: dict[ErrorCode, str] = {
    ErrorCode.NOT_NULL_VIOLATION: "a required value is missing",
    ErrorCode.UNIQUE_VIOLATION: "a row with the same unique value already exists",
    ErrorCode.FOREIGN_KEY_VIOLATION: "a referenced row does not exist, or other rows still reference this one",
    ErrorCode.CHECK_VIOLATION: "a value fails a check constraint",
    ErrorCode.CONSTRAINT_VIOLATION: "the change violates a database constraint",
    ErrorCode.INVALID_DATA: "a value cannot be stored in its column",
    ErrorCode.SCHEMA_MISMATCH: "the table or column is not known to the server",
    ErrorCode.UNAUTHORIZED: "the caller may not make this change",
    ErrorCode.CONFLICT: "the change conflicts with the row on the server or a rule of its table",
    ErrorCode.TOO_LARGE: "the transaction is larger than one request may be",
    ErrorCode.UNCLASSIFIED_ERROR: "the database rejected the change",
}


MAX_NAME_CHARS = 64


def safe_name(name: str) -> str:
    """A client-chosen name fit to return and log: unencodable characters and control characters
    replaced, cut to :data:`MAX_NAME_CHARS` characters (an unknown column name may be megabytes long,
    and a response over 6 MB is a Lambda error)."""
    text = name.encode("utf-8", "replace").decode("utf-8")
    text = "".join("?" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text[: MAX_NAME_CHARS + 1])
    return text if len(text) <= MAX_NAME_CHARS else text[:MAX_NAME_CHARS] + "…"


class FatalOpError(Exception):
    """An operation that can never be applied.

    Attributes:
        code: the contract's error code.
        table: the table name as the client knows it (filled in by the engine when the dialect only
            knows the server name), or ``None``.
        column: the column name as the client knows it, or ``None``.
        constraint: the database constraint's name, or ``None``.
        number: the database's error number (SQL Server error number, PostgreSQL SQLSTATE, SQLite
            extended result code, MySQL error number), or ``None`` when the error was found in Python.
        reason: for ``INVALID_DATA``, one of :class:`Reason`; for ``CONFLICT``, a :class:`ConflictReason`.
        limit: the configuration limit that was exceeded (``max_operations_per_transaction``, ...).
        conflict_id: for ``CONFLICT``, the id of its row in ``powersync_upload_conflicts`` (set once
            that row is recorded).
        field: for an entry refused before any SQL, the entry key that is wrong (``op``, ``table``,
            ``id``), or ``None``.
        hint: what the app developer can do about it (our text, no values), appended to the message.
        operation_index: index of the failing operation in its transaction (set by the engine).
    """

    operation_index: int = 0
    conflict_row: dict[str, Any] | None = None
    """For ``CONFLICT``: the ``powersync_upload_conflicts`` row to record with the errors-table row (it
    holds values: never rendered in :attr:`message` or :meth:`details`, never logged)."""

    def __init__(
        self,
        code: ErrorCode,
        *,
        table: str | None = None,
        column: str | None = None,
        constraint: str | None = None,
        number: int | str | None = None,
        reason: Reason | ConflictReason | AuthReason | None = None,
        limit: str | None = None,
        conflict_id: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.code = code
        self.field = field
        self.hint = hint
        self.limit = limit
        self.conflict_id = conflict_id
        self.table = table
        self.column = column
        self.constraint = constraint
        self.number = number
        self.reason = reason
        super().__init__(code.value)

    @property
    def message(self) -> str:
        """A message built only from the code and the names: safe to return and to log."""
        text = _SUMMARY[self.code]
        if self.limit is not None:
            text = f"the change exceeds the configured limit {self.limit}"
        elif self.reason in _REASON_SUMMARY:
            text = _REASON_SUMMARY[self.reason]
        elif self.reason is not None:
            text += f" ({self.reason.value})"
        where = []
        if self.field:
            where.append(f"entry key '{self.field}'")
        if self.column:
            where.append(f"column '{safe_name(self.column)}'")
        if self.table:
            where.append(f"table '{safe_name(self.table)}'")
        if self.constraint:
            where.append(f"constraint '{safe_name(self.constraint)}'")
        text = f"{text}: {', '.join(where)}" if where else text
        return f"{text}; {self.hint}" if self.hint else text

    def details(self) -> dict[str, Any]:
        """``failed_operation.details``: names (see :func:`safe_name`) and the error number, never values.

        ``error_number`` is always a string, on every dialect: SQL Server's and MySQL's error number as
        decimal text (``"515"``), PostgreSQL's SQLSTATE (``"23502"``, ``"22P02"``), SQLite's extended
        result code (``"1299"``)."""
        out: dict[str, Any] = {}
        for key in ("table", "column", "field", "constraint", "reason", "limit", "conflict_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = safe_name(str(value))
        if self.number is not None:
            out["error_number"] = str(self.number)
        return out


class RetryableError(Exception):
    """A temporary failure: nothing of the transaction was kept and it can be sent again.

    Attributes:
        kind: a short stable label for logs and metrics (``deadlock``, ``lock_timeout``,
            ``connection``, ``timeout``, ``commit_unknown``, ``throttled``, ``deadline``, ...).
        in_process: whether the engine may retry the transaction itself right away (deadlock
            victims, lock timeouts, serialization failures), within the request's deadline.
        number: the database's error number, when there is one.
        retry_after_ms: how long the client should wait before sending again.
    """

    def __init__(
        self,
        kind: str,
        *,
        in_process: bool = False,
        number: int | str | None = None,
        retry_after_ms: int = 1000,
    ) -> None:
        self.kind = kind
        self.in_process = in_process
        self.number = number
        self.retry_after_ms = retry_after_ms
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """A message without database text: safe to return and to log."""
        suffix = f" (error {self.number})" if self.number is not None else ""
        return f"temporary database failure: {self.kind}{suffix}; send the transaction again"
