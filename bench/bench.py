"""Benchmark: the planned (fast) path against the per-operation baseline, through the real handler.

Workloads (shape B, fresh UUIDs, the demo ``lists``/``todos`` tables, user U1):

* ``put_1000``          1 transaction of 1000 PUTs of new lists;
* ``update_1000``       1 transaction of 1000 PUTs of existing lists (inserted first, not timed);
* ``interleaved_1000``  1 transaction of 200 cycles [PUT list L {name}, PUT todo T {list_id: L,
                        description}, PATCH T {completed}, PATCH L {name}, DELETE T];
* ``tx50x20``           50 transactions of 4 such cycles, one request;
* ``tx100x1``           100 single-PUT transactions, one request (what ``getCrudBatch(100)`` sends);
* ``put_10000``         1 transaction of 10,000 PUTs of new lists;
* ``drain_500``         500 single-PUT transactions in 5 requests of 100;
* ``patch_old_1000``    1 transaction of 1000 PATCHes of existing todos, each with ``old`` (what a
                        table with ``trackPrevious`` sends), under the shipped configuration;
* ``patch_checked_1000`` the same under ``bench/conflicts.yaml`` (todos with ``detect:
                        previous_values`` and ``deltas: [priority]``), none stale: its statements
                        per request against ``patch_old_1000``'s are what the checks cost.

Each runs without ``client_id`` and again with one (the ledger's read and write, once it exists),
in both modes: ``fast`` (the default) and ``per-op`` (``FAST_PATH=0``: one statement per operation,
one database transaction per client transaction), the per-op runs with the deadline lifted
(``DEADLINE_S=300``) so that 10,000 operations through the proxy can finish. Each runs on loopback
and through ``bench/proxy.py``, which adds 0.5 ms per chunk and direction (a round trip costs 1 ms
more, as a Lambda in a VPC pays to reach RDS). PostgreSQL and MariaDB/MySQL run on both; SQLite on
loopback only (no wire); SQL Server on both whenever ``MSSQL_URL`` is set.

Per line: ops/s (operations applied per second of request time), p50/p95 request latency (ms),
statements per request (round trips counted at the proxy; SQLite: driver calls), the peak RSS of the
benchmark process during the workload (MiB; the high-water mark is reset before each workload), and
the speedup (fast ops/s / per-op ops/s, same network, dialect and ``client_id``). Then the memory
figures of ``bench/memory.py`` (a fresh process at the body cap) and the import time of ``app``, and
``summary`` lines: ``speedup_<workload>_1ms=`` (through the proxy, without ``client_id``),
``statements_<workload>=`` (fast path, per request), ``db_share_<workload>=`` and
``ledger_cost_<workload>=`` (loopback, paired: ``bench/share.py``), ``peak_mb_cap=``, ``import_ms=``;
the last line is PostgreSQL's. ``--shares-only`` prints only the paired figures. Nothing here asserts
anything: these are figures to compare run to run.

Usage: ``make bench`` (or ``python bench/bench.py [--quick] [--dialects postgresql,mysql]
[--workloads put_1000,...]``). ``--quick`` (or ``BENCH_QUICK=1``) runs fewer repetitions, and skips
the per-op baselines of ``put_10000`` and of the ``client_id`` lines: on two busy cores the run then
takes about 2 minutes instead of 15 (the full run spends most of them waiting on the per-op
baselines through the proxy: ``put_10000`` alone is 20,000 to 30,000 round trips).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
# not this script's folder (``bench`` must be the package bench/, not this file), but the function and the root
sys.path[:] = [str(ROOT / "functions" / "upload"), str(ROOT)] + [
    p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"
]
os.environ.setdefault("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/powersync_upload_bench")
os.environ.setdefault("MYSQL_URL", "mysql://root@127.0.0.1:3306/powersync_upload_bench")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

from bench import memory, share  # noqa: E402
from powersync_upload import dialects  # noqa: E402
from powersync_upload.handler import lambda_handler, set_runtime  # noqa: E402
from powersync_upload.local import LocalContext, schema_scripts  # noqa: E402
from tests.support import (  # noqa: E402
    DEFAULT_PORTS,
    MSSQL_URL,
    MYSQL_URL,
    POSTGRES_URL,
    authorization,
    counting_round_trips,
    event,
    install_runtime,
    reset_database,
)

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
CONFIGS = {"patch_checked_1000": ROOT / "bench" / "conflicts.yaml"}
"""Workloads that run under another configuration than the shipped one."""
BASELINE_DEADLINE_S = 300.0
DELAY_MS = 0.5
Entry = dict[str, Any]


# ---- workloads -----------------------------------------------------------------------------------


@dataclass
class Workload:
    """One repetition of a workload: requests sent first and not timed, then the timed requests."""

    setup: list[list[Entry]]
    requests: list[list[Entry]]

    @property
    def operations(self) -> int:
        """Operations in the timed requests."""
        return sum(len(batch) for batch in self.requests)


def _new_id() -> str:
    return str(uuid.uuid4())


def _put_list(list_id: str, name: str) -> Entry:
    return {"op": "PUT", "type": "lists", "id": list_id, "data": {"name": name}}


def _cycle(tag: str) -> list[Entry]:
    list_id, todo_id = _new_id(), _new_id()
    return [
        _put_list(list_id, f"{tag}-a"),
        {"op": "PUT", "type": "todos", "id": todo_id, "data": {"list_id": list_id, "description": tag}},
        {"op": "PATCH", "type": "todos", "id": todo_id, "data": {"completed": True}},
        {"op": "PATCH", "type": "lists", "id": list_id, "data": {"name": f"{tag}-b"}},
        {"op": "DELETE", "type": "todos", "id": todo_id},
    ]


def _batches(transactions: list[list[Entry]], per_request: int | None = None) -> list[list[Entry]]:
    """Number op_ids and tx_ids in queue order and cut the queue into requests of ``per_request``
    transactions (all in one request when ``None``)."""
    op_id = 0
    numbered: list[list[Entry]] = []
    for tx_id, transaction in enumerate(transactions, start=1):
        for entry in transaction:
            op_id += 1
            entry.update(op_id=op_id, tx_id=tx_id)
        numbered.append(transaction)
    size = per_request or len(numbered)
    return [[e for tx in numbered[start : start + size] for e in tx] for start in range(0, len(numbered), size)]


def put_n(tag: str, n: int) -> Workload:
    """One transaction of ``n`` PUTs of new lists."""
    return Workload([], _batches([[_put_list(_new_id(), f"{tag}-{i}") for i in range(n)]]))


def update_1000(tag: str) -> Workload:
    """1000 lists inserted (not timed), then one transaction of 1000 PUTs replacing them."""
    ids = [_new_id() for _ in range(1000)]
    setup = _batches([[_put_list(list_id, f"{tag}-{i}") for i, list_id in enumerate(ids)]])
    timed = _batches([[_put_list(list_id, f"{tag}-{i}-v2") for i, list_id in enumerate(ids)]])
    return Workload(setup, timed)


def interleaved_1000(tag: str) -> Workload:
    """One transaction of 200 interleaved cycles over lists and todos (1000 operations)."""
    return Workload([], _batches([[e for i in range(200) for e in _cycle(f"{tag}-{i}")]]))


def tx50x20(tag: str) -> Workload:
    """50 transactions of 4 cycles (20 operations each), one request."""
    return Workload([], _batches([[e for c in range(4) for e in _cycle(f"{tag}-{t}-{c}")] for t in range(50)]))


def tx100x1(tag: str) -> Workload:
    """100 single-PUT transactions, one request."""
    return Workload([], _batches([[_put_list(_new_id(), f"{tag}-{i}")] for i in range(100)]))


def drain_500(tag: str) -> Workload:
    """500 single-PUT transactions, sent as 5 requests of 100 (a device draining its queue)."""
    return Workload([], _batches([[_put_list(_new_id(), f"{tag}-{i}")] for i in range(500)], per_request=100))


def patch_old_1000(tag: str) -> Workload:
    """A list and 1000 todos inserted (not timed), then one transaction of 1000 PATCHes of the todos,
    each with the old values of the columns it changes (none stale)."""
    list_id, ids = _new_id(), [_new_id() for _ in range(1000)]
    todos = [
        {
            "op": "PUT",
            "type": "todos",
            "id": t,
            "data": {"list_id": list_id, "description": f"{tag}-{i}", "priority": 0},
        }
        for i, t in enumerate(ids)
    ]
    patches = [
        {
            "op": "PATCH",
            "type": "todos",
            "id": t,
            "data": {"description": f"{tag}-{i}-v2", "priority": 1},
            "old": {"description": f"{tag}-{i}", "priority": 0},
        }
        for i, t in enumerate(ids)
    ]
    return Workload(_batches([[_put_list(list_id, tag), *todos]]), _batches([patches]))


WORKLOADS: dict[str, Callable[[str], Workload]] = {
    "put_1000": lambda tag: put_n(tag, 1000),
    "update_1000": update_1000,
    "interleaved_1000": interleaved_1000,
    "tx50x20": tx50x20,
    "tx100x1": tx100x1,
    "put_10000": lambda tag: put_n(tag, 10_000),
    "drain_500": drain_500,
    "patch_old_1000": patch_old_1000,
    "patch_checked_1000": patch_old_1000,
}
HEAVY = {"put_10000"}


def repetitions(workload: str, fast: bool, quick: bool) -> int:
    """Repetitions of a workload: fewer for the slow per-op baseline and the 10,000-operation one."""
    if workload in HEAVY:
        return (2 if fast else 1) if quick else (3 if fast else 1)
    if quick:
        return 2 if fast else 1
    return 5 if fast else 2


# ---- the delay proxy, as its own process ---------------------------------------------------------


class ProxyProcess:
    """``bench/proxy.py`` in a child process (so its event loop never waits for this process's GIL);
    :meth:`round_trips` asks it for its count."""

    def __init__(self, url: str, delay_ms: float) -> None:
        parts = urlsplit(url)
        name = dialects.dialect_name(url)
        target = f"{parts.hostname or '127.0.0.1'}:{parts.port or DEFAULT_PORTS[name]}"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "proxy.py"), "--target", target, "--delay-ms", str(delay_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline().split()[1])
        userinfo = parts.netloc.rpartition("@")[0]
        self.url = parts._replace(netloc=(f"{userinfo}@" if userinfo else "") + f"127.0.0.1:{port}").geturl()

    def round_trips(self) -> int:
        """Round trips through the proxy so far."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        """End the proxy process."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


@contextmanager
def network(url: str, via_proxy: bool) -> Iterator[tuple[str, Callable[[], int] | None]]:
    """The URL to connect to and a round-trip counter: through the delay proxy, or loopback (SQLite
    counts its driver calls; a server database on loopback is not counted)."""
    if via_proxy:
        proxy = ProxyProcess(url, DELAY_MS)
        try:
            yield proxy.url, proxy.round_trips
        finally:
            proxy.close()
    elif dialects.dialect_name(url) == "sqlite":
        with counting_round_trips(url) as counter:
            yield counter.url, lambda: counter.count
    else:
        yield url, None


def proxy_cost_ms(url: str) -> float:
    """What one round trip through the proxy really adds here, in ms (the median of 200 trivial
    queries through it minus the median without it): the 1 ms asked for, plus scheduling delay."""
    from powersync_upload.database import Database

    def median_ms(target: str) -> float:
        db = Database.from_url(target)
        conn = db.dialect.connect(target, 10)
        cursor = conn.cursor()
        samples = []
        for _ in range(200):
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            samples.append((time.perf_counter() - started) * 1000)
        conn.close()
        return statistics.median(samples)

    with network(url, True) as (proxied, _count):
        return median_ms(proxied) - median_ms(url)


# ---- measuring -----------------------------------------------------------------------------------


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (Linux ``clear_refs``), so a workload's peak is its own."""
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak is the process's so far
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def send(batch: list[Entry], client_id: str | None) -> float:
    """One request through the handler; anything but 200 with every transaction a success stops the run.
    Returns the handler's time (s): the event is built before, the response read after."""
    body: dict[str, Any] = {"batch": batch}
    if client_id is not None:
        body["client_id"] = client_id
    context = LocalContext(timeout_s=BASELINE_DEADLINE_S + 10)
    request = event(json.dumps(body), authorization("U1"))
    started = time.perf_counter()
    out = lambda_handler(request, context)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    results = json.loads(out["body"]).get("results") if out.get("body") else None
    if out["statusCode"] != 200 or not results or any(r["status"] != "success" for r in results):
        raise RuntimeError(f"benchmark request failed: HTTP {out['statusCode']}: {str(results)[:300]}")
    return elapsed


def shares(url: str, name: str, quick: bool) -> share.Shares:
    """``db_share`` and ``ledger_cost`` of workload ``name`` (loopback, fast path; bench/share.py)."""
    reps = (3 if quick else 4) if name in HEAVY else (6 if quick else 10)
    with share.timing_driver_calls(url) as clock:
        rt = install_runtime(url, CONFIGS.get(name, CONFIG))
        try:
            for client_id in (None, f"bench-{uuid.uuid4().hex[:12]}"):  # connection, schema cache, ledger
                send(tx100x1(f"warm-{uuid.uuid4().hex[:8]}").requests[0][:10], client_id)
            return share.paired(WORKLOADS[name], send, clock, reps)
        finally:
            rt.db.discard()
            set_runtime(None)


@dataclass
class Figures:
    """One line of the table."""

    ops_s: float
    p50_ms: float
    p95_ms: float
    statements: float | None
    peak_mb: float


WARM_ENTRIES = 50
"""Entries of the untimed request that starts each measurement (see :func:`warm_up`)."""


def warm_up(name: str, client_id: str | None) -> None:
    """One untimed request of workload ``name`` (its setup, then the first :data:`WARM_ENTRIES` entries
    of its first request) on the measurement's new connection: the connection, the schema cache, and
    each statement's first execution on that connection (a plan compiled on SQL Server; on Babelfish
    the T-SQL compiled in the new backend: 100-500 ms per statement text there) are then not part of
    the timed repetitions, on every dialect alike."""
    workload = WORKLOADS[name](f"warm-{uuid.uuid4().hex[:8]}")
    for batch in workload.setup:
        send(batch, None)
    send(workload.requests[0][:WARM_ENTRIES], client_id)


def measure(url: str, name: str, *, fast: bool, with_client_id: bool, reps: int, via_proxy: bool) -> Figures:
    """Run ``reps`` repetitions of workload ``name`` in one mode and return its figures."""
    settings: dict[str, Any] = {"fast_path": fast}
    if not fast:
        settings["deadline_s"] = BASELINE_DEADLINE_S
    with network(url, via_proxy) as (target, count):
        rt = install_runtime(target, CONFIGS.get(name, CONFIG), **settings)
        try:
            client_id = f"bench-{uuid.uuid4().hex[:12]}" if with_client_id else None
            warm_up(name, client_id)
            latencies: list[float] = []
            statements: list[int] = []
            operations = 0
            reset_peak_rss()
            for _ in range(reps):
                workload = WORKLOADS[name](f"{name}-{uuid.uuid4().hex[:10]}")
                client_id = f"bench-{uuid.uuid4().hex[:12]}" if with_client_id else None
                for batch in workload.setup:
                    send(batch, None)
                operations += workload.operations
                for batch in workload.requests:
                    before = count() if count else 0
                    started = time.perf_counter()
                    send(batch, client_id)
                    latencies.append(time.perf_counter() - started)
                    if count:
                        statements.append(count() - before)
            peak = peak_rss_mb()
        finally:
            rt.db.discard()
            set_runtime(None)
    latencies.sort()
    return Figures(
        ops_s=operations / sum(latencies),
        p50_ms=statistics.median(latencies) * 1000,
        p95_ms=latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))] * 1000,
        statements=statistics.median(statements) if statements else None,
        peak_mb=peak,
    )


