"""The client ledger's pure core: which transaction is which, and whether a replay is answered from it.

DESIGN.md section 3, "Replays are harmless, and with a client id they are exactly once". When a request
names ``client_id`` and every operation of a transaction carries ``op_id``, the transaction's
:class:`Identity` is (user, client id, first and last op_id, :func:`digest`). An identity decided within
``ledger_days`` is not applied again: :func:`decide` answers the stored result (``success`` with one
``ALREADY_APPLIED`` warning, or the same ``fatal_error``). An unknown identity is always applied, whatever
its op_ids: a cleared database keeps its client id and restarts op ids, so nothing is ever dropped on the
strength of an op_id alone.

Everything here takes values and returns frozen dataclasses: no connection, no clock (``now`` is passed
in), no randomness. The SQL lives in the dialects (``ledger_read``, ``ledger_claim``, ``ledger_prune``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from .contract import Operation, Transaction
from .convert import InvalidValue, convert
from .schema import Column, Kind

TABLE = "powersync_upload_ledger"
"""The ledger table (``db/migrations/<dialect>/002_powersync_upload_ledger.sql``)."""

MAX_ID_CHARS = 255
"""Longest user id or client id the ledger stores; a request with a longer one is applied without the
ledger (replays then rely on idempotency alone)."""

ALREADY_APPLIED: dict[str, Any] = {"status": "success", "warnings": [{"code": "ALREADY_APPLIED"}]}
"""The answer to a replay of a committed transaction: exactly one warning, no operation index."""


@dataclass(frozen=True)
class Identity:
    """What makes two transactions the same one.

    Attributes:
        user_id: the JWT ``sub``.
        client_id: the request's ``client_id`` (the SDK's ``getClientId()``).
        first_op_id: ``op_id`` of the transaction's first operation.
        last_op_id: ``op_id`` of its last operation.
        digest: :func:`digest` of its operations (64 hex digits).
    """

    user_id: str
    client_id: str
    first_op_id: int
    last_op_id: int
    digest: str


_SUCCESS: dict[str, Any] = {"status": "success"}
_SUCCESS_TEXT = '{"status":"success"}'


@dataclass(frozen=True)
class Entry:
    """One ledger row: a decided transaction.

    Attributes:
        identity: the transaction.
        result: the result JSON answered for it (``status`` ``success`` or ``fatal_error``; names and
            codes only, never values).
        decided_at: when it was decided, naive UTC at millisecond precision.
    """

    identity: Identity
    result: dict[str, Any]
    decided_at: datetime

    def result_text(self) -> str:
        """``result`` as the JSON text stored in the ``result`` column."""
        if self.result == _SUCCESS:  # most rows: one text, not one encoding per transaction
            return _SUCCESS_TEXT
        return json.dumps(self.result, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Decision:
    """What to do with one transaction.

    Attributes:
        apply: True to apply it (unknown identity, expired, or no identity at all).
        answer: when ``apply`` is False, the result JSON to answer instead.
    """

    apply: bool
    answer: dict[str, Any] | None = None


APPLY = Decision(apply=True)


@dataclass(frozen=True)
class Claim:
    """What the dialect's ``ledger_claim`` found.

    Attributes:
        claimed: True when the rows were inserted in the open transaction.
        stored: when not claimed, the rows already in the ledger for those identities, as
            ``ledger_read`` returns them (read after the dialect rolled the transaction back; empty when
            the other attempt's row is not visible yet).
    """

    claimed: bool
    stored: tuple[tuple[Any, ...], ...] = ()


CLAIMED = Claim(claimed=True)


def _canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces; numbers as parsed (a decimal keeps its digits).

    The reference definition of the digest's text, and the path taken for what :func:`_canonical_fast`
    cannot encode (``NaN``/``Infinity``, or a string that looks like its decimal placeholder)."""
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{_canonical(str(k))}:{_canonical(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # nan, inf: accepted by the parser as tokens (DESIGN section 2)
    return json.dumps(value, ensure_ascii=False)


_PLACEHOLDER = "\x00"
_DECIMAL_MARK = '"\\u0000"'
"""A ``Decimal`` is encoded by the C encoder as the string ``"\\x00"`` (JSON ``"\\u0000"``), then the
token is replaced by the decimal's digits."""


def _canonical_fast(value: Any) -> str | None:
    """:func:`_canonical`'s text from the C JSON encoder (about 10x faster), or ``None`` when it cannot
    give the same text: a non-finite float (the encoder spells it ``NaN``, :func:`_canonical` ``nan``),
    a value JSON cannot encode, or a string whose encoding holds the placeholder token.

    Same text because both sort keys the same way, use the same string escaping (``ensure_ascii=False``,
    lone surrogates kept) and ``repr`` for ints and floats; decimals are spliced in as ``str(value)``.
    The placeholder check is exact: every decimal yields one token and tokens never overlap, so as many
    tokens as decimals means none came from a string.

    Raises:
        RecursionError: values nested too deeply for the encoder.
    """
    numbers: list[str] = []

    def number(item: Any) -> str:
        if not isinstance(item, Decimal):
            raise TypeError(type(item).__name__)
        numbers.append(str(item))
        return _PLACEHOLDER

    try:
        text = json.dumps(
            value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False, default=number
        )
    except (TypeError, ValueError):
        return None
    if not numbers:
        return text
    parts = text.split(_DECIMAL_MARK)
    if len(parts) != len(numbers) + 1:
        return None
    pieces = [parts[0]]
    for digits, part in zip(numbers, parts[1:], strict=True):
        pieces += (digits, part)
    return "".join(pieces)


def digest(operations: Sequence[Operation]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``[op, table, id, data, old, metadata]`` per operation,
    after aliases (both request shapes give the same digest for the same transaction).

    Raises:
        RecursionError: values nested too deeply to encode.
    """
    value = [[o.op, o.table, o.id, o.data, o.old, o.metadata] for o in operations]
    text = _canonical_fast(value)
    if text is None:
        text = _canonical(value)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def identity(user_id: str, client_id: str | None, transaction: Transaction) -> Identity | None:
    """The transaction's identity, or ``None`` when it has none: no ``client_id``, an operation
    without ``op_id``, no operations, an id the ledger cannot store as sent, or values nested too
    deeply to digest (such a transaction is applied without the ledger)."""
    operations = transaction.operations
    if not client_id or not operations or any(o.op_id is None for o in operations):
        return None
    if not (_storable(client_id) and _storable(user_id)):
        return None
    first, last = operations[0].op_id, operations[-1].op_id
    assert first is not None and last is not None
    try:
        return Identity(user_id, client_id, first, last, digest(operations))
    except RecursionError:
        return None


def entry(ident: Identity, result: dict[str, Any], now: datetime) -> Entry:
    """The ledger row for a transaction decided ``now`` (any timezone; stored as naive UTC, ms)."""
    return Entry(ident, result, _naive_utc(now))


def from_row(user_id: str, client_id: str, row: Sequence[Any]) -> Entry | None:
    """An :class:`Entry` from a row of the dialect's ``ledger_read``:
    ``(first_op_id, last_op_id, digest, result JSON text, decided_at)``.

    Returns:
        ``None`` when the stored result is not readable JSON of a decided transaction (such a row is
        treated as unknown: the transaction is applied).
    """
    first, last, digest_, text, decided = row
    try:
        result = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("status") not in ("success", "fatal_error"):
        return None
    when = decided if isinstance(decided, datetime) else datetime.fromisoformat(str(decided).replace(" ", "T"))
    return Entry(Identity(user_id, client_id, int(first), int(last), str(digest_).strip()), result, _naive_utc(when))


def decide(stored: Entry | None, now: datetime, *, retention_days: int) -> Decision:
    """Apply, or answer from the ledger.

    Args:
        stored: the ledger row with the transaction's identity, if any.
        now: the current time (any timezone; naive means UTC).
        retention_days: ``ledger_days``: an older row is forgotten and the transaction applied.

    Returns:
        :data:`APPLY`, or the answer: ``success`` with exactly one ``ALREADY_APPLIED`` warning for a
        committed transaction, the same ``fatal_error`` for a rejected one.
    """
    if stored is None or stored.decided_at < _naive_utc(now) - timedelta(days=retention_days):
        return APPLY
    if stored.result.get("status") == "success":
        return Decision(apply=False, answer=ALREADY_APPLIED)
    return Decision(apply=False, answer=stored.result)


def find(entries: Sequence[Entry], ident: Identity) -> Entry | None:
    """The entry with exactly ``ident`` among rows read for a request (``None`` when absent)."""
    return next((e for e in entries if e.identity == ident), None)


_ID_COLUMN = Column("client_id", Kind.TEXT, max_length=MAX_ID_CHARS)


@lru_cache(maxsize=64)
def _storable(text: str) -> bool:
    """Whether an id can be stored and compared as sent: at most :data:`MAX_ID_CHARS` characters, valid
    UTF-8 (no lone surrogates) and no NUL (the rules of a client text value)."""
    try:
        convert(text, _ID_COLUMN)
    except InvalidValue:
        return False
    return True


def _naive_utc(when: datetime) -> datetime:
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)
