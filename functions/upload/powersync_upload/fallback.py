"""The fallback policy: when a group's attempt fails, retry it in process, apply a single transaction
one operation at a time, or split the group in halves, until every part has its outcome (DESIGN.md
section 3: "the outcome is exactly that of one database transaction per client transaction").

In the order :func:`settle` applies them:

* a deadlock victim, a lock timeout or a serialization failure is attempted again in process, with
  jittered backoff, up to :data:`IN_PROCESS_ATTEMPTS` times while the deadline allows; a single
  transaction whose PUT met ``UNIQUE_VIOLATION`` is attempted once more (:func:`_attempted_with_retries`);
* a single transaction that fails as batches is applied again one statement per operation in the
  planner's order, which names the failing operation (:func:`_batches_then_one_at_a_time`);
* a group of several transactions that meets a fatal error (or a PUT batch's insert-only assumption
  fails) is applied again in two halves, recursively (:func:`settle`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator

from .attempt import Attempt, Fatal, NotAsPlanned, Retryable
from .errors import ErrorCode
from .prepare import PreparedTransaction
from .session import SAFETY_MARGIN_S, Deadline

logger = logging.getLogger(__name__)

IN_PROCESS_ATTEMPTS = 3
"""Attempts for a transaction that lost a deadlock or a lock wait (the first one included)."""

Group = list[PreparedTransaction]
AttemptGroup = Callable[[Group, bool], Attempt]
"""Apply a group in one database transaction: ``(group, per_operation) -> Attempt``
(:func:`powersync_upload.attempt.apply_group`)."""


def settle(
    group: Group, attempt: AttemptGroup, deadline: Deadline, *, fast_path: bool
) -> Iterator[tuple[Group, Attempt]]:
    """Apply ``group``, falling back as the module docstring says; yield each part with its final
    outcome, in request order. A part is the whole group, a half of it, or one transaction; only a
    single transaction is yielded ``Fatal``. The caller may stop iterating (the rest is not attempted).

    Args:
        fast_path: batches first; ``False`` applies one statement per operation from the start.
    """
    outcome = _attempted_with_retries(group, attempt, deadline, fast_path)
    if isinstance(outcome, Fatal | NotAsPlanned) and len(group) > 1:
        middle = len(group) // 2
        yield from settle(group[:middle], attempt, deadline, fast_path=fast_path)
        yield from settle(group[middle:], attempt, deadline, fast_path=fast_path)
        return
    yield group, outcome


def _attempted_with_retries(group: Group, attempt: AttemptGroup, deadline: Deadline, fast_path: bool) -> Attempt:
    """Attempt a group; again in process after a deadlock or lock timeout, and a single transaction
    once more after a UNIQUE_VIOLATION raised by a PUT: a concurrent insert of the same new id can trip
    a *second* unique index before the key conflict is seen (PostgreSQL's ON CONFLICT only arbitrates
    the key); on the second attempt the row exists and the PUT updates it. A real duplicate fails again."""
    tries = 1
    while True:
        outcome = _batches_then_one_at_a_time(group, attempt, fast_path)
        if isinstance(outcome, Fatal) and tries == 1 and _a_put_met_a_unique_index(group, outcome):
            tries += 1
            continue
        if isinstance(outcome, Retryable):
            backoff = random.uniform(0.5, 1.5) * 0.05 * 2**tries  # noqa: S311 - jitter, not cryptography
            error = outcome.error
            if (
                error.in_process
                and tries < IN_PROCESS_ATTEMPTS
                and deadline.remaining() >= backoff + 2 * SAFETY_MARGIN_S
            ):
                logger.info("retrying transaction in process", extra={"kind": error.kind, "attempt": tries})
                time.sleep(backoff)
                tries += 1
                continue
        return outcome


def _a_put_met_a_unique_index(group: Group, outcome: Fatal) -> bool:
    """A single transaction whose failing operation is a PUT that raised ``UNIQUE_VIOLATION``."""
    if len(group) > 1 or outcome.error.code is not ErrorCode.UNIQUE_VIOLATION:
        return False
    return group[0].transaction.operations[outcome.error.operation_index].op == "PUT"


def _batches_then_one_at_a_time(group: Group, attempt: AttemptGroup, fast_path: bool) -> Attempt:
    """Batches; for a single transaction that is fatal as batches, one statement per operation."""
    if fast_path:
        outcome = attempt(group, False)
        if not (isinstance(outcome, Fatal) and len(group) == 1):
            return outcome
        logger.debug("a batch hit a fatal error; applying the transaction one operation at a time")
    return attempt(group, True)
