"""The request's database session: its caller, its deadline, and BEGIN, COMMIT, ROLLBACK and error
classification within that deadline (DESIGN.md section 3, "Deadline").

One :class:`Session` lives for one request. It holds the one connection whose transaction the ledger
read opened and nothing wrote in yet (:attr:`Session.opened`): the first group's :meth:`Session.begin`
takes it, which saves a ROLLBACK and a BEGIN per request. :class:`Counters` are the request's tallies
that logs and metrics report (replays answered, conflicts not recorded, configuration problems).
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .config import UploadConfig
from .contract import Operation
from .database import Database
from .errors import ErrorCode, FatalOpError, RetryableError
from .prepare import client_column

logger = logging.getLogger(__name__)

SAFETY_MARGIN_S = 1.0
"""Time kept back from the deadline to roll back and answer."""


@dataclass(frozen=True)
class Caller:
    """The authenticated user: ``user_id`` is the JWT ``sub``."""

    user_id: str


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
class Counters:
    """The request's tallies, for logs and metrics.

    Attributes:
        replayed: transactions answered from the ledger instead of being applied again.
        unrecorded_conflicts: conflicts that could not be stored in ``powersync_upload_conflicts``.
        config_problems: configuration problems found against the schema (logged, the table refused).
    """

    replayed: int = 0
    unrecorded_conflicts: int = 0
    config_problems: int = 0


@dataclass
class Session:
    """One request's access to the database (see the module docstring).

    Attributes:
        opened: a connection whose transaction the ledger read opened; the next :meth:`begin` takes it.
    """

    db: Database
    deadline: Deadline
    config: UploadConfig
    caller: Caller
    client_id: str | None
    counters: Counters = field(default_factory=Counters)
    opened: Any = None

    def budget(self) -> float:
        """Seconds left for one more step, the safety margin kept back.

        Raises:
            RetryableError: ``deadline``, less than 0.2 s is left.
        """
        budget = self.deadline.remaining() - SAFETY_MARGIN_S
        if budget <= 0.2:
            raise RetryableError("deadline", retry_after_ms=1000)
        return budget

    def check_deadline(self) -> None:
        """Raises :class:`RetryableError` ``deadline`` when only the safety margin is left."""
        if self.deadline.remaining() <= SAFETY_MARGIN_S:
            raise RetryableError("deadline", retry_after_ms=1000)

    def begin(self) -> Any:
        """A connection with an open transaction; a kept connection the server closed while idle is
        replaced once (:meth:`Database.begin`). The first one may be the transaction the ledger read
        opened (nothing written in it yet)."""
        if self.opened is not None:
            conn, self.opened = self.opened, None
            return conn
        return self.db.begin(self.budget)

    def commit(self, conn: Any, last_index: int) -> None:
        """COMMIT. A deferred constraint raises its :class:`FatalOpError` at operation ``last_index``;
        any other failure is ``commit_unknown`` (never retried here: replays are harmless)."""
        db = self.db
        try:
            db.dialect.commit(conn)
        except Exception as exc:
            classified = db.dialect.classify(exc)
            self.rollback(conn)
            if isinstance(classified, FatalOpError):  # a deferred constraint
                classified.operation_index = last_index
                raise classified from exc
            db.discard()
            raise RetryableError("commit_unknown", number=getattr(classified, "number", None)) from exc

    def rollback(self, conn: Any) -> None:
        """ROLLBACK ``conn`` (``None``: nothing to do); a dead connection is dropped instead."""
        if conn is None:
            return
        try:
            self.db.dialect.rollback(conn)
        except Exception:  # noqa: BLE001 - a dead connection rolls back by itself
            self.db.discard()

    def release(self) -> None:
        """Roll back the ledger read's transaction when no group took it."""
        if self.opened is not None:
            conn, self.opened = self.opened, None
            self.rollback(conn)

    def unexpected(self, exc: Exception) -> FatalOpError | RetryableError:
        """A driver error before any operation ran (a self-reference read, say): never fatal."""
        classified = self.db.dialect.classify(exc)
        if isinstance(classified, RetryableError):
            self._drop_if_lost(classified)
            return classified
        logger.error("unexpected error before applying a group", extra={"error_type": type(exc).__name__})
        self.db.discard()
        return RetryableError("internal", retry_after_ms=5000)

    def classified(self, exc: Exception, operation: Operation, op_index: int) -> FatalOpError | RetryableError:
        """A driver error raised by ``operation`` (at ``op_index``), as the error class to answer:
        names in the client's terms; an error the dialect does not know is retryable ``internal``."""
        classified = self.db.dialect.classify(exc)
        if classified is None:
            # The stack without the exception's text, which may quote a submitted value.
            logger.error(
                "unexpected error while applying a transaction; answering retryable",
                extra={"error_type": type(exc).__name__, "stack": "".join(traceback.format_tb(exc.__traceback__))},
            )
            self.db.discard()
            return RetryableError("internal", retry_after_ms=5000)
        if isinstance(classified, RetryableError):
            self._drop_if_lost(classified)
            return classified
        if classified.code is ErrorCode.UNCLASSIFIED_ERROR:
            logger.warning("unclassified database error", extra={"error_number": classified.number})
        table_config = self.config.tables.get(operation.table)
        classified.table = operation.table
        if classified.column and table_config is not None:
            classified.column = client_column(table_config, classified.column)
        classified.operation_index = op_index
        return classified

    def _drop_if_lost(self, error: RetryableError) -> None:
        if error.kind in ("connection", "commit_unknown", "internal"):
            self.db.discard()
