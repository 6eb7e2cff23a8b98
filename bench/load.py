"""How far one deployment goes: N ``serve`` workers (as N Lambda instances) under 50 devices.

For each dialect (PostgreSQL, and MariaDB/MySQL when reachable) the benchmark empties its ``*_bench``
database, starts 8 ``serve`` workers on loopback (each applies one request at a time, as a Lambda
instance does, and keeps its connection alive), and then, for N = 1, 2, 4, 8 workers and two client
kinds, lets 50 simulated devices send uploads for a fixed time:

* ``reference``: what the reference connectors send: one transaction per request (shape A, no
  ``client_id``), each transaction a new list and a todo in it;
* ``ours``: what this project's connector sends: 50 such transactions per request (shape B, with
  ``client_id``, op_ids and tx_ids, so the ledger is on).

A device sends its next request as soon as its previous one is answered. A request waits for a free
worker (as a request waits for a free instance under reserved concurrency N; on AWS it would be
throttled and retried instead), so the latency quoted is the device's: queueing included. A retryable
503 (a deadlock, say) is sent again after its ``retry_after_ms``, as the SDK does, and counted
(``retried_503=``; the latency includes the wait); any other answer than HTTP 200 with every transaction
a success stops the run.

Prints one line per point: ``load dialect= client= workers= requests_s= transactions_s= p50_ms=
p99_ms= requests= retried_503=``, and writes the plot (``--plot``, default ``docs/bench-load.png``). Bounded: each
point runs ``--seconds`` (default 3) after a 0.5 s warm-up, on loopback only. The load generator runs on
the same machine as the workers and the database: on a small machine the curve flattens where the
cores run out, not where a deployment would.

Usage: ``make bench-load`` (or ``python bench/load.py [--seconds 3] [--dialects postgresql,mysql]``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT / "functions" / "upload"), str(ROOT)] + [
    p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"
]
os.environ.setdefault("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/powersync_upload_bench")
os.environ.setdefault("MYSQL_URL", "mysql://root@127.0.0.1:3306/powersync_upload_bench")

from powersync_upload import dialects  # noqa: E402
from powersync_upload.local import schema_scripts  # noqa: E402
from tests.support import SECRET, _free_port, reset_database, token, wait_healthy  # noqa: E402

DEVICES = 50
WORKERS = (1, 2, 4, 8)
PER_REQUEST = {"reference": 1, "ours": 50}
WARMUP_S = 0.5
MAX_RETRIES = 200
"""Retryable 503s allowed in one point before the run stops (a database that keeps failing)."""


# ---- workers -------------------------------------------------------------------------------------


@contextmanager
def worker(url: str, log_dir: Path) -> Iterator[int]:
    """One ``serve`` process against ``url`` on a free port; yields the port, stops it after."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "functions" / "upload"), str(ROOT)]),
        "DATABASE_URL": url,
        "JWT_SECRET": SECRET,
        "PORT": str(port),
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    for name in ("JWT_JWKS_URL", "JWT_JWKS_FILE", "JWT_ISSUER", "JWT_AUDIENCE", "DB_SECRET_ID", "UPLOAD_CONFIG"):
        env.pop(name, None)
    log_path = log_dir / f"serve-{port}.log"
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "powersync_upload.local", "serve"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process, log_path, 30)
            yield port
        finally:
            process.terminate()
            process.wait(10)


# ---- devices -------------------------------------------------------------------------------------


def _transaction() -> list[dict[str, Any]]:
    list_id, todo_id = str(uuid.uuid4()), str(uuid.uuid4())
    return [
        {"op": "PUT", "type": "lists", "id": list_id, "data": {"name": f"list {list_id}"}},
        {"op": "PUT", "type": "todos", "id": todo_id, "data": {"list_id": list_id, "description": "bench"}},
    ]