def available(wanted: list[str] | None) -> list[str]:
    """The dialects to run: PostgreSQL and SQLite always, MariaDB/MySQL when reachable, SQL Server
    when ``MSSQL_URL`` is set."""
    names = ["postgresql", "mysql", "sqlite"]
    if MSSQL_URL:
        names.append("mssql")
    if wanted:
        names = [n for n in names if n in wanted]
    if "mysql" in names:
        try:
            dialects.load("mysql").connect(MYSQL_URL.rsplit("/", 1)[0] + "/", 2).close()
        except Exception:  # noqa: BLE001 - MariaDB is optional for the benchmark
            print("(MariaDB/MySQL not reachable: skipped)")
            names.remove("mysql")
    return names


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


HEADER = (
    f"{'dialect':<11}{'net':<6}{'workload':<18}{'cid':<4}{'mode':<7}{'ops/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
    f"{'stmts':>7}{'peak MiB':>9}{'speedup':>9}"
)


@contextmanager
def recording_sql_server_texts(texts: set[str]) -> Iterator[None]:
    """Add to ``texts`` the statement text SQL Server compiles for each call the SQL Server dialect
    makes (the inner text of an ``sp_executesql`` call; parameter values are never part of it)."""
    from powersync_upload.dialects import mssql

    execute = mssql.execute

    def recording(cursor: Any, sql: str, params: tuple[Any, ...] | None = None) -> Any:
        texts.add(mssql.inner_statement(sql))
        return execute(cursor, sql, params)

    mssql.execute = recording  # type: ignore[assignment]
    try:
        yield
    finally:
        mssql.execute = execute  # type: ignore[assignment]


