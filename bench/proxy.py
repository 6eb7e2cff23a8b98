"""A TCP proxy that adds a fixed delay to every chunk and counts round trips.

Between the engine and a database server it stands for the network a Lambda in a VPC pays to reach
RDS (about 0.5 to 1 ms per round trip): each chunk read from one side is written to the other
``delay_s`` after it arrived (0.5 ms by default, so a request and its answer cost 1 ms more whatever
their size). Chunks keep their order, and a chunk never waits for the one before it to be delayed
first: each is due ``delay_s`` after its own arrival. Timers wake late on a busy machine (timer slack,
scheduling): the proxy learns by how much on average and wakes that much earlier.

A round trip is a turn of the conversation: a chunk from the client after the server last spoke on
that connection (a statement split over several TCP segments is one turn; a pipeline of statements
sent before reading is one turn too, as it costs one wait). The count covers every connection.

The event loop uses ``select`` because its timeout has microsecond resolution (``epoll`` and
``poll`` round timeouts up to whole milliseconds, which would double a 0.5 ms delay).

Run as a script, it prints ``PORT <n>`` and then answers each line read on stdin with the round trip
count so far; it ends at the end of stdin::

    python bench/proxy.py --target 127.0.0.1:5432 --delay-ms 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import selectors
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

CHUNK = 256 * 1024


class DelayProxy:
    """A delaying, counting TCP proxy to one target, on its own event loop in a background thread.

    Args:
        target_host: the server's host.
        target_port: the server's port.
        delay_s: seconds added to each chunk in each direction (0: forward at once, count only).
        listen_host: the address to listen on; the port is chosen by the system.
    """

    def __init__(self, target_host: str, target_port: int, delay_s: float = 0.0005, listen_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.listen_host = listen_host
        self.port = 0
        self.round_trips = 0
        self._lateness = 0.0  # how late a timer wakes here, on average: subtracted so chunks leave on time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> DelayProxy:
        """Start listening; returns self once the port is known."""
        ready = threading.Event()
        self._loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        self._thread = threading.Thread(target=self._run, args=(ready,), name="delay-proxy", daemon=True)
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

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's (user, password, database kept)."""
        parts = urlsplit(url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.listen_host}:{self.port}"))

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._serve, self.listen_host, 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    # ---- forwarding -----------------------------------------------------------------------------

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        turn = {"client_spoke_last": False}
        with contextlib.suppress(asyncio.CancelledError):  # the proxy is stopping: the connection ends
            await asyncio.gather(
                self._pipe(client_reader, server_writer, turn, from_client=True),
                self._pipe(server_reader, client_writer, turn, from_client=False),
                return_exceptions=True,
            )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, turn: dict[str, bool], *, from_client: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while chunk := await reader.read(CHUNK):
                if from_client and not turn["client_spoke_last"]:
                    self.round_trips += 1
                turn["client_spoke_last"] = from_client
                queue.put_nowait((loop.time() + self.delay_s, chunk))
        except OSError:
            pass
        finally:
            queue.put_nowait((loop.time() + self.delay_s, b""))  # end of stream, after what came before
            await asyncio.gather(sender, return_exceptions=True)

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
        finally:
            writer.close()


def main() -> int:
    """The proxy as a process (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the database server")
    parser.add_argument("--delay-ms", type=float, default=0.5, help="delay per chunk and direction")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    with DelayProxy(host, int(port), args.delay_ms / 1000) as proxy:
        print(f"PORT {proxy.port}", flush=True)
        for _line in sys.stdin:
            print(proxy.round_trips, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
