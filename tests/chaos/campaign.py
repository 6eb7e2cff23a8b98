"""A randomized fault campaign: devices, workers, a fault proxy, and a checker against a model.

* **Workers**: M processes of ``python -m powersync_upload.local serve`` (the real handler, one request at
  a time each, its own database connection: M Lambda containers), reaching the database through
  :class:`bench.proxy.Proxy` (SQLite: one worker, no proxy).
* **Devices**: N threads, each a user with its own ``client_id`` and a queue of random transactions
  (:mod:`tests.chaos.devices`), behaving as the PowerSync SDK: several whole transactions per request
  (shape B), complete them on 2xx, send the same entries again after a 503, a timeout or a connection
  error, refresh the token on 401. On top of the proxy's faults a device now and then loses a 200 it
  was sent (the answer is dropped: a resend follows), gives up on a request after a fraction of a
  second (its resend may reach another worker while the first attempt still runs) and sends an
  expired token.
* **The checker**, once every queue drained: the ledger's ``seq`` gives the commit order; each device's
  transactions applied exactly once in that order by a model must give the rows in the database:
  each device's lists, todos and journal rows (its own, written by it alone) equal its model's; every
  shared counter's ``total`` is its seed plus the deltas of the committed transactions (one more or one
  fewer is a duplicated or a lost transaction) and its ``label`` that of the committed transaction with
  the highest ``seq``; the shared documents under conflict detection replayed in ``seq`` order
  (:class:`tests.chaos.devices.SharedModel`) give each ``chaos_versioned`` row its version and body (a
  PATCH with a stale version skipped, ``CONFLICT_SKIPPED``) and each ``chaos_notes`` row its title and
  status, with no committed stale title or refused transition; a journal row exists exactly for each
  committed transaction (a fatal one with a row was half applied); every ``fatal_error`` is one the
  model predicts (a bad value, a missing parent, a ``CONFLICT`` on a note), with exactly one
  errors-table row; every 2xx success has its ledger row (its COMMIT); a resent transaction is
  answered ``ALREADY_APPLIED`` or with the same fatal error; no 500.

Run: ``python -m tests.chaos.campaign --dialect postgresql --seed 7 --duration 60`` (``make chaos``).
The seed fixes every device's transactions and every random choice of devices and proxy; the
interleaving of threads and processes is the machine's, so two runs of one seed differ in timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.proxy import Proxy, Rates
from powersync_upload.database import Database
from powersync_upload.local import schema_scripts
from tests import support
from tests.chaos.devices import (
    COUNTER_SEED,
    COUNTERS,
    NOTES,
    VERSIONED,
    Generator,
    OwnModel,
    SharedModel,
    Tx,
    normalize_todo,
)

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixture"
CONFIG = FIXTURE / "upload.yaml"

DEADLINE_S = 3.0
"""The workers' ``DEADLINE_S``: a proxy stall (``STALL_S``) outlasts it."""
STALL_S = 4.0
HTTP_TIMEOUT_S = 8.0
"""A device gives up on a request after this long (a timeout: it sends the same entries again)."""
REPORTS: list[str] = []
"""Reports of the campaigns run in this process (the test session prints them at the end)."""
DRAIN_LIMIT_S = 120.0
"""Past the campaign's duration, queues must drain within this (else the run fails: not drained)."""


@dataclass(frozen=True)
class Options:
    """One campaign.

    Attributes:
        dialect: ``postgresql``, ``mysql``, ``sqlite`` or ``mssql``.
        seed: reproduces the transactions and every random choice.
        duration_s: how long devices keep adding transactions; then their queues drain.
        devices: simulated clients (N).
        workers: handler processes (M; SQLite always 1).
        rates: the proxy's fault rates.
        lost_response: share of 200 answers a device drops (then resends the same entries).
        expired_token: share of requests sent with an expired token (401, refresh, resend).
        client_timeout: share of requests a device gives up on after 0.01 to 0.15 s (a timeout: the
            same entries go again, perhaps to another worker while the first attempt still runs).
    """

    dialect: str
    seed: int = 1
    duration_s: float = 20.0
    devices: int = 6
    workers: int = 2
    rates: Rates = Rates()  # noqa: RUF009 - frozen dataclass
    lost_response: float = 0.03
    expired_token: float = 0.02
    client_timeout: float = 0.03


