"""Memory at the body cap and the cold-start import time of the Lambda entry module ``app``.

``measure_cap``: a fresh process imports ``app`` (as Lambda does), reports its RSS, then handles one
API Gateway event whose shape B body is 4.5 MiB (under the 5 MiB cap) of minimal PATCHes
(``{"op_id":n,"op":"PATCH","type":"todos","id":...,"tx_id":t,"data":{"completed":true}}``, client
transactions of 1000, under ``max_operations_per_transaction``; rows that exist) on PostgreSQL,
and reports its peak RSS: the figure Lambda's ``MemorySize`` must exceed. The peak is the
process's ``VmHWM``, which is ``ru_maxrss`` of a process started from a small one; ``ru_maxrss``
itself carries over ``exec`` the peak of the process that started it (Linux), so under ``make bench``
it would report the benchmark's own size. The event is read from
a file and parsed as the Lambda runtime does, so the process holds what a real invocation holds.
With ``--trace``, the child also prints the tracemalloc lines that hold the most memory at the
moment the engine is called and at the peak of the request (sampled at every database call).

``measure_import``: the median of 15 fresh ``python3.12`` processes each timing ``import app`` with
``perf_counter``, after ``compileall`` (the layer and the function ship their ``.pyc``). The
interpreter: ``$PYTHON312``, else ``.local/venv312/bin/python`` (``make bench`` creates it with the
layer's requirements), else the running one (said in the output).

Usage: ``python bench/memory.py [--trace]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_DIR = ROOT / "functions" / "upload"
BODY_BYTES = int(4.5 * 1024 * 1024)
U1 = "11111111-1111-1111-1111-111111111111"


def _status_mb(field: str) -> float:
    """A size from ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB; ``ru_maxrss`` off Linux."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


# ---- import time ---------------------------------------------------------------------------------


def python312() -> str:
    """The interpreter to time the import with (see the module docstring)."""
    candidates = [os.environ.get("PYTHON312", ""), str(ROOT / ".local" / "venv312" / "bin" / "python")]
    return next((c for c in candidates if c and Path(c).exists()), sys.executable)


FLOOR_IMPORTS = (
    "import aws_lambda_powertools.event_handler.openapi.params, "
    "aws_lambda_powertools.event_handler.middlewares.openapi_validation; "
    "from aws_lambda_powertools import Logger; from aws_lambda_powertools.metrics import Metrics"
)
"""What the handler imports of Powertools (the HTTP resolver with validation, which brings pydantic,
the logger, metrics) and nothing of its own: the floor under ``import app`` while both are kept."""


def measure_import(samples: int = 15, statement: str = "import app") -> tuple[str, list[float]]:
    """``statement`` (``import app``) in ``samples`` fresh processes, each timed with ``perf_counter``;
    returns the interpreter's version and the times in ms."""
    python = python312()
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", str(FUNCTION_DIR), site], capture_output=True, check=False)
    scratch = Path(tempfile.mkdtemp(prefix="bench-import-")) / "demo.sqlite"  # never opened: no request is made
    env = {**_child_env(f"sqlite:///{scratch}"), "PYTHONDONTWRITEBYTECODE": "1"}
    code = f"import time; t = time.perf_counter(); {statement}; print((time.perf_counter() - t) * 1000)"
    times = []
    for _ in range(samples):
        out = subprocess.run(
            [python, "-c", code], cwd=FUNCTION_DIR, env=env, capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    version = subprocess.run([python, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return version, times


def _child_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "DB_", "PYTHON"))}
    env.update(
        DATABASE_URL=database_url,
        PYTHONPATH=str(FUNCTION_DIR),
        UPLOAD_CONFIG=str(FUNCTION_DIR / "upload.yaml"),
        POWERTOOLS_LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_DISABLED="true",
        DEADLINE_S="300",
    )
    return env


# ---- memory at the body cap ----------------------------------------------------------------------


def cap_event(todo_ids: list[str]) -> dict[str, Any]:
    """The API Gateway event: a shape B body of PATCHes of ``todo_ids`` (as many as fit the size),
    1000 per client transaction."""
    entries = []
    size = len('{"batch":[]}')
    for op_id, todo_id in enumerate(todo_ids, start=1):
        entry = json.dumps(
            {
                "op_id": op_id,
                "op": "PATCH",
                "type": "todos",
                "id": todo_id,
                "tx_id": 1 + op_id // 1000,
                "data": {"completed": True},
            },
            separators=(",", ":"),
        )
        if size + len(entry) + 1 > BODY_BYTES:
            break
        entries.append(entry)
        size += len(entry) + 1
    body = '{"batch":[' + ",".join(entries) + "]}"
    claims = {"sub": U1, "exp": int(time.time()) + 3600}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/api/data",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": "POST", "path": "/api/data", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "authorizer": {"jwt": {"claims": claims, "scopes": None}},
            "timeEpoch": int(time.time() * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }


def _seed(url: str, count: int) -> list[str]:
    """A fresh demo schema on PostgreSQL with one list and ``count`` todos of U1; returns their ids."""
    import psycopg

    sys.path[:0] = [str(FUNCTION_DIR), str(ROOT)]
    from powersync_upload.local import schema_scripts
    from tests.support import reset_database

    reset_database("postgresql", schema_scripts("postgresql"), Path(tempfile.mkdtemp(prefix="bench-memory-")))
    list_id = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO lists (id, owner_id, name) VALUES (%s, %s, 'memory')", (list_id, U1))
        with conn.cursor().copy("COPY todos (id, list_id, owner_id, description) FROM STDIN") as copy:
            for todo_id in ids:
                copy.write_row((todo_id, list_id, U1, "m"))
    return ids


