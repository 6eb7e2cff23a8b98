"""Benchmark: the fast path against the per-operation baseline, through the real Lambda handler.

For each dialect (SQLite and PostgreSQL always, MariaDB/MySQL when reachable, SQL Server when
``MSSQL_URL`` is set), each scenario and each batch size (1, 10, 100, 1000 operations, sent as ONE
client transaction in shape B), it runs the same requests in both modes and prints:

* ops/s      operations applied per second of request time;
* trips      database round trips per request, counted at the driver (every ``execute``,
             ``executemany``, ``commit`` and ``rollback`` on the connection; psycopg runs in autocommit
             mode with explicit BEGIN/COMMIT, so it adds no hidden round trip);
* p50, p95   request latency in milliseconds;
* alloc      peak Python allocation during one request (tracemalloc), in KiB;
* speedup    fast ops/s divided by per-op ops/s.

Scenarios: ``put`` is N PUTs of new rows into ``lists`` (an owner table); ``mixed`` is N operations
over ``lists`` and ``todos`` in blocks, as a device produces them: 10% PUT lists, 40% PUT todos (each
referencing a list), 30% PATCH todos, 20% DELETE todos.

The last lines measure the peak resident memory (RSS) of a fresh process that runs the 1000-operation
PostgreSQL batches, and the handler's import time (``python -X importtime -c "import app"``), and print
the summary line. Nothing here asserts anything: these are figures to compare run to run.

Usage: ``make bench`` (or ``python bench/bench.py [--quick]``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions" / "upload"), str(ROOT)]
os.environ.setdefault("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/powersync_upload_bench")
os.environ.setdefault("MYSQL_URL", "mysql://root@127.0.0.1:3306/powersync_upload_bench")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

from powersync_upload import dialects  # noqa: E402
from powersync_upload.handler import lambda_handler, set_runtime  # noqa: E402
from powersync_upload.local import LocalContext, schema_scripts  # noqa: E402
from tests.support import MSSQL_URL, MYSQL_URL, authorization, event, install_runtime, reset_database  # noqa: E402

SIZES = (1, 10, 100, 1000)
CONFIG = ROOT / "functions" / "upload" / "upload.yaml"


class Counter:
    """Counts driver calls that cost a round trip."""

    def __init__(self) -> None:
        self.calls = 0


class _CountingCursor:
    def __init__(self, cursor: Any, counter: Counter) -> None:
        self._cursor, self._counter = cursor, counter

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._counter.calls += 1
        return self._cursor.execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self._counter.calls += 1
        return self._cursor.executemany(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _CountingConnection:
    def __init__(self, conn: Any, counter: Counter) -> None:
        self._conn, self._counter = conn, counter

    def cursor(self, *args: Any, **kwargs: Any) -> _CountingCursor:
        return _CountingCursor(self._conn.cursor(*args, **kwargs), self._counter)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._counter.calls += 1
        return self._conn.execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self._counter.calls += 1
        return self._conn.executemany(*args, **kwargs)

    def commit(self) -> None:
        self._counter.calls += 1
        self._conn.commit()

    def rollback(self) -> None:
        self._counter.calls += 1
        self._conn.rollback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@contextmanager
def counting(dialect: str, counter: Counter) -> Iterator[None]:
    """Wrap every connection the dialect opens so its round trips are counted."""
    module: Any = dialects.load(dialect)
    original = module.connect
    module.connect = lambda url, timeout_s: _CountingConnection(original(url, timeout_s), counter)
    try:
        yield
    finally:
        module.connect = original


def put_batch(size: int, tag: str) -> list[dict[str, Any]]:
    """N PUTs of new lists, one transaction."""
    return [
        {"op_id": i, "op": "PUT", "type": "lists", "id": str(uuid.uuid4()), "tx_id": 1, "data": {"name": f"{tag}-{i}"}}
        for i in range(size)
    ]


def mixed_batch(size: int, tag: str) -> list[dict[str, Any]]:
    """N operations over lists and todos in blocks (see the module docstring), one transaction."""
    if size < 10:
        lists = [str(uuid.uuid4())]
        entries = [{"op": "PUT", "type": "lists", "id": lists[0], "data": {"name": f"{tag}-l"}}]
        todos = [str(uuid.uuid4()) for _ in range(size - 1)]
        entries += [
            {"op": "PUT", "type": "todos", "id": t, "data": {"list_id": lists[0], "description": "d"}} for t in todos
        ]
    else:
        n_lists, n_put, n_patch = size // 10, size * 4 // 10, size * 3 // 10
        n_delete = size - n_lists - n_put - n_patch
        lists = [str(uuid.uuid4()) for _ in range(n_lists)]
        todos = [str(uuid.uuid4()) for _ in range(n_put)]
        entries = [
            {"op": "PUT", "type": "lists", "id": lst, "data": {"name": f"{tag}-{i}"}} for i, lst in enumerate(lists)
        ]
        entries += [
            {
                "op": "PUT",
                "type": "todos",
                "id": t,
                "data": {"list_id": lists[i % n_lists], "description": f"todo {i}", "completed": 0, "priority": i % 5},
            }
            for i, t in enumerate(todos)
        ]
        entries += [{"op": "PATCH", "type": "todos", "id": t, "data": {"completed": 1}} for t in todos[:n_patch]]
        entries += [{"op": "DELETE", "type": "todos", "id": t} for t in todos[n_put - n_delete :]]
    for i, entry in enumerate(entries):
        entry.update(op_id=i, tx_id=1)
    return entries


SCENARIOS = {"put": put_batch, "mixed": mixed_batch}


def reps_for(size: int, quick: bool) -> int:
    base = {1: 40, 10: 30, 100: 15, 1000: 5}[size]
    return max(2, base // 4) if quick else base


def measure(dialect: str, url: str, scenario: str, size: int, fast: bool, reps: int) -> dict[str, float]:
    """Run ``reps`` requests; return ops/s, round trips per request, p50/p95 ms and peak KiB."""
    counter = Counter()
    with counting(dialect, counter):
        rt = install_runtime(url, CONFIG, fast_path=fast, deadline_s=120)
        try:
            latencies, trips = [], []
            call(scenario, size, "warm")  # connection and schema cache, as in a warm Lambda
            for rep in range(reps):
                body = json.dumps({"batch": SCENARIOS[scenario](size, f"{scenario}-{size}-{fast}-{rep}-{_nonce()}")})
                before = counter.calls
                started = time.perf_counter()
                send(body)
                latencies.append(time.perf_counter() - started)
                trips.append(counter.calls - before)
            # one more request, not timed, for the allocation peak (tracemalloc slows Python down)
            body = json.dumps({"batch": SCENARIOS[scenario](size, f"{scenario}-{size}-{fast}-alloc-{_nonce()}")})
            tracemalloc.start()
            send(body)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        finally:
            rt.db.discard()
            set_runtime(None)
    latencies.sort()
    return {
        "ops_s": size * len(latencies) / sum(latencies),
        "trips": statistics.median(trips),
        "p50": statistics.median(latencies) * 1000,
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))] * 1000,
        "alloc_kib": peak / 1024,
    }


def _nonce() -> str:
    return uuid.uuid4().hex[:8]


def send(body: str) -> None:
    """One request through the handler; anything but 200 with every transaction a success stops the run."""
    out = lambda_handler(event(body, authorization("U1")), LocalContext(timeout_s=300))  # type: ignore[arg-type]
    results = json.loads(out["body"]).get("results") if out.get("body") else None
    if out["statusCode"] != 200 or not results or any(r["status"] != "success" for r in results):
        raise RuntimeError(f"benchmark request failed: HTTP {out['statusCode']}: {str(results)[:300]}")


def call(scenario: str, size: int, tag: str) -> None:
    send(json.dumps({"batch": SCENARIOS[scenario](min(size, 10), f"{tag}-{_nonce()}")}))


def available() -> list[str]:
    names = ["sqlite", "postgresql"]
    try:
        dialects.load("mysql").connect(MYSQL_URL.rsplit("/", 1)[0] + "/", 2).close()
        names.append("mysql")
    except Exception:  # noqa: BLE001 - MariaDB is optional for the benchmark
        print("(MariaDB/MySQL not reachable: skipped)")
    if MSSQL_URL:
        names.append("mssql")
    return names


def peak_rss_mb() -> float:
    """Peak RSS of a fresh process running the 1000-operation PostgreSQL batches (both scenarios)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--rss-child"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    kib = int(re.findall(r"^RSS (\d+)$", out.stdout, re.MULTILINE)[-1])
    return kib / 1024