def statement_forms(url: str, quick: bool) -> str:
    """``put_1000`` through the proxy with the SQL Server statements as they were (VALUES lists of
    typed literals, :mod:`bench.mssql_values`) and as they are (sp_executesql and OPENJSON): one line."""
    from bench import mssql_values

    reps = repetitions("put_1000", True, quick)
    with mssql_values.installed():
        old = measure(url, "put_1000", fast=True, with_client_id=False, reps=reps, via_proxy=True)
    new = measure(url, "put_1000", fast=True, with_client_id=False, reps=reps, via_proxy=True)
    return (
        f"mssql: put_1000 through the proxy, request p50: VALUES form {old.p50_ms:.0f} ms, "
        f"sp_executesql/OPENJSON form {new.p50_ms:.0f} ms ({old.p50_ms / new.p50_ms:.1f}x)"
    )


def run_dialect(dialect: str, workloads: list[str], quick: bool, table: bool = True) -> dict[str, dict[str, Any]]:
    """Every workload on ``dialect`` (:func:`_run_dialect`); on SQL Server also ``distinct_sql`` and the
    two statement forms of ``put_1000``."""
    if dialect != "mssql":
        return _run_dialect(dialect, workloads, quick, table)
    texts: set[str] = set()
    with recording_sql_server_texts(texts):
        summary = _run_dialect(dialect, workloads, quick, table)
    print(f"mssql: {len(texts)} distinct statement texts over the whole run")
    if "put_1000" in workloads:
        print(statement_forms(MSSQL_URL, quick))
    summary["distinct_sql"] = {"value": len(texts)}
    return summary