def measure_cap(url: str, trace: bool = False) -> dict[str, Any]:
    """Seed PostgreSQL at ``url``, run the body-cap event in a fresh process and return its figures:
    ``body_mb``, ``operations``, ``import_rss_mb``, ``peak_mb`` (``VmHWM``), ``status``."""
    ids = _seed(url, BODY_BYTES // 100)
    event = cap_event(ids)
    operations = event["body"].count('"PATCH"')
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
        json.dump(event, handle)
    body_mb = len(event["body"]) / 1024 / 1024
    del event, ids
    command = [python312(), str(Path(__file__).resolve()), "--child", handle.name]
    if trace:
        command.append("--trace")
    out = subprocess.run(command, cwd=FUNCTION_DIR, env=_child_env(url), capture_output=True, text=True, check=False)
    Path(handle.name).unlink()
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed: {out.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if trace:
        print("\n".join(out.stdout.strip().splitlines()[:-1]))
    return {"body_mb": body_mb, "operations": operations, **figures}


def _child(event_path: str, trace: bool) -> None:
    """In the fresh process: import app, handle the event, print the figures as JSON."""
    started = time.perf_counter()
    import app

    import_ms = (time.perf_counter() - started) * 1000
    import_rss = _status_mb("VmRSS")
    if trace:
        _install_tracing()
    with open(event_path, encoding="utf-8") as handle:
        event = json.load(handle)  # as the Lambda runtime hands it over: one parsed event dict

    class Context:
        function_name = "memory"
        memory_limit_in_mb = 128
        invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:memory"
        aws_request_id = "memory"

        def get_remaining_time_in_millis(self) -> int:
            return 300_000

    out = app.lambda_handler(event, Context())
    body = json.loads(out["body"])
    results = body.get("results") or []
    if trace:
        _print_tracing()
    print(
        json.dumps(
            {
                "import_ms": import_ms,
                "import_rss_mb": import_rss,
                "peak_mb": _status_mb("VmHWM"),
                "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "status": out["statusCode"],
                "results": [r.get("status") for r in results][:3],
                "first_failure": next((r.get("failed_operation") for r in results if "failed_operation" in r), None),
            }
        )
    )


_SNAPSHOTS: dict[str, Any] = {}


def _install_tracing() -> None:
    """Snapshot allocations when the engine starts and at the largest traced size seen at any
    database call (the request's peak, to the resolution of its statements)."""
    import tracemalloc

    from powersync_upload import handler
    from powersync_upload.dialects import postgresql

    tracemalloc.start(10)
    apply_upload = handler.apply_upload

    def traced_apply(*args: Any, **kwargs: Any) -> Any:
        _SNAPSHOTS["engine start"] = tracemalloc.take_snapshot()
        return apply_upload(*args, **kwargs)

    handler.apply_upload = traced_apply  # type: ignore[assignment]
    connect = postgresql.connect
    best = [0]

    def traced_connect(url: str, timeout_s: float, statement_s: float | None = None) -> Any:
        conn = connect(url, timeout_s, statement_s)
        cursor_factory = conn.cursor
        execute = conn.execute

        def sample() -> None:
            current = tracemalloc.get_traced_memory()[0]
            if current > best[0]:
                best[0] = current
                _SNAPSHOTS["peak"] = tracemalloc.take_snapshot()

        class Cursor:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def execute(self, *args: Any, **kwargs: Any) -> Any:
                sample()
                return self.inner.execute(*args, **kwargs)

            def executemany(self, *args: Any, **kwargs: Any) -> Any:
                sample()
                return self.inner.executemany(*args, **kwargs)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                self.inner.close()

        def traced_execute(*args: Any, **kwargs: Any) -> Any:
            sample()
            return execute(*args, **kwargs)

        conn.cursor = lambda *a, **k: Cursor(cursor_factory(*a, **k))
        conn.execute = traced_execute
        return conn

    postgresql.connect = traced_connect  # type: ignore[assignment]


def _print_tracing() -> None:
    import tracemalloc

    print(f"-- tracemalloc: {tracemalloc.get_traced_memory()[1] / 1024 / 1024:.1f} MiB traced at the request's peak")
    for label, snapshot in _SNAPSHOTS.items():
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats) / 1024 / 1024
        print(f"-- tracemalloc at {label}: {total:.1f} MiB traced; top lines:")
        for stat in stats[:12]:
            frame = stat.traceback[0]
            name = frame.filename.split("site-packages/")[-1].split("functions/upload/")[-1]
            print(f"   {stat.size / 1024 / 1024:7.1f} MiB {stat.count:>8} blocks  {name}:{frame.lineno}")


def main() -> int:
    """Print the memory figures at the body cap and the import time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help="print the tracemalloc top lines")
    parser.add_argument("--no-import", action="store_true", help="skip the import timing")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.trace)
        return 0
    url = os.environ.setdefault("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/powersync_upload_bench")
    cap = measure_cap(url, args.trace)
    print(
        f"body cap: {cap['body_mb']:.2f} MiB body, {cap['operations']} PATCHes, PostgreSQL: "
        f"HTTP {cap['status']} {cap['results']}, import {cap['import_ms']:.0f} ms, "
        f"post-import RSS {cap['import_rss_mb']:.1f} MiB, peak RSS {cap['peak_mb']:.1f} MiB"
    )
    if not args.no_import:
        version, times = measure_import()
        print(
            f"import app ({version}, .pyc precompiled): median {statistics.median(times):.0f} ms of {len(times)} "
            f"fresh processes (min {min(times):.0f}, max {max(times):.0f})"
        )
        _, floor = measure_import(statement=FLOOR_IMPORTS)
        floor_ms = statistics.median(floor)
        print(f"the Powertools and pydantic modules alone (the floor while both are kept): {floor_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
