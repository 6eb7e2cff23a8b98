"""The one TCP proxy between the upload function and a database server: it delays, counts round trips
and injects faults, for the bench (``make bench``), the pinned round-trip tests and the fault campaign
(``make chaos``).

**Delay.** It stands for the network a Lambda in a VPC pays to reach RDS (about 0.5 to 1 ms per
round trip): each chunk read from one side is written to the other ``delay_s`` after it arrived (the
bench uses 0.5 ms, so a request and its answer cost 1 ms more whatever their size). Chunks keep their
order, and a chunk never waits for the one before it to be delayed first: each is due ``delay_s``
after its own arrival. Timers wake late on a busy machine (timer slack, scheduling): the proxy learns
by how much on average and wakes that much earlier. The event loop uses ``select`` because its
timeout has microsecond resolution (``epoll`` and ``poll`` round timeouts up to whole milliseconds,
which would double a 0.5 ms delay).

**Round trips: the one definition** (the bench's ``statements_*`` figures and the pinned counts of
``tests/integration/test_round_trips.py`` both use it, through ``tests/support.py``
``counting_round_trips``). A round trip is a turn of the conversation on a connection: a chunk from
the client after the server last spoke on it. A statement split over several TCP segments is one
turn; a pipeline of statements sent before reading is one turn too, as it costs one wait; BEGIN and
COMMIT count when they are sent on their own. The count covers every connection, the login
included. SQLite has no wire: there a round trip is a driver call that would be one on a server
(``execute``, ``executemany``, ``executescript``, ``commit``, ``rollback``: ``DriverCallCounter``).

**Faults** (seeded; none unless ``rates`` says so). Every chunk the client (the engine's driver) sends
after the login may, at random, suffer one:

* ``latency`` -- the chunk is held 1 to 30 ms before it is forwarded;
* ``stall`` -- the chunk is held ``stall_s`` (longer than the function's deadline) before it is forwarded;
* ``reset`` -- inside a transaction (a statement was sent since the last COMMIT/ROLLBACK), the chunk is
  dropped and both sides are closed with a TCP reset: the server rolls the transaction back;
* ``commit_close`` -- a chunk holding ``COMMIT`` is forwarded, then the client side is reset at once:
  the server commits, the client never learns it (the outcome is unknown to it).

PostgreSQL's ``COMMIT`` (a simple query, psycopg's ``commit()``) and MySQL's (``COM_QUERY``, PyMySQL's)
both carry the ASCII text ``COMMIT``, SQL Server's batches the UTF-16 one; the campaign's values never
do. The random source is one :class:`random.Random` per connection, seeded from the proxy's seed and
the connection's number, so a run's faults depend only on the seed and on the order in which
connections arrive.

Run as a script, it prints ``PORT <n>``, answers each line read on stdin with the round-trip count so
far, and ends at the end of stdin (with ``--faults``, it prints the faults per kind last)::

    python bench/proxy.py --target 127.0.0.1:5432 --delay-ms 0.5
    python bench/proxy.py --target 127.0.0.1:5432 --delay-ms 0 --faults --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import selectors
import socket
import struct
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

CHUNK = 256 * 1024
KINDS = ("latency", "stall", "reset", "commit_close")
_COMMITS = (b"COMMIT", "COMMIT".encode("utf-16-le"))  # SQL Server's batches are UTF-16
_ENDS = (*_COMMITS, b"ROLLBACK", "ROLLBACK".encode("utf-16-le"))


@dataclass(frozen=True)
class Rates:
    """Probability of each fault per chunk sent by the client (0 to 1).

    Attributes:
        latency: added latency of 1 to 30 ms.
        stall: a stall of ``stall_s``.
        reset: a reset inside a transaction.
        commit_close: a close right after COMMIT was forwarded (applies to COMMIT chunks only).
    """

    latency: float = 0.05
    stall: float = 0.0005
    reset: float = 0.01
    commit_close: float = 0.05


NO_FAULTS = Rates(0.0, 0.0, 0.0, 0.0)


class _Reset(Exception):
    """The connection is to end now (a fault closed it)."""


@dataclass
class _Connection:
    """One proxied connection's state: whose turn it is, its faults' random source and its progress."""

    number: int
    rng: random.Random
    reset_at: bytes | None
    client_spoke_last: bool = False
    client_chunks: int = 0
    in_transaction: bool = False
    server: asyncio.StreamWriter | None = None


class Proxy:
    """A delaying, counting, fault-injecting TCP proxy to one target, on its own event loop in a
    background thread (see the module docstring).

    Args:
        target_host: the server's host.
        target_port: the server's port.
        delay_s: seconds added to each chunk in each direction (0: forward at once).
        seed: seeds every connection's random source (with the connection's number).
        rates: fault probabilities per client chunk (default: none).
        stall_s: how long a ``stall`` holds a chunk, in seconds (choose it above the deadline).
        handshake_chunks: client chunks of each connection left alone (the login).
        resets: a script on top of the rates: connection number (from 1) -> a text; that connection's
            first client chunk holding it (e.g. ``b"BEGIN"``) is dropped with a reset of both sides.
        listen_host: the address to listen on; the port is chosen by the system.

    Attributes:
        round_trips: turns of the conversation so far, over every connection.
        connections: connections accepted so far.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay_s: float = 0.0,
        seed: int = 0,
        rates: Rates = NO_FAULTS,
        stall_s: float = 4.0,
        handshake_chunks: int = 4,
        resets: dict[int, bytes] | None = None,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.seed = seed
        self.rates = rates
        self.stall_s = stall_s
        self.handshake_chunks = handshake_chunks
        self.resets = dict(resets or {})
        self.listen_host = listen_host
        self.port = 0
        self.round_trips = 0
        self.connections = 0
        self.faults: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._lateness = 0.0  # how late a timer wakes here, on average: subtracted so chunks leave on time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Proxy:
        """Start listening; returns self once the port is known."""
        ready = threading.Event()
        self._loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        self._thread = threading.Thread(target=self._run, args=(ready,), name="proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if not self.port:
            raise RuntimeError("the proxy did not start")
        return self

    def stop(self) -> None:
        """Close the listener and every proxied connection, and end the thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's (user, password, database kept)."""
        parts = urlsplit(url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.listen_host}:{self.port}"))

    def set_rates(self, rates: Rates) -> None:
        """Change the fault rates for chunks from now on (e.g. :data:`NO_FAULTS` to let queues drain)."""
        self.rates = rates

    def injected(self) -> dict[str, int]:
        """Faults injected so far, per kind (every kind present, 0 when none)."""
        with self._lock:
            return {kind: self.faults[kind] for kind in KINDS}

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._serve, self.listen_host, 0))
        self.port = int(server.sockets[0].getsockname()[1])
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    # ---- forwarding -----------------------------------------------------------------------------

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            number = self.connections
        rng = random.Random(f"{self.seed}/{number}")  # noqa: S311 - seeded faults, not cryptography
        state = _Connection(number, rng, self.resets.get(number))
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_writer)
            return
        state.server = server_writer
        with contextlib.suppress(asyncio.CancelledError):  # the proxy is stopping: the connection ends
            await asyncio.gather(
                self._pipe(client_reader, server_writer, state, client_writer),
                self._pipe(server_reader, client_writer, state, None),
                return_exceptions=True,
            )
        _close(server_writer)
        _close(client_writer)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        state: _Connection,
        client: asyncio.StreamWriter | None,
    ) -> None:
        """One direction: count turns, draw the client's faults (``client`` set: this pipe reads the
        client and may reset it), and forward each chunk ``delay_s`` after it arrived."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while chunk := await reader.read(CHUNK):
                from_client = client is not None
                if from_client and not state.client_spoke_last:
                    self.round_trips += 1
                state.client_spoke_last = from_client
                if client is not None:
                    await self._fault(state, chunk, queue, client)
                queue.put_nowait((loop.time() + self.delay_s, chunk))
        except (OSError, _Reset):
            pass
        finally:
            queue.put_nowait((loop.time() + self.delay_s, b""))  # end of stream, after what came before
            await asyncio.gather(sender, return_exceptions=True)

    async def _fault(
        self, state: _Connection, chunk: bytes, queue: asyncio.Queue[tuple[float, bytes]], client: asyncio.StreamWriter
    ) -> None:
        """Draw (or apply the scripted) fault for one client chunk, before it is forwarded; raises
        :class:`_Reset` when the connection ends here. Three draws per chunk after the login, whatever
        they decide, so a seed gives the same faults."""
        state.client_chunks += 1
        if state.reset_at is not None and state.reset_at in chunk:
            self._reset_both(state, client)
        if state.client_chunks <= self.handshake_chunks:
            return
        rates, ends = self.rates, any(word in chunk for word in _ENDS)
        if state.rng.random() < rates.commit_close and any(word in chunk for word in _COMMITS):
            await self._commit_then_close(chunk, queue, client)
        if state.rng.random() < rates.reset and state.in_transaction and not ends:
            self._reset_both(state, client)
        await self._hold(state.rng.random(), state.rng)
        state.in_transaction = not ends

    def _reset_both(self, state: _Connection, client: asyncio.StreamWriter) -> None:
        """Drop the chunk and reset both sides (the server's through the pipe's sender, at once)."""
        self._count("reset")
        _reset(client)
        assert state.server is not None
        _reset(state.server)
        raise _Reset

    async def _commit_then_close(
        self, chunk: bytes, queue: asyncio.Queue[tuple[float, bytes]], client: asyncio.StreamWriter
    ) -> None:
        """Forward the COMMIT (after everything before it), then reset the client's side."""
        self._count("commit_close")
        queue.put_nowait((asyncio.get_running_loop().time() + self.delay_s, chunk))
        with contextlib.suppress(TimeoutError):  # a server that stopped reading: reset all the same
            await asyncio.wait_for(queue.join(), 5.0)
        _reset(client)
        await asyncio.sleep(1.0)  # let the server read the COMMIT before its socket closes
        raise _Reset

    async def _hold(self, draw: float, rng: random.Random) -> None:
        """``stall`` or ``latency``: hold this chunk (and so every later one of its direction)."""
        if draw < self.rates.stall:
            self._count("stall")
            await asyncio.sleep(self.stall_s)
        elif draw < self.rates.stall + self.rates.latency:
            self._count("latency")
            await asyncio.sleep(rng.uniform(0.001, 0.030))

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, chunk = await queue.get()
                wake = due - self._lateness
                if wake > loop.time():
                    await asyncio.sleep(wake - loop.time())
                    late = min(max(loop.time() - wake, 0.0), self.delay_s)
                    self._lateness += (late - self._lateness) / 16
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
                queue.task_done()
        finally:
            _close(writer)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer reads ECONNRESET, not a clean end of stream."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


def main(argv: list[str] | None = None) -> int:
    """The proxy as a process (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the database server")
    parser.add_argument("--delay-ms", type=float, default=0.5, help="delay per chunk and direction")
    parser.add_argument("--faults", action="store_true", help="inject faults at the default rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stall-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    rates = Rates() if args.faults else NO_FAULTS
    delay_s = args.delay_ms / 1000
    with Proxy(host, int(port), delay_s=delay_s, seed=args.seed, rates=rates, stall_s=args.stall_s) as proxy:
        print(f"PORT {proxy.port}", flush=True)
        for _line in sys.stdin:
            print(proxy.round_trips, flush=True)
        if args.faults:
            print(f"faults {proxy.injected()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