def _run_dialect(dialect: str, workloads: list[str], quick: bool, table: bool = True) -> dict[str, dict[str, Any]]:
    """Every workload on ``dialect``; returns the summary figures of its proxy (or loopback) runs and
    the paired ``db_share``/``ledger_cost`` (only those when ``table`` is False)."""
    url = reset_database(dialect, schema_scripts(dialect), Path(tempfile.mkdtemp(prefix="bench-")))
    summary: dict[str, dict[str, Any]] = {}
    for name in workloads:
        paired = shares(url, name, quick)
        summary[name] = {"speedup": None, "statements": None, "db_share": paired.db_share}
        summary[name]["ledger_cost"] = paired.ledger_cost
        print(
            f"{dialect}: {name} loopback, paired: db_share={paired.db_share:.2f} ledger_cost={paired.ledger_cost:.2f} "
            f"(pairs p25-p75 {paired.spread()}) "
            f"(handler ms without client_id: {', '.join(f'{ms:.0f}' for ms in paired.handler_ms)})",
            flush=True,
        )
    if not table:
        return summary
    nets = [False] if dialect == "sqlite" else [False, True]
    per_op: dict[tuple[str, bool], Figures] = {}
    if dialect != "sqlite":
        print(f"{dialect}: a round trip through the proxy costs +{proxy_cost_ms(url):.2f} ms here (asked: +1 ms)")
    for via_proxy in nets:
        net = "1ms" if via_proxy else "loop"
        for name in workloads:
            for with_client_id in (False, True):
                skip_baseline = quick and (name in HEAVY or with_client_id)
                modes = ["fast"] if skip_baseline else ["per-op", "fast"]
                figures = {
                    mode: measure(
                        url,
                        name,
                        fast=mode == "fast",
                        with_client_id=with_client_id,
                        reps=repetitions(name, mode == "fast", quick),
                        via_proxy=via_proxy,
                    )
                    for mode in modes
                }
                speedup = figures["fast"].ops_s / figures["per-op"].ops_s if "per-op" in figures else None
                for mode, f in figures.items():
                    print(
                        f"{dialect:<11}{net:<6}{name:<18}{'yes' if with_client_id else 'no':<4}{mode:<7}"
                        f"{f.ops_s:>9.0f}{f.p50_ms:>9.1f}{f.p95_ms:>9.1f}{_fmt(f.statements, '.0f'):>7}"
                        f"{f.peak_mb:>9.0f}" + (f"{_fmt(speedup, '.1f'):>8}x" if mode == "fast" else "")
                    )
                sys.stdout.flush()
                if not with_client_id and (via_proxy or dialect == "sqlite"):
                    summary[name].update(speedup=speedup, statements=figures["fast"].statements)
                if not with_client_id and "per-op" in figures:
                    per_op[(name, via_proxy)] = figures["per-op"]
    loop, slow = per_op.get(("put_1000", False)), per_op.get(("put_1000", True))
    if loop and slow and slow.statements:
        added = (slow.p50_ms - loop.p50_ms) / slow.statements
        print(f"{dialect}: through the proxy the engine paid +{added:.2f} ms per round trip (put_1000 per-op, p50)")
    return summary


