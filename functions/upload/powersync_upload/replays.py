"""The ledger's request-side use: answer a replayed transaction from the ledger, claim the ledger rows of
the transactions a group commits, and prune old rows now and then (DESIGN.md section 3, "Replays are
harmless, and with a client id they are exactly once").

The pure core is :mod:`powersync_upload.ledger` (identities, digests, decisions); the SQL is the
dialect's (``ledger_read``, ``ledger_claim``, ``ledger_prune``). One read of the ledger per request
before anything is applied (:meth:`Replays.load`), the ledger row of a committed transaction in the
same database transaction as its writes (:meth:`Replays.claim`), the row of a fatal one with its
errors-table row (:func:`powersync_upload.outcome.record_fatal`), and a duplicate identity (a resend
racing its first attempt) answered from the ledger, or 503.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from . import ledger
from .config import UploadConfig
from .contract import Transaction, TransactionResult, Upload
from .errors import RetryableError
from .session import SAFETY_MARGIN_S, Caller, Session

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0
"""Ledger rows older than ``ledger_days`` are deleted at most this often per container (seconds)."""
_last_prune = [-math.inf]
_RESULT: TypeAdapter[TransactionResult] = TypeAdapter(TransactionResult)


class AlreadyDecided(Exception):
    """A concurrent attempt decided a transaction of the group first; the group was rolled back.

    Attributes:
        stored: the ledger rows read back for the group's identities (empty: not visible yet, 503).
    """

    def __init__(self, stored: list[ledger.Entry]) -> None:
        self.stored = stored
        super().__init__("already decided")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Replays:
    """One request's use of the ledger.

    Attributes:
        identities: ``id(transaction)`` -> its identity, for the transactions that have one.
        known: ledger rows read for this request, and those this request decided, by identity (the
            first row of an identity kept; a dict, so a replay of many transactions stays linear).
        pending: ledger rows claimed in the open database transaction, by ``id(transaction)``.
    """

    user_id: str
    client_id: str | None
    retention_days: int
    identities: dict[int, ledger.Identity]
    known: dict[ledger.Identity, ledger.Entry] = field(default_factory=dict)
    pending: dict[int, ledger.Entry] = field(default_factory=dict)

    @classmethod
    def start(cls, upload: Upload, caller: Caller, config: UploadConfig) -> Replays:
        """The identities of the request's transactions (none without ``client_id``). A transaction
        repeated within the request keeps its identity only at its first occurrence (the repeat is
        applied again, as without the ledger: it must never make the request's own claim collide)."""
        identities: dict[int, ledger.Identity] = {}
        seen: set[ledger.Identity] = set()
        for transaction in upload.transactions:
            found = ledger.identity(caller.user_id, upload.client_id, transaction)
            if found is not None and found not in seen:
                seen.add(found)
                identities[id(transaction)] = found
        return cls(caller.user_id, upload.client_id, config.ledger_days, identities)

    def load(self, session: Session) -> None:
        """Read the ledger rows of every identity of the request: one statement, as the first of the
        transaction the first group then writes in (its ``BEGIN`` is the liveness check of a kept
        connection; no ROLLBACK and BEGIN in between). A missing ledger table is logged and
        the request goes on without the ledger (replays then rely on idempotency, as without
        ``client_id``).

        Raises:
            RetryableError: the database cannot be read now.
        """
        if not self.identities or self.client_id is None:
            return
        conn = _begin(session)
        digests = [i.digest for i in self.identities.values()]
        rows = _read(session, conn, self.user_id, self.client_id, digests)
        if rows is None:
            self.identities.clear()
            return
        session.opened = conn  # the first group's writes go in this transaction (nothing was written yet)
        session.db.mark_used()
        known = [e for e in (ledger.from_row(self.user_id, self.client_id, r) for r in rows) if e is not None]
        for entry in _unexpired(session, conn, known, self.retention_days):
            self.remember(entry)

    def answer(self, transaction: Transaction) -> TransactionResult | None:
        """The stored answer for a transaction decided before, or ``None`` to apply it."""
        ident = self.identities.get(id(transaction))
        if ident is None:
            return None
        return self._decided(self.known.get(ident))

    def _decided(self, stored: ledger.Entry | None) -> TransactionResult | None:
        decision = ledger.decide(stored, _now(), retention_days=self.retention_days)
        if decision.apply or decision.answer is None:
            return None
        return _RESULT.validate_python(decision.answer)

    def answer_stored(self, transaction: Transaction, stored: list[ledger.Entry]) -> TransactionResult | None:
        """The answer after a race: from the row the first attempt stored, or ``None`` (not among
        ``stored``: apply it, or answer 503 when nothing was found)."""
        ident = self.identities.get(id(transaction))
        found = ledger.find(stored, ident) if ident is not None else None
        if found is None:
            return None
        self.remember(found)
        return self._decided(found)

    def stored(self, claim: ledger.Claim, ident: ledger.Identity) -> ledger.Entry | None:
        """The row with ``ident`` among those a claim that lost its race read back."""
        rows = (ledger.from_row(ident.user_id, ident.client_id, r) for r in claim.stored)
        return ledger.find([e for e in rows if e is not None], ident)

    def entry(self, transaction: Transaction, result: TransactionResult) -> ledger.Entry | None:
        """The ledger row recording ``result`` for ``transaction`` (``None`` without an identity)."""
        ident = self.identities.get(id(transaction))
        if ident is None:
            return None
        return ledger.entry(ident, result.model_dump(mode="json", exclude_none=True), _now())

    def claim(self, session: Session, conn: Any, decided: Sequence[tuple[Transaction, TransactionResult]]) -> None:
        """Insert the ledger rows of the group's transactions in its open database transaction, before
        COMMIT: one statement for the whole group.

        Raises:
            AlreadyDecided: another attempt decided one of them first (the group was rolled back).
            RetryableError: the insert failed (the group was rolled back).
        """
        entries = {id(t): e for t, r in decided if (e := self.entry(t, r)) is not None}
        if not entries:
            return
        db = session.db
        try:
            claim = db.dialect.ledger_claim(conn, list(entries.values()))
        except Exception as exc:
            session.rollback(conn)
            classified = db.dialect.classify(exc)
            if isinstance(classified, RetryableError):
                raise classified from exc
            logger.error("cannot write the ledger", extra={"error_type": type(exc).__name__})
            raise RetryableError("ledger", retry_after_ms=5000) from exc
        if not claim.claimed:
            db.mark_used()
            raise AlreadyDecided([e for e in (self.stored(claim, x.identity) for x in entries.values()) if e])
        self.pending.update(entries)

    def committed(self, transaction: Transaction) -> None:
        """The transaction's COMMIT returned: its ledger row now answers a repeat in this request."""
        entry = self.pending.pop(id(transaction), None)
        if entry is not None:
            self.remember(entry)

    def remember(self, entry: ledger.Entry) -> None:
        """A row this request read or decided (the first one of an identity answers its repeats)."""
        self.known.setdefault(entry.identity, entry)


def _begin(session: Session) -> Any:
    """The transaction the ledger read opens (and the first group then writes in).

    Raises:
        RetryableError: a BEGIN that failed on a fresh connection, classified (the connection dropped).
    """
    try:
        return session.begin()
    except RetryableError:
        raise
    except Exception as exc:
        raise session.unexpected(exc) from exc


def _read(session: Session, conn: Any, user_id: str, client_id: str, digests: list[str]) -> list[Any] | None:
    """The ledger rows of ``digests``; ``None`` when the ledger cannot be read for good (a missing
    table, say): logged, and the request goes on without it.

    Raises:
        RetryableError: the database cannot be read now (rolled back).
    """
    try:
        return session.db.dialect.ledger_read(conn, user_id, client_id, digests)
    except Exception as exc:
        session.rollback(conn)
        classified = session.db.dialect.classify(exc)
        if isinstance(classified, RetryableError):
            raise classified from exc
        if classified is None:
            raise RetryableError("internal", retry_after_ms=5000) from exc
        logger.error("cannot read the ledger; replays are applied again", extra={"error_number": classified.number})
        return None


def _unexpired(session: Session, conn: Any, known: list[ledger.Entry], retention_days: int) -> list[ledger.Entry]:
    """``known`` without rows past the retention window; when there are such rows, pruning is overdue
    (an expired row would make the new decision's insert a duplicate): prune now, in ``conn``."""
    cutoff = (_now() - timedelta(days=retention_days)).replace(tzinfo=None)
    if not any(e.decided_at < cutoff for e in known):
        return known
    session.db.dialect.ledger_prune(conn, cutoff)
    return [e for e in known if e.decided_at >= cutoff]


def prune_if_due(replays: Replays, session: Session) -> None:
    """Delete ledger rows older than ``ledger_days``, at most once per :data:`PRUNE_INTERVAL_S`
    per container, in a short transaction of its own after the request's work. Never raises."""
    if not replays.identities or time.monotonic() - _last_prune[0] < PRUNE_INTERVAL_S:
        return
    if session.deadline.remaining() < 3 * SAFETY_MARGIN_S:
        return
    _last_prune[0] = time.monotonic()
    db = session.db
    before = (_now() - timedelta(days=replays.retention_days)).replace(tzinfo=None)
    conn = None
    try:
        conn = db.connection(2.0)
        db.dialect.begin(conn, 2.0)
        deleted = db.dialect.ledger_prune(conn, before)
        db.dialect.commit(conn)
        logger.info("ledger pruned", extra={"deleted": deleted})
    except Exception as exc:  # noqa: BLE001 - pruning is housekeeping: the next container tries again
        logger.warning("could not prune the ledger", extra={"error_type": type(exc).__name__})
        session.rollback(conn)
