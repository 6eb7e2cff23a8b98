"""Local commands, no Docker: ``demo``, ``invoke`` and ``serve`` run the real Lambda handler.

* ``demo``  -- every event in ``events/`` through the handler against a fresh embedded SQLite demo
  database; prints each response and the resulting rows.
* ``invoke EVENT`` -- one API Gateway HTTP API (payload v2) event file, like ``sam local invoke -e``.
* ``serve`` -- an HTTP server on 127.0.0.1 (``PORT``, default 3000; HTTP/1.1, keep-alive) for a client
  app under development; it turns each request into a payload v2 event for the same handler and verifies bearer
  tokens itself with the ``JWT_*`` settings (deployed, the HttpApi authorizer does that). It also
  answers ``GET /openapi.json`` with the API's OpenAPI document (:mod:`powersync_upload.openapi`).

With no ``DATABASE_URL`` the commands use ``.local/demo.sqlite`` in the project, created with the demo
schema (``db/migrations/sqlite`` then ``db/demo/sqlite``) on first use.

Usage: ``python -m powersync_upload.local demo|invoke EVENT|serve``.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEMO_DB = PROJECT_ROOT / ".local" / "demo.sqlite"
DB_DIR = PROJECT_ROOT / "db"
EVENTS_DIR = PROJECT_ROOT / "events"
OPENAPI_PATH = "/openapi.json"
DEV_SECRET = "local-dev-secret-change-me-0123456789"  # noqa: S105 - local development only


@dataclass
class LocalContext:
    """The parts of the Lambda context object the handler and Powertools read."""

    function_name: str = "powersync-upload-local"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:powersync-upload-local"
    aws_request_id: str = "local"
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self._started = time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left of ``timeout_s``."""
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


def schema_scripts(dialect: str) -> list[Path]:
    """The SQL files that build a database for ``dialect``: the product's migrations (the errors
    table), then the demo schema, each folder in name order."""
    return [
        *sorted((DB_DIR / "migrations" / dialect).glob("*.sql")),
        *sorted((DB_DIR / "demo" / dialect).glob("*.sql")),
    ]