def import_ms() -> float:
    """Cumulative import time of the Lambda entry module ``app`` (median of 5 fresh processes)."""
    samples = []
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import app"],
            cwd=ROOT / "functions" / "upload",
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)},
        )
        line = [row for row in out.stderr.splitlines() if row.rstrip().endswith("| app")][-1]
        samples.append(int(line.split("|")[1]) / 1000)
    return statistics.median(samples)


def rss_child() -> None:
    """Run the 1000-operation PostgreSQL batches, then print this process's peak RSS (KiB)."""
    import resource

    url = reset_database("postgresql", schema_scripts("postgresql"), Path(tempfile.mkdtemp(prefix="bench-")))
    for scenario in SCENARIOS:
        measure("postgresql", url, scenario, 1000, True, 2)
    print("RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child()
        return 0
    figures: dict[tuple[str, str, int], dict[str, dict[str, float]]] = {}
    header = (
        f"{'dialect':<11}{'scenario':<8}{'ops':>6}  {'mode':<7}{'ops/s':>10}{'trips':>7}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'alloc KiB':>11}{'speedup':>9}"
    )
    print(header)
    print("-" * len(header))
    for dialect in available():
        url = reset_database(dialect, schema_scripts(dialect), Path(tempfile.mkdtemp(prefix="bench-")))
        for scenario in SCENARIOS:
            for size in SIZES:
                reps = reps_for(size, args.quick)
                result = {
                    mode: measure(dialect, url, scenario, size, mode == "fast", reps) for mode in ("per-op", "fast")
                }
                figures[(dialect, scenario, size)] = result
                speedup = result["fast"]["ops_s"] / result["per-op"]["ops_s"]
                for mode in ("per-op", "fast"):
                    r = result[mode]
                    print(
                        f"{dialect:<11}{scenario:<8}{size:>6}  {mode:<7}{r['ops_s']:>10.0f}{r['trips']:>7.0f}"
                        f"{r['p50']:>9.1f}{r['p95']:>9.1f}{r['alloc_kib']:>11.0f}"
                        + (f"{speedup:>8.1f}x" if mode == "fast" else "")
                    )
        sys.stdout.flush()
    rss = peak_rss_mb()
    imp = import_ms()
    put, mixed = figures[("postgresql", "put", 1000)], figures[("postgresql", "mixed", 1000)]
    print(f"peak RSS of a process running the 1000-operation PostgreSQL batches: {rss:.0f} MB")
    print(f"handler import (python -X importtime -c 'import app', median of 5): {imp:.0f} ms")
    print(
        f"summary speedup_put_1000={put['fast']['ops_s'] / put['per-op']['ops_s']:.1f} "
        f"round_trips_put_1000={put['fast']['trips']:.0f} "
        f"speedup_mixed_1000={mixed['fast']['ops_s'] / mixed['per-op']['ops_s']:.1f} "
        f"peak_mb_1000={rss:.0f} import_ms={imp:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