@dataclass
class Sent:
    """What one transaction went through on its device.

    Attributes:
        tx: the transaction.
        answers: every result answered for it in a 200, in order (the last one completed it).
    """

    tx: Tx
    answers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Device:
    """One simulated client: its user, client id, queue and what it saw."""

    number: int
    user_id: str
    client_id: str
    generator: Generator
    rng: random.Random
    token: str = ""
    queue: list[Sent] = field(default_factory=list)
    done: list[Sent] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


# ---- workers ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def workers(url: str, count: int, logs: Path) -> Iterator[list[str]]:
    """``count`` ``serve`` processes against ``url``; yields their base URLs once each answers /health."""
    processes: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(support.ROOT / "functions" / "upload"), str(support.ROOT)]),
        "DATABASE_URL": url,
        "UPLOAD_CONFIG": str(CONFIG),
        "JWT_SECRET": support.SECRET,
        "DEADLINE_S": str(DEADLINE_S),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    for name in ("JWT_JWKS_URL", "JWT_JWKS_FILE", "JWT_ISSUER", "JWT_AUDIENCE", "DB_SECRET_ID", "FAST_PATH"):
        env.pop(name, None)
    try:
        for n in range(count):
            port = _free_port()
            log = (logs / f"worker-{n}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "powersync_upload.local", "serve"],
                    cwd=support.ROOT,
                    env={**env, "PORT": str(port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for n, base in enumerate(bases):
            support.wait_healthy(base, processes[n], logs / f"worker-{n}.log", 30)
        yield bases
        for n, process in enumerate(processes):
            if process.poll() is not None:
                raise RuntimeError(f"worker {n} exited ({process.returncode}): see {logs / f'worker-{n}.log'}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---- devices ----------------------------------------------------------------------------------------


def _post(base: str, token: str, body: dict[str, Any], timeout_s: float = HTTP_TIMEOUT_S) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{base}/api/data",
        data=json.dumps(body).encode("utf-8"),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload or b"null")
        except ValueError:
            return exc.code, payload.decode("utf-8", "replace")


def run_device(device: Device, bases: list[str], options: Options, stop_adding: float, give_up: float) -> None:
    """The device's loop: fill its queue until ``stop_adding``, send until it drains (or ``give_up``)."""
    rng = device.rng
    device.token = support.token(device.user_id)
    while time.monotonic() < give_up:
        while time.monotonic() < stop_adding and len(device.queue) < 8:
            device.queue.append(Sent(device.generator.next()))
        if not device.queue:
            return
        batch = device.queue[: rng.randint(1, 4)]
        body = {"batch": [e for s in batch for e in s.tx.entries], "client_id": device.client_id}
        token = device.token
        if rng.random() < options.expired_token:
            token = support.token(device.user_id, expired=True)
            device.counts["expired_token"] += 1
        timeout_s = HTTP_TIMEOUT_S
        if rng.random() < options.client_timeout:  # gives up early: the resend races the first attempt
            timeout_s = rng.uniform(0.01, 0.15)
            device.counts["client_timeout"] += 1
        try:
            status, payload = _post(rng.choice(bases), token, body, timeout_s)
        except (OSError, ValueError) as exc:  # timeout, reset, refused, a torn body: send the same again
            device.counts["connection_error"] += 1
            device.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
            device.counts["retries"] += 1
            if "timed out" in str(exc):
                device.counts["timeouts"] += 1
            time.sleep(rng.uniform(0.05, 0.2))
            continue
        device.statuses[status] += 1
        if status == 200 and rng.random() < options.lost_response:
            device.counts["lost_response"] += 1  # the answer never arrives: the SDK sends the same again
            device.counts["retries"] += 1
            continue
        if status == 200:
            _complete(device, batch, payload)
        elif status == 401:
            device.counts["refreshes"] += 1
            device.token = support.token(device.user_id)
        elif status == 503:
            device.counts["retries"] += 1
            after = min(_retry_after(payload), 0.5)
            time.sleep(after * rng.uniform(0.5, 1.0))
        else:
            device.problems.append(f"HTTP {status}: {str(payload)[:300]}")
            device.counts["retries"] += 1
            time.sleep(0.2)


def _retry_after(payload: Any) -> float:
    results = payload.get("results") if isinstance(payload, dict) else None
    for result in results or []:
        if isinstance(result, dict) and result.get("retry_after_ms"):
            return float(result["retry_after_ms"]) / 1000
    return 0.2


def _complete(device: Device, batch: list[Sent], payload: Any) -> None:
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list) or len(results) != len(batch):
        device.problems.append(f"200 with {str(payload)[:300]} for {len(batch)} transactions")
        return
    for sent, result in zip(batch, results, strict=True):
        if result.get("status") not in ("success", "fatal_error"):
            device.problems.append(f"200 with a {result.get('status')} result (shape B answers 503)")
        if result.get("warnings") == [{"code": "ALREADY_APPLIED"}]:
            device.counts["already_applied"] += 1
        sent.answers.append(result)
    device.counts["requests_completed"] += 1
    del device.queue[: len(batch)]
    device.done.extend(batch)


# ---- reading the database back ---------------------------------------------------------------------


def _read(url: str, sql: str) -> list[dict[str, Any]]:
    db = Database.from_url(url)
    conn = db.dialect.connect(url, 10)
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        conn.rollback()
        return rows
    finally:
        conn.close()


def _seed_counters(url: str) -> None:
    db = Database.from_url(url)
    conn = db.dialect.connect(url, 10)
    try:
        cursor = conn.cursor()
        for counter in COUNTERS:
            cursor.execute(f"INSERT INTO chaos_counters (id, label, total) VALUES ('{counter}', NULL, {COUNTER_SEED})")
        for row in VERSIONED:
            cursor.execute(f"INSERT INTO chaos_versioned (id, body, version) VALUES ('{row}', NULL, 1)")
        for row in NOTES:
            cursor.execute(f"INSERT INTO chaos_notes (id, title, status) VALUES ('{row}', 'seed', 'draft')")
        conn.commit()
    finally:
        conn.close()


class Sync:
    """What a device last synced of the shared documents: one direct connection (no proxy), one read
    at a time (:data:`tests.chaos.devices.Peek`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.conn: Any = None

    def __call__(self, table: str, row: str) -> Any:
        """The row's ``version`` (``chaos_versioned``) or ``title`` (``chaos_notes``) now."""
        column = "version" if table == "chaos_versioned" else "title"
        with self.lock:
            if self.conn is None:
                self.conn = Database.from_url(self.url).dialect.connect(self.url, 10)
            cursor = self.conn.cursor()
            cursor.execute(f"SELECT {column} FROM {table} WHERE id = '{row}'")
            value = cursor.fetchall()[0][0]
            self.conn.rollback()
            return value

    def close(self) -> None:
        """Close the connection."""
        if self.conn is not None:
            self.conn.close()


# ---- the checker ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the checker found: figures (lost, duplicated, half_applied, ...) and one line per problem."""

    figures: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def bad(self, figure: str, problem: str) -> None:
        """Count one ``figure`` and keep ``problem`` (the first 50 are kept)."""
        self.figures[figure] = self.figures.get(figure, 0) + 1
        if len(self.problems) < 50:
            self.problems.append(f"{figure}: {problem}")


def check(url: str, devices: list[Device]) -> Verdict:
    """Compare the database with the model (see the module's docstring)."""
    verdict = Verdict(
        figures={"lost": 0, "duplicated": 0, "half_applied": 0, "unexplained": 0, "undrained": 0, "fatal_unrecorded": 0}
    )
    ledger = _read(url, "SELECT seq, client_id, first_op_id, last_op_id, result FROM powersync_upload_ledger")
    decided: dict[tuple[str, int, int], list[tuple[int, str]]] = {}
    for row in ledger:
        key = (str(row["client_id"]), int(row["first_op_id"]), int(row["last_op_id"]))
        decided.setdefault(key, []).append((int(row["seq"]), str(json.loads(row["result"])["status"])))
    errors = Counter(
        (str(r["client_id"]), int(r["transaction_id"]))
        for r in _read(url, "SELECT client_id, transaction_id FROM powersync_upload_errors")
    )
    committed: list[tuple[int, Tx]] = []  # (seq, transaction) of every committed transaction
    for device in devices:
        for sent in device.queue:
            verdict.bad("undrained", f"device {device.number} tx {sent.tx.number} still queued")
        model = OwnModel()
        for sent in device.done:
            tx = sent.tx
            rows = decided.get((device.client_id, tx.first_op_id, tx.last_op_id), [])
            where = f"device {device.number} tx {tx.number}"
            answered = sent.answers[-1]
            if len(rows) > 1:
                verdict.bad("duplicated", f"{where}: {len(rows)} ledger rows")
            unrecorded = not rows and answered.get("status") == "fatal_error"
            if unrecorded:  # a rejection answered without its rows: they must stand or fall together
                verdict.bad("fatal_unrecorded", f"{where}: answered {_brief(answered)}, no ledger row")
            elif not rows:
                verdict.bad("lost", f"{where}: answered {_brief(answered)}, no ledger row")
            rows = rows or [(-1, str(answered.get("status")))]
            seq, status = rows[0]
            if answered.get("status") != status:
                verdict.bad("unexplained", f"{where}: answered {answered.get('status')}, ledger {status}")
            first = sent.answers[0]
            for later in sent.answers[1:]:  # resends after a lost answer: from the ledger
                if status == "success" and later.get("warnings") != [{"code": "ALREADY_APPLIED"}]:
                    verdict.bad("duplicated", f"{where}: a resend answered {later} (not ALREADY_APPLIED)")
                if status == "fatal_error" and later != first:
                    verdict.bad("unexplained", f"{where}: a resend answered {later}, first {first}")
            commits, codes = model.predict(tx)
            codes_or_conflict = codes | tx.maybe
            if status == "success":
                if not commits:
                    verdict.bad("unexplained", f"{where}: committed, the model expects {sorted(codes)}")
                model.apply(tx)
                committed.append((seq, tx))
            else:
                code = (answered.get("failed_operation") or {}).get("error_code")
                if (commits and code not in tx.maybe) or code not in codes_or_conflict:
                    verdict.bad(
                        "unexplained", f"{where}: {_brief(answered)}, the model expects {sorted(codes) or 'success'}"
                    )
                if errors[(device.client_id, tx.number)] != (0 if unrecorded else 1):
                    verdict.bad("duplicated", f"{where}: {errors[(device.client_id, tx.number)]} errors-table rows")
        if not device.queue:  # an undrained transaction may or may not have committed: no exact model
            _compare_own(url, device, model, verdict)
    if not any(d.queue for d in devices):
        _compare_shared(url, committed, verdict)
        _compare_documents(url, committed, {id(s.tx): s for d in devices for s in d.done}, verdict)
    return verdict


def _skipped_warnings(sent: Sent) -> int | None:
    """``CONFLICT_SKIPPED`` warnings of the first answer that was not a replay, ``None`` when every
    answer the device kept came from the ledger (its first 200 was lost)."""
    for answer in sent.answers:
        warnings = answer.get("warnings") or []
        if warnings != [{"code": "ALREADY_APPLIED"}]:
            return sum(1 for w in warnings if w.get("code") == "CONFLICT_SKIPPED")
    return None


def _compare_documents(url: str, committed: list[tuple[int, Tx]], sent: dict[int, Sent], verdict: Verdict) -> None:
    """The shared documents against :class:`SharedModel` fed the committed transactions in ``seq`` order."""
    model = SharedModel()
    for _seq, tx in sorted(committed, key=lambda c: c[0]):
        wrong, skipped = model.apply(tx)
        where = f"device {tx.device} tx {tx.number}"
        for problem in wrong:
            verdict.bad("unexplained", f"{where}: {problem}")
        answered = _skipped_warnings(sent[id(tx)])
        if answered is not None and answered != skipped:
            verdict.bad("unexplained", f"{where}: {answered} CONFLICT_SKIPPED answered, the model skips {skipped}")
    versioned = {str(r["id"]): r for r in _read(url, "SELECT id, body, version FROM chaos_versioned")}
    for row, (version, body) in model.versioned.items():
        have = (int(versioned[row]["version"]), versioned[row]["body"])
        if have != (version, body):
            figure = "duplicated" if have[0] > version else "lost"
            verdict.bad(figure, f"{row} is (version, body) {have}, the model has {(version, body)}")
    notes = {str(r["id"]): r for r in _read(url, "SELECT id, title, status FROM chaos_notes")}
    for row, (title, status) in model.notes.items():
        if (notes[row]["title"], notes[row]["status"]) != (title, status):
            verdict.bad(
                "lost", f"{row} is {(notes[row]['title'], notes[row]['status'])}, the model has {(title, status)}"
            )


def _brief(result: dict[str, Any]) -> str:
    code = (result.get("failed_operation") or {}).get("error_code")
    return f"{result.get('status')} {code or ''} {result.get('warnings') or ''}".strip()


def _compare_own(url: str, device: Device, model: OwnModel, verdict: Verdict) -> None:
    owner = device.user_id
    lists = {
        str(r["id"]).lower(): r["name"] for r in _read(url, f"SELECT id, name FROM lists WHERE owner_id = '{owner}'")
    }
    todos = {
        str(r["id"]).lower(): normalize_todo(r)
        for r in _read(
            url,
            f"SELECT id, list_id, description, completed, priority, amount FROM todos WHERE owner_id = '{owner}'",
        )
    }
    journal = {str(r["id"]) for r in _read(url, f"SELECT id FROM chaos_journal WHERE owner_id = '{owner}'")}
    state = model.state
    where = f"device {device.number}"
    for name, have, want in (("lists", lists, state.lists), ("todos", todos, state.todos)):
        for row_id in want.keys() - have.keys():
            verdict.bad("lost", f"{where}: {name} {row_id} missing")
        for row_id in have.keys() - want.keys():
            verdict.bad("half_applied", f"{where}: {name} {row_id} present, the model has none")
        for row_id in have.keys() & want.keys():
            if have[row_id] != want[row_id]:
                verdict.bad("lost", f"{where}: {name} {row_id} is {have[row_id]}, the model has {want[row_id]}")
    for journal_id in state.journal - journal:
        verdict.bad("lost", f"{where}: committed {journal_id} has no journal row")
    for journal_id in journal - state.journal:
        verdict.bad("half_applied", f"{where}: journal row {journal_id} of a transaction not committed")


def _compare_shared(url: str, committed: list[tuple[int, Tx]], verdict: Verdict) -> None:
    rows = {str(r["id"]): r for r in _read(url, "SELECT id, label, total FROM chaos_counters")}
    totals = dict.fromkeys(COUNTERS, COUNTER_SEED)
    labels: dict[str, str | None] = dict.fromkeys(COUNTERS)
    for _seq, tx in sorted(committed, key=lambda c: c[0]):
        for counter, delta, label in tx.counters:
            totals[counter] += delta or 0
            if label is not None:
                labels[counter] = label
    for counter in COUNTERS:
        have = int(rows[counter]["total"])
        if have > totals[counter]:
            verdict.bad("duplicated", f"{counter}.total is {have}, seed + committed deltas {totals[counter]}")
        elif have < totals[counter]:
            verdict.bad("lost", f"{counter}.total is {have}, seed + committed deltas {totals[counter]}")
        if rows[counter]["label"] != labels[counter]:
            verdict.bad(
                "lost", f"{counter}.label is {rows[counter]['label']}, highest committed seq wrote {labels[counter]}"
            )


# ---- one campaign -----------------------------------------------------------------------------------


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    userinfo = f"{netloc[0]}@" if netloc[1] else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[parts.scheme.split("+")[0]]
    return parts.hostname or "127.0.0.1", parts.port or default


@dataclass
class Outcome:
    """One campaign's outcome.

    Attributes:
        figures: devices, workers, transactions, requests, faults per kind, retries, lost, ...
        verdict: the checker's figures and problems.
        url: the database it ran on (the checker can read it again).
        devices: the devices, with what each sent and was answered.
    """

    figures: dict[str, Any]
    verdict: Verdict
    url: str
    devices: list[Device]

    def failed(self) -> bool:
        """Anything lost, duplicated, half applied, unexplained or undrained, a protocol problem, or a 500."""
        return bool(self.verdict.problems) or self.figures["http_500"] > 0

    def report(self) -> str:
        """The figures, one per line, then the problems found."""
        figures = self.figures
        lines = [f"campaign {figures['dialect']} seed {figures['seed']}:"]
        lines += [f"  {name}: {value}" for name, value in figures.items() if name not in ("dialect", "seed")]
        lines += [f"  PROBLEM {p}" for p in self.verdict.problems]
        return "\n".join(lines)


def run(options: Options, workdir: Path) -> Outcome:
    """Run one campaign in ``workdir`` (worker logs, SQLite file) and check it."""
    started = time.monotonic()
    scripts = [*schema_scripts(options.dialect), FIXTURE / f"{options.dialect}.sql"]
    url = support.reset_database(options.dialect, scripts, workdir)
    _seed_counters(url)
    count = 1 if options.dialect == "sqlite" else options.workers
    proxy: Proxy | None = None
    worker_url = url
    if options.dialect != "sqlite":
        host, port = _target(url)
        proxy = Proxy(host, port, seed=options.seed, rates=options.rates, stall_s=STALL_S).start()
        worker_url = _proxied(url, proxy.port)
    sync = Sync(url)
    devices = [
        Device(
            number=n,
            user_id=str(uuid.UUID(int=random.Random(f"{options.seed}/user/{n}").getrandbits(128), version=4)),
            client_id=f"chaos-{options.seed}-{n}",
            generator=Generator(options.seed, n, "", sync),
            rng=random.Random(f"{options.seed}/device/{n}"),
        )
        for n in range(options.devices)
    ]
    for device in devices:
        device.generator.user_id = device.user_id
    try:
        with workers(worker_url, count, workdir) as bases:
            began = time.monotonic()
            stop_adding = began + options.duration_s
            give_up = stop_adding + DRAIN_LIMIT_S
            threads = [
                threading.Thread(target=run_device, args=(d, bases, options, stop_adding, give_up), daemon=True)
                for d in devices
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            drained = time.monotonic()
    finally:
        sync.close()
        injected = proxy.injected() if proxy is not None else {}
        if proxy is not None:
            proxy.stop()
    verdict = check(url, devices)
    totals: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for device in devices:
        totals.update(device.counts)
        statuses.update(device.statuses)
        for problem in device.problems:
            verdict.bad("protocol", f"device {device.number}: {problem}")
    figures: dict[str, Any] = {
        "dialect": options.dialect,
        "seed": options.seed,
        "devices": options.devices,
        "workers": count,
        "transactions": sum(len(d.done) + len(d.queue) for d in devices),
        "committed": sum(1 for d in devices for s in d.done if s.answers and s.answers[-1].get("status") == "success"),
        "fatal": sum(1 for d in devices for s in d.done if s.answers and s.answers[-1].get("status") == "fatal_error"),
        "requests": sum(statuses.values()) + totals["connection_error"],
        "http_status": dict(sorted(statuses.items())),
        "http_500": statuses[500],
        "faults": {
            **{f"proxy_{k}": v for k, v in injected.items()},
            "lost_response": totals["lost_response"],
            "expired_token": totals["expired_token"],
            "client_timeout": totals["client_timeout"],
        },
        "connection_errors": totals["connection_error"],
        "connection_error_kinds": dict(sum((d.errors for d in devices), Counter()).most_common(4)),
        "timeouts": totals["timeouts"],
        "retries": totals["retries"],
        "refreshes": totals["refreshes"],
        "already_applied": totals["already_applied"],
        "conflicts": sum(
            1
            for d in devices
            for s in d.done
            if ((s.answers[-1].get("failed_operation") or {}).get("error_code") == "CONFLICT")
        ),
        "conflicts_skipped": sum(_skipped_warnings(s) or 0 for d in devices for s in d.done),
        **verdict.figures,
        "load_s": round(drained - began, 1),
        "wall_s": round(time.monotonic() - started, 1),
    }
    outcome = Outcome(figures, verdict, url, devices)
    REPORTS.append(outcome.report())
    return outcome


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.chaos.campaign``: one campaign per ``--dialect``; exit 1 when one failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dialect", action="append", help="repeatable; default: every available dialect")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load before the queues drain")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    code = 0
    for dialect in args.dialect or support.available_dialects():
        options = Options(dialect, seed=args.seed, duration_s=args.duration, devices=args.devices, workers=args.workers)
        workdir = support.ROOT / ".local" / f"chaos-{dialect}-{args.seed}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        outcome = run(options, workdir)
        print(outcome.report(), flush=True)
        print(f"  worker logs: {workdir}", flush=True)
        if outcome.failed():
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
