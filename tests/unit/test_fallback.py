"""The fallback policy alone (:mod:`powersync_upload.fallback`), with a stand-in for the unit of work:
no database, the attempts it asks for are recorded."""

from __future__ import annotations

import pytest

from powersync_upload import fallback
from powersync_upload.attempt import Attempt, Committed, Fatal, Retryable
from powersync_upload.contract import Operation, Transaction
from powersync_upload.errors import ErrorCode, FatalOpError, RetryableError
from powersync_upload.prepare import PreparedTransaction
from powersync_upload.session import Deadline

PUT = Operation("PUT", "lists", "a", {"name": "n"})


def _group(count: int) -> list[PreparedTransaction]:
    return [PreparedTransaction(i, Transaction((PUT,), i), []) for i in range(count)]


class _Unit:
    """A unit of work whose outcome depends on the positions in the group; records every attempt."""

    def __init__(self, fatal_at: int | None = None, retryable: RetryableError | None = None) -> None:
        self.fatal_at = fatal_at
        self.retryable = retryable
        self.attempts: list[tuple[list[int], bool]] = []

    def __call__(self, group: list[PreparedTransaction], per_operation: bool) -> Attempt:
        positions = [tx.position for tx in group]
        self.attempts.append((positions, per_operation))
        if self.retryable is not None:
            return Retryable(self.retryable)
        if self.fatal_at in positions:
            return Fatal(FatalOpError(ErrorCode.NOT_NULL_VIOLATION))
        return Committed({}, {})


def test_a_fatal_transaction_in_a_group_is_found_by_halves_and_named_one_operation_at_a_time() -> None:
    # Given three transactions in one group, the second of which can never be applied
    unit = _Unit(fatal_at=1)

    # When the group is settled
    parts = list(fallback.settle(_group(3), unit, Deadline.after(30), fast_path=True))

    # Then the others commit in their own parts, the second alone is fatal, named one operation at a time
    assert [([tx.position for tx in part], type(outcome)) for part, outcome in parts] == [
        ([0], Committed),
        ([1], Fatal),
        ([2], Committed),
    ]
    assert unit.attempts == [([0, 1, 2], False), ([0], False), ([1, 2], False), ([1], False), ([1], True), ([2], False)]


def test_a_deadlock_is_attempted_again_in_process_at_most_three_times(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a unit of work that always loses a deadlock, and no real waiting
    monkeypatch.setattr(fallback.time, "sleep", lambda _s: None)
    unit = _Unit(retryable=RetryableError("deadlock", in_process=True))

    # When a group is settled with time to spare
    parts = list(fallback.settle(_group(2), unit, Deadline.after(30), fast_path=True))

    # Then it was attempted three times in all, and the group's outcome is retryable
    assert len(unit.attempts) == fallback.IN_PROCESS_ATTEMPTS
    assert [type(outcome) for _, outcome in parts] == [Retryable]


def test_an_error_the_engine_may_not_retry_itself_is_attempted_once() -> None:
    # Given a unit of work that fails with a lost connection (not retried in process)
    unit = _Unit(retryable=RetryableError("connection"))

    # When a group is settled / Then it was attempted once
    list(fallback.settle(_group(2), unit, Deadline.after(30), fast_path=True))
    assert len(unit.attempts) == 1