def create_demo_database(path: Path) -> None:
    """Create the SQLite demo database from :func:`schema_scripts`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        for script in schema_scripts("sqlite"):
            conn.executescript(script.read_text(encoding="utf-8"))


def _use_local_database(fresh: bool) -> None:
    if os.environ.get("DATABASE_URL") or os.environ.get("DB_SECRET_ID"):
        return
    if fresh and DEMO_DB.exists():
        DEMO_DB.unlink()
    if not DEMO_DB.exists():
        create_demo_database(DEMO_DB)
    os.environ["LOCAL_SQLITE"] = str(DEMO_DB)


_ONE_AT_A_TIME = threading.Lock()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    """Run one event through the real Lambda handler, one at a time as in a Lambda container (the
    handler keeps one database connection; ``serve`` accepts requests on several threads). EMF
    metrics are off unless ``POWERTOOLS_METRICS_DISABLED=false``: they are for CloudWatch."""
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from .handler import lambda_handler

    with _ONE_AT_A_TIME:
        return lambda_handler(event, LocalContext(aws_request_id=str(uuid.uuid4())))  # type: ignore[arg-type]


def _print_response(name: str, response: dict[str, Any]) -> None:
    body = response.get("body") or ""
    try:
        shown: Any = json.loads(body)
    except ValueError:
        shown = body
    print(f"== {name}: HTTP {response['statusCode']}")
    retry = (response.get("headers") or {}).get("Retry-After")
    if retry:
        print(f"   Retry-After: {retry}")
    print("   " + json.dumps(shown, indent=2).replace("\n", "\n   "))


def _print_rows() -> None:
    if os.environ.get("DATABASE_URL"):
        return
    with sqlite3.connect(DEMO_DB) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            print(f"== rows in {table} ({len(rows)})")
            for row in rows:
                print("   " + json.dumps(dict(zip(names, row, strict=False)), ensure_ascii=False))


def demo(events_dir: Path = EVENTS_DIR) -> int:
    """Run every ``events/*.json`` in name order against a fresh demo database; print responses and rows."""
    _use_local_database(fresh=True)
    os.environ.setdefault("AUTH_MODE", "authorizer")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    if os.environ.get("DATABASE_URL"):
        print("demo database: DATABASE_URL (used as it is: load db/migrations/<dialect> and db/demo/<dialect> first)")
    else:
        print(f"demo database: {DEMO_DB} (recreated)")
    if not cold_start("demo"):
        return 2
    for path in sorted(events_dir.glob("*.json")):
        _print_response(path.name, invoke(json.loads(path.read_text(encoding="utf-8"))))
    _print_rows()
    return 0


def invoke_file(path: Path) -> int:
    """Run one event file; print the response. Returns 2 when the file is not an event."""
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read event file {path}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(event, dict) or "requestContext" not in event:
        print(f"{path} is not an API Gateway HTTP API (payload v2) event: see events/", file=sys.stderr)
        return 2
    _use_local_database(fresh=False)
    os.environ.setdefault("AUTH_MODE", "authorizer")
    if not cold_start("invoke"):
        return 2
    _print_response(path.name, invoke(event))
    return 0


def event_from_request(method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2 event for one HTTP request."""
    raw_path, _, query = path.partition("?")
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class _Handler(BaseHTTPRequestHandler):
    """One client connection: HTTP/1.1 with keep-alive (as API Gateway gives), so a connector or a
    benchmark reuses its TCP connection; every answer carries a ``Content-Length``. A connection idle
    for :attr:`timeout` seconds is closed; an answer sent without reading the body closes it too."""

    server_version = "powersync-upload-local"
    protocol_version = "HTTP/1.1"
    timeout = 60
    disable_nagle_algorithm = True  # headers and body go out in two writes: without TCP_NODELAY the
    # body waits for the client's delayed ACK of the headers (40 ms per request on a kept connection)

    def _handle(self) -> None:
        if self.headers.get("Transfer-Encoding"):
            self._reply(411, b'{"message": "send a Content-Length; chunked bodies are not supported"}')
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self._reply(400, b'{"message": "invalid Content-Length"}')
            return
        from .events import LAMBDA_EVENT_LIMIT  # loaded by serve() already

        if length > LAMBDA_EVENT_LIMIT:  # never read it: Lambda would refuse such an event whole
            self._reply(413, b'{"message": "request body over the 6291456-byte Lambda invocation limit"}')
            return
        body = self.rfile.read(length) if length else b""
        if self.command == "GET" and self.path.partition("?")[0] == OPENAPI_PATH:
            self._send_openapi()
            return
        event = event_from_request(self.command, self.path, dict(self.headers.items()), body)
        response = invoke(event)
        payload = (response.get("body") or "").encode("utf-8")
        self.send_response(int(response["statusCode"]))
        for name, value in (response.get("headers") or {}).items():
            self.send_header(name, value)
        for name, values in (response.get("multiValueHeaders") or {}).items():
            for value in values:
                self.send_header(name, value)
        self.send_header("Access-Control-Allow-Origin", "*")
        self._finish_headers(len(payload))
        self.wfile.write(payload)

    def _send_openapi(self) -> None:
        from .openapi import document_text

        payload = document_text().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")
        self._finish_headers(len(payload))
        self.wfile.write(payload)

    def _finish_headers(self, length: int) -> None:
        self.send_header("Content-Length", str(length))
        if self.close_connection:  # the client asked for it (``Connection: close``, or HTTP/1.0)
            self.send_header("Connection", "close")
        self.end_headers()

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self._finish_headers(0)

    do_GET = _handle  # noqa: N815
    do_POST = _handle  # noqa: N815
    do_PUT = _handle  # noqa: N815
    do_PATCH = _handle  # noqa: N815
    do_DELETE = _handle  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class LocalServer(ThreadingHTTPServer):
    """``serve``'s HTTP server: a listen backlog of 128 (the standard library's 5 resets connections
    when a few dozen clients connect at once) and one daemon thread per connection; requests still
    reach the handler one at a time (:func:`invoke`)."""

    request_queue_size = 128
    daemon_threads = True


def database_label(url: str) -> str:
    """The database a URL points at, for a person to read: scheme, user, host, port and database,
    never the password (``postgresql://postgres@127.0.0.1:5432/app``; SQLite: the file)."""
    if url.startswith("sqlite:"):
        return f"SQLite {url.removeprefix('sqlite:///') or url}"
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def _database_in_use(settings: Any) -> str:
    if settings.database_url:
        return f"{database_label(settings.database_url)} (DATABASE_URL)"
    if settings.db_secret_id:
        return f"the Secrets Manager secret {settings.db_secret_id} (DB_SECRET_ID), read on the first upload"
    return f"SQLite {settings.local_sqlite} (the demo database; set DATABASE_URL for another)"


def cold_start(command: str) -> bool:
    """Load the settings and ``UPLOAD_CONFIG`` as a Lambda cold start would (the handler module's
    logger included); on a mistake print one line naming the key and return ``False`` (exit 2)."""
    from .config import ConfigError

    try:
        from .dialects import dialect_name
        from .handler import runtime

        rt = runtime()
        if rt.settings.database_url:
            dialect_name(rt.settings.database_url)
    except (ConfigError, ValueError) as exc:
        print(f"{command}: configuration error, not started: {exc}", file=sys.stderr)
        return False
    return True


def development_claims(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """The claims of ``serve``'s development token: user 1111...1111 for 24 h, with the
    ``JWT_ISSUER``/``JWT_AUDIENCE`` that serve then checks, so the printed token is accepted."""
    claims: dict[str, Any] = {"sub": "11111111-1111-1111-1111-111111111111", "exp": int(time.time()) + 86400}
    if environ.get("JWT_ISSUER"):
        claims["iss"] = environ["JWT_ISSUER"]
    if environ.get("JWT_AUDIENCE"):
        claims["aud"] = environ["JWT_AUDIENCE"]
    return claims


def serve(port: int) -> int:
    """Serve the handler on 127.0.0.1:``port`` until interrupted.

    The settings and ``UPLOAD_CONFIG`` are loaded before listening, as a cold start would: a mistake
    stops ``serve`` with the message naming the key, instead of a server that answers nothing.

    Returns:
        0 after Ctrl-C; 2 when the configuration is invalid or the port is taken (the message says
        what to do).
    """
    _use_local_database(fresh=False)
    os.environ["AUTH_MODE"] = "handler"
    development_token = None
    if not any(os.environ.get(k) for k in ("JWT_SECRET", "JWT_JWKS_URL", "JWT_JWKS_FILE")):
        os.environ["JWT_SECRET"] = DEV_SECRET
        import jwt

        development_token = jwt.encode(development_claims(os.environ), DEV_SECRET, algorithm="HS256")
    if not cold_start("serve"):
        return 2
    from .handler import runtime

    rt = runtime()
    try:
        server = LocalServer(("127.0.0.1", port), _Handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(
            f"serve: port {port} on 127.0.0.1 is already in use (another `make serve`?). Stop that process, "
            f"or pick another port: PORT={port + 1} make serve",
            file=sys.stderr,
        )
        return 2
    if development_token is not None:
        print(
            "JWT_SECRET not set: using a development secret. A token for user 1111...1111, valid 24 h:\n"
            + development_token
        )
    print(f"database: {_database_in_use(rt.settings)}")
    print(f"upload configuration: {rt.settings.upload_config}")
    print(
        f"serving POST http://127.0.0.1:{port}/api/data, GET /health and GET {OPENAPI_PATH} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``demo``, ``invoke EVENT`` or ``serve``."""
    parser = argparse.ArgumentParser(prog="python -m powersync_upload.local", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run every event in events/ against a fresh demo database")
    one = commands.add_parser("invoke", help="run one API Gateway HTTP API event file")
    one.add_argument("event", type=Path)
    commands.add_parser("serve", help="serve the handler over HTTP on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    if args.command == "invoke":
        return invoke_file(args.event)
    port = os.environ.get("PORT", "3000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        print(f"serve: PORT={port!r} is not a TCP port number (1-65535)", file=sys.stderr)
        return 2
    return serve(int(port))


if __name__ == "__main__":
    sys.exit(main())