@dataclass
class Device:
    """One simulated device: its user, token and upload queue position."""

    number: int
    client: str

    def __post_init__(self) -> None:
        self.user = f"{self.number:08x}-0000-4000-8000-{uuid.uuid4().hex[:12]}"
        self.authorization = f"Bearer {token(self.user)}"
        self.client_id = f"device-{uuid.uuid4().hex[:12]}"
        self.op_id = 0
        self.tx_id = 0

    def body(self) -> bytes:
        """The next request: one transaction (``reference``) or 50 (``ours``)."""
        if self.client == "reference":
            crud = [{"op": e["op"], "table": e["type"], "id": e["id"], "op_data": e["data"]} for e in _transaction()]
            return json.dumps({"transactions": [{"crud": crud}]}).encode()
        batch = []
        for _ in range(PER_REQUEST["ours"]):
            self.tx_id += 1
            for entry in _transaction():
                self.op_id += 1
                batch.append({**entry, "op_id": self.op_id, "tx_id": self.tx_id})
        return json.dumps({"batch": batch, "client_id": self.client_id}).encode()


@dataclass
class Point:
    """The figures of one (dialect, client, N) point."""

    requests: int
    seconds: float
    latencies_ms: list[float]
    retried: int = 0

    def line(self, dialect: str, client: str, workers: int) -> str:
        """The printed line."""
        ordered = sorted(self.latencies_ms)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else float("nan")
        rps = self.requests / self.seconds
        return (
            f"load dialect={dialect} client={client} workers={workers} requests_s={rps:.1f} "
            f"transactions_s={rps * PER_REQUEST[client]:.1f} p50_ms={statistics.median(ordered or [0]):.1f} "
            f"p99_ms={p99:.1f} requests={self.requests} retried_503={self.retried}"
        )


