"""A seeded fault-injecting TCP proxy between the upload function and a database server.

Each connection accepted is forwarded to the target; every chunk the client (the engine's driver)
sends may, at random, suffer one fault:

* ``latency`` -- the chunk is held 1 to 30 ms before it is forwarded;
* ``stall`` -- the chunk is held ``stall_s`` (longer than the function's deadline) before it is forwarded;
* ``reset`` -- inside a transaction (a statement was sent since the last COMMIT/ROLLBACK), the chunk is
  dropped and both sides are closed with a TCP reset: the server rolls the transaction back;
* ``commit_close`` -- a chunk holding ``COMMIT`` is forwarded, then the client side is reset at once:
  the server commits, the client never learns it (the outcome is unknown to it).

PostgreSQL's ``COMMIT`` (a simple query, psycopg's ``commit()``) and MySQL's (``COM_QUERY``, PyMySQL's)
both carry the ASCII text ``COMMIT``, SQL Server's batches the UTF-16 one; the campaign's values never
do. The database servers themselves
are never touched. The random source is one :class:`random.Random` per connection, seeded from the
proxy's seed and the connection's number, so a run's faults depend only on the seed and on the order
in which connections arrive.

Run as a script it prints ``PORT <n>`` and forwards until stdin ends::

    python -m tests.chaos.proxy --target 127.0.0.1:5432 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import sys
import threading
from collections import Counter
from dataclasses import dataclass

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


class FaultProxy:
    """A fault-injecting TCP proxy to one target, on its own event loop in a background thread.

    Args:
        target_host: the database server's host.
        target_port: its port.
        seed: seeds every connection's random source (with the connection's number).
        rates: fault probabilities per client chunk.
        stall_s: how long a ``stall`` holds a chunk, in seconds (choose it above the deadline).
        handshake_chunks: client chunks of each connection left alone (the login).
        resets: a script on top of the rates: connection number (from 1) -> a text; that connection's
            first client chunk holding it (e.g. ``b"BEGIN"``) is dropped with a reset of both sides.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        seed: int = 0,
        rates: Rates = Rates(),
        stall_s: float = 4.0,
        handshake_chunks: int = 4,
        resets: dict[int, bytes] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.seed = seed
        self.rates = rates
        self.stall_s = stall_s
        self.handshake_chunks = handshake_chunks
        self.resets = dict(resets or {})
        self.port = 0
        self.faults: Counter[str] = Counter()
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening on 127.0.0.1 (a port chosen by the system); returns self once it is known."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if not self.port:
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        """Stop the loop (open connections are dropped with it) and end the thread."""
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def set_rates(self, rates: Rates) -> None:
        """Change the fault rates for chunks from now on (e.g. :data:`NO_FAULTS` to let queues drain)."""
        self.rates = rates

    def injected(self) -> dict[str, int]:
        """Faults injected so far, per kind (every kind present, 0 when none)."""
        with self._lock:
            return {kind: self.faults[kind] for kind in KINDS}

    # ---- the loop ---------------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(server.sockets[0].getsockname()[1])
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            number = self.connections
        rng = random.Random(f"{self.seed}/{number}")
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_writer)
            return
        back = asyncio.ensure_future(_pump(server_reader, client_writer))
        try:
            await self._forward(rng, client_reader, client_writer, server_writer, self.resets.get(number))
        finally:
            back.cancel()
            _close(server_writer)
            _close(client_writer)

    async def _forward(
        self,
        rng: random.Random,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        server_writer: asyncio.StreamWriter,
        reset_at: bytes | None,
    ) -> None:
        """Client to server, chunk by chunk, with the faults drawn for each (or scripted)."""
        chunks = 0
        in_transaction = False
        while True:
            data = await client_reader.read(CHUNK)
            if not data:
                return
            chunks += 1
            if reset_at is not None and reset_at in data:
                self._count("reset")
                _reset(client_writer)
                _reset(server_writer)
                return
            ends = any(word in data for word in _ENDS)
            if chunks > self.handshake_chunks:
                rates = self.rates
                draw = rng.random()
                if any(word in data for word in _COMMITS) and draw < rates.commit_close:
                    self._count("commit_close")
                    server_writer.write(data)
                    await server_writer.drain()
                    _reset(client_writer)
                    await asyncio.sleep(1.0)  # let the server read the COMMIT before its socket closes
                    return
                draw = rng.random()
                if in_transaction and not ends and draw < rates.reset:
                    self._count("reset")
                    _reset(client_writer)
                    _reset(server_writer)
                    return
                draw = rng.random()
                if draw < rates.stall:
                    self._count("stall")
                    await asyncio.sleep(self.stall_s)
                elif draw < rates.stall + rates.latency:
                    self._count("latency")
                    await asyncio.sleep(rng.uniform(0.001, 0.030))
                in_transaction = not ends
            server_writer.write(data)
            await server_writer.drain()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Server to client, as it comes."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    _close(writer)


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
    """Run a proxy until stdin ends; prints ``PORT <n>``, and the faults per kind at the end."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the database server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stall-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with FaultProxy(host, int(port), seed=args.seed, stall_s=args.stall_s) as proxy:
        print(f"PORT {proxy.port}", flush=True)
        for _line in sys.stdin:
            pass
        print(f"faults {proxy.injected()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
