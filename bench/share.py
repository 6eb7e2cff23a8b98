"""Where a request's time goes: the database's share of the handler's time, and what the ledger costs.

``make bench`` prints, per workload and dialect (loopback, the fast path):

* ``db_share_<workload>=``: the wall time of the driver calls made while the handler ran (``execute``,
  ``executemany``, ``fetch*``, ``commit``, ``rollback``, on the connection or its cursors, as seen from
  this process) over the handler's own time for that request (``lambda_handler`` in, response out; the
  client's JSON encoding of the body is outside). Median over the requests without ``client_id``.
  1.0 would mean the process only waits for the database; 0.5, that it spends as long as the database.
* ``ledger_cost_<workload>=``: the handler time of a repetition with ``client_id`` over the one without,
  taken pair by pair (with, without, then without, with: the two orders alternate) and the median of
  the ratios quoted, so the machine's drift between two runs does not enter the ratio.

The figures are ratios of times on one machine, never asserted (DESIGN.md section 6).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from powersync_upload import dialects
from tests.support import DriverCallWrapper

TIMED = frozenset(
    {"execute", "executemany", "executescript", "fetchone", "fetchmany", "fetchall", "commit", "rollback"}
)
"""The driver calls whose wall time is the database's (they wait on the wire, or decode what came back)."""


@dataclass
class DriverClock:
    """Seconds spent in driver calls since it was created."""

    seconds: float = 0.0


class TimedConnection(DriverCallWrapper):
    """A DB-API connection or cursor whose :data:`TIMED` calls add their wall time to a
    :class:`DriverClock`; what they return is wrapped too (psycopg's ``conn.execute`` returns the
    cursor whose ``fetchall`` follows). Everything else is forwarded."""

    __slots__ = ()

    WRAPPED = TIMED

    def __init__(self, target: Any, clock: DriverClock) -> None:
        super().__init__(target, clock)

    def _call(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        clock = self._wrapped_state
        started = time.perf_counter()
        try:
            result = function(*args, **kwargs)
        finally:
            clock.seconds += time.perf_counter() - started
        # psycopg's execute returns its cursor: wrap it so its fetch is timed
        return TimedConnection(result, clock) if hasattr(result, "fetchall") else result


@contextmanager
def timing_driver_calls(url: str) -> Iterator[DriverClock]:
    """Time the driver calls of every connection the dialect of ``url`` opens while the block runs."""
    clock = DriverClock()
    module: Any = dialects.load(dialects.dialect_name(url))
    original = module.connect
    module.connect = lambda target, timeout_s, statement_s=None: TimedConnection(
        original(target, timeout_s, statement_s), clock
    )
    try:
        yield clock
    finally:
        module.connect = original


Send = Callable[[list[dict[str, Any]], "str | None"], float]
"""``bench.send``: one request through the handler; returns the handler's time in seconds."""


@dataclass
class Shares:
    """The paired figures of one workload on one dialect."""

    db_share: float
    ledger_cost: float
    handler_ms: list[float] = field(default_factory=list)
    ledger_ratios: list[float] = field(default_factory=list)

    def spread(self) -> str:
        """The middle half of the pair ratios (``p25-p75``): how much the machine moved them."""
        if len(self.ledger_ratios) < 2:
            return "-"
        quartiles = statistics.quantiles(self.ledger_ratios, n=4)
        return f"{quartiles[0]:.2f}-{quartiles[2]:.2f}"


def paired(workload: Callable[[str], Any], send: Send, clock: DriverClock, reps: int) -> Shares:
    """Run ``reps`` pairs of repetitions of ``workload`` (one without ``client_id``, one with; the order
    alternates) and return the database's share and the ledger's cost (see the module docstring)."""
    shares: list[float] = []
    ratios: list[float] = []
    plain_ms: list[float] = []
    for rep in range(reps):
        order = (None, f"bench-{uuid.uuid4().hex[:12]}")
        totals: dict[bool, float] = {}
        for client_id in order if rep % 2 == 0 else order[::-1]:
            run = workload(f"share-{uuid.uuid4().hex[:10]}")
            for batch in run.setup:
                send(batch, None)
            total = 0.0
            for batch in run.requests:
                before = clock.seconds
                elapsed = send(batch, client_id)
                total += elapsed
                if client_id is None:
                    shares.append((clock.seconds - before) / elapsed)
            totals[client_id is not None] = total
            if client_id is None:
                plain_ms.append(total * 1000)
        ratios.append(totals[True] / totals[False])
    return Shares(statistics.median(shares), statistics.median(ratios), plain_ms, ratios)