def _post(connection: http.client.HTTPConnection, device: Device, body: bytes) -> float | None:
    """Send one request; ``None`` when every transaction succeeded, or the seconds to wait before
    sending it again when the answer is a retryable 503 (as the SDK does); anything else stops the run."""
    headers = {"Authorization": device.authorization, "Content-Type": "application/json"}
    connection.request("POST", "/api/data", body, headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    results = answer.get("results") or []
    if response.status == 200 and results and all(r.get("status") == "success" for r in results):
        return None
    if response.status == 503 and results and results[0].get("status") == "retryable_error":
        return float(results[0].get("retry_after_ms", 1000)) / 1000
    raise RuntimeError(f"load request failed: HTTP {response.status} {str(answer)[:300]}")


class FairPool:
    """The workers' connections, handed to waiting devices first come, first served (a released
    connection goes straight to the longest-waiting device: with a plain queue the device that just
    released it takes it again before a woken one runs, and a few devices would get all the turns)."""

    def __init__(self, connections: list[http.client.HTTPConnection]) -> None:
        self._lock = threading.Lock()
        self._free = list(connections)
        self._waiting: deque[tuple[threading.Event, list[http.client.HTTPConnection]]] = deque()

    def get(self) -> http.client.HTTPConnection:
        """A free connection, waiting in line for one."""
        with self._lock:
            if self._free and not self._waiting:
                return self._free.pop()
            turn: tuple[threading.Event, list[http.client.HTTPConnection]] = (threading.Event(), [])
            self._waiting.append(turn)
        turn[0].wait()
        return turn[1][0]

    def put(self, connection: http.client.HTTPConnection) -> None:
        """Give the connection back: to the first device in line, or to the pool."""
        with self._lock:
            if self._waiting:
                event, slot = self._waiting.popleft()
                slot.append(connection)
                event.set()
            else:
                self._free.append(connection)

    def close(self) -> None:
        """Close the free connections (all of them once every device is done)."""
        for connection in self._free:
            connection.close()


def _send(free: FairPool, device: Device, body: bytes) -> float | None:
    connection = free.get()
    try:
        return _post(connection, device, body)
    finally:
        free.put(connection)


def run_point(ports: list[int], client: str, seconds: float) -> Point:
    """50 devices against the workers on ``ports`` for ``seconds`` (after the warm-up)."""
    free = FairPool([http.client.HTTPConnection("127.0.0.1", port, timeout=120) for port in ports])
    started = time.perf_counter()
    counting_from, stop_at = started + WARMUP_S, started + WARMUP_S + seconds
    latencies: list[float] = []
    retries: list[float] = []
    failures: list[BaseException] = []

    def device_loop(device: Device) -> None:
        try:
            while time.perf_counter() < stop_at and not failures:
                body = device.body()
                sent = time.perf_counter()
                while (wait_s := _send(free, device, body)) is not None:
                    retries.append(wait_s)
                    if len(retries) > MAX_RETRIES:
                        raise RuntimeError(f"more than {MAX_RETRIES} retryable 503s in one point: stopped")
                    time.sleep(wait_s)
                done = time.perf_counter()
                if counting_from <= done <= stop_at:  # answered in the window, whenever it was sent
                    latencies.append((done - sent) * 1000)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=device_loop, args=(Device(n, client),)) for n in range(DEVICES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    free.close()
    if failures:
        raise failures[0]
    return Point(len(latencies), seconds, latencies, len(retries))


# ---- the run -------------------------------------------------------------------------------------


def run_dialect(dialect: str, seconds: float) -> list[tuple[str, int, Point]]:
    """Every (client, N) point on ``dialect``; prints each line as it comes."""
    url = reset_database(dialect, schema_scripts(dialect), Path(tempfile.mkdtemp(prefix="bench-load-")))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-load-logs-"))
    points = []
    with ExitStack() as stack:
        ports = [stack.enter_context(worker(url, log_dir)) for _ in range(max(WORKERS))]
        for client in PER_REQUEST:
            for n in WORKERS:
                point = run_point(ports[:n], client, seconds)
                print(point.line(dialect, client, n), flush=True)
                points.append((client, n, point))
    return points


def plot(results: dict[str, list[tuple[str, int, Point]]], path: Path) -> None:
    """Transactions/s and p99 latency against N, one line per dialect and client kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for dialect, points in results.items():
        for client in PER_REQUEST:
            mine = [(n, p) for c, n, p in points if c == client]
            ns = [n for n, _ in mine]
            style = "-o" if client == "ours" else "--s"
            label = f"{dialect}, {client} ({PER_REQUEST[client]} tx/request)"
            left.plot(ns, [p.requests / p.seconds * PER_REQUEST[client] for _, p in mine], style, label=label)
            p99 = [
                sorted(p.latencies_ms)[min(len(p.latencies_ms) - 1, round(0.99 * (len(p.latencies_ms) - 1)))]
                for _, p in mine
            ]
            right.plot(ns, p99, style, label=label)
    for axis, title in ((left, "transactions/s (50 devices)"), (right, "p99 request latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(WORKERS), [str(n) for n in WORKERS])
        axis.set_xlabel("serve workers (Lambda instances, reserved concurrency)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    left.set_yscale("log")
    right.set_yscale("log")
    left.legend(fontsize=8)
    figure.suptitle("make bench-load: loopback, one 2-core machine shared by workers, devices and database")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


def available(wanted: list[str]) -> list[str]:
    """The dialects to run: PostgreSQL always, MariaDB/MySQL when reachable."""
    names = [n for n in ("postgresql", "mysql") if n in wanted]
    if "mysql" in names:
        try:
            dialects.load("mysql").connect(os.environ["MYSQL_URL"].rsplit("/", 1)[0] + "/", 2).close()
        except Exception:  # noqa: BLE001 - MariaDB is optional for the benchmark
            print("(MariaDB/MySQL not reachable: skipped)")
            names.remove("mysql")
    return names


def main() -> int:
    """Run every point and write the plot (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per point (after 0.5 s warm-up)")
    parser.add_argument("--dialects", default="postgresql,mysql")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench-load.png")
    args = parser.parse_args()
    print(f"{DEVICES} devices, workers {list(WORKERS)}, {args.seconds:.1f} s per point, loopback", flush=True)
    results = {dialect: run_dialect(dialect, args.seconds) for dialect in available(args.dialects.split(","))}
    plot(results, args.plot)
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