def summary_line(label: str, figures: dict[str, dict[str, Any]], peak_mb: float | None, import_ms: float) -> str:
    """``summary`` and its key=value pairs."""
    suffix = "1ms" if label != "summary_sqlite" else "loop"
    parts = [label]
    workloads = {name: values for name, values in figures.items() if "speedup" in values}
    for name, values in workloads.items():
        parts.append(f"speedup_{name}_{suffix}={_fmt(values['speedup'], '.1f')}")
    for name, values in workloads.items():
        parts.append(f"statements_{name}={_fmt(values['statements'], '.0f')}")
    for key in ("db_share", "ledger_cost"):
        parts += [f"{key}_{name}={_fmt(values.get(key), '.2f')}" for name, values in workloads.items()]
    parts += [f"{name}={values['value']}" for name, values in figures.items() if "value" in values]
    parts += [f"peak_mb_cap={_fmt(peak_mb, '.0f')}", f"import_ms={import_ms:.0f}"]
    return " ".join(parts)


def main() -> int:
    """Run the benchmark and print its figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    parser.add_argument("--dialects", help="comma-separated subset of postgresql,mysql,sqlite,mssql")
    parser.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--shares-only", action="store_true", help="only db_share and ledger_cost (bench/share.py)")
    args = parser.parse_args()
    workloads = args.workloads.split(",") if args.workloads else list(WORKLOADS)
    names = available(args.dialects.split(",") if args.dialects else None)
    print(
        f"per-op baseline: FAST_PATH=0 with DEADLINE_S={BASELINE_DEADLINE_S:.0f}; proxy: +{DELAY_MS} ms per chunk "
        f"and direction; {'quick run' if args.quick else 'full run'}"
    )
    print(HEADER)
    print("-" * len(HEADER))
    summaries = {dialect: run_dialect(dialect, workloads, args.quick, not args.shares_only) for dialect in names}
    if args.shares_only:
        for dialect in names:
            print(summary_line(f"summary_{dialect}", summaries[dialect], None, 0.0))
        return 0
    cap = memory.measure_cap(POSTGRES_URL) if "postgresql" in names else None
    if cap is not None:
        print(
            f"memory at the body cap ({cap['body_mb']:.1f} MB shape B body of {cap['operations']} PATCHes, "
            f"PostgreSQL, fresh process): post-import RSS {cap['import_rss_mb']:.0f} MiB, "
            f"peak (VmHWM) {cap['peak_mb']:.0f} MiB"
        )
    python, samples = memory.measure_import()
    import_ms = statistics.median(samples)
    _, floor = memory.measure_import(statement=memory.FLOOR_IMPORTS)
    print(
        f"import app ({python}, .pyc precompiled, median of {len(samples)} fresh processes): {import_ms:.0f} ms; "
        f"the Powertools and pydantic modules it uses, alone: {statistics.median(floor):.0f} ms"
    )
    peak = cap["peak_mb"] if cap is not None else None
    for dialect in [d for d in names if d != "postgresql"]:
        print(summary_line(f"summary_{dialect}", summaries[dialect], peak, import_ms))
    if "postgresql" in summaries:
        print(summary_line("summary", summaries["postgresql"], peak, import_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
