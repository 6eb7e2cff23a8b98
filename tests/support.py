"""Test helpers shared by integration and conformance tests: databases per dialect, tokens, events.

Databases: SQLite in a temporary file; PostgreSQL at ``POSTGRES_URL`` (default: the local server,
database ``powersync_upload_test``, created when missing); MariaDB/MySQL at ``MYSQL_URL``; SQL Server
at ``MSSQL_URL`` only when set. A missing PostgreSQL fails the tests; it is never skipped.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jwt

from powersync_upload import dialects
from powersync_upload.config import load_upload_config
from powersync_upload.convert import convert
from powersync_upload.database import Database
from powersync_upload.handler import Runtime, lambda_handler, set_runtime
from powersync_upload.local import LocalContext, event_from_request, schema_scripts
from powersync_upload.schema import Kind
from powersync_upload.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_CASES = Path(os.environ.get("SHARED_CASES", ROOT.parent / "shared" / "cases"))
# cases/next holds cases only: its fixtures are the ones beside it in cases/fixtures
FIXTURES = next(
    (folder / "fixtures" for folder in (SHARED_CASES, SHARED_CASES.parent) if (folder / "fixtures").is_dir()),
    SHARED_CASES / "fixtures",
)
SECRET = "test-secret-0123456789-0123456789-abcdef"
USERS = {"U1": "11111111-1111-1111-1111-111111111111", "U2": "22222222-2222-2222-2222-222222222222"}
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/powersync_upload_test")
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/powersync_upload_test")
MSSQL_URL = os.environ.get("MSSQL_URL")


def available_dialects() -> list[str]:
    """Dialects the suite runs on here: SQLite, PostgreSQL and MariaDB/MySQL always, SQL Server when
    ``MSSQL_URL`` is set."""
    names = ["sqlite", "postgresql", "mysql"]
    if MSSQL_URL:
        names.append("mssql")
    return names


def token(user: str | None, *, expired: bool = False, secret: str = SECRET, **claims: Any) -> str:
    """An HS256 token for ``U1``/``U2`` (or a literal sub)."""
    now = int(time.time())
    payload = {"sub": USERS.get(user or "", user), "iat": now, "exp": now - 3600 if expired else now + 3600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def authorization(user: str | None) -> str | None:
    """The Authorization header a case's ``user`` stands for."""
    if user is None:
        return None
    if user == "garbage":
        return "Bearer not-a-jwt"
    if user == "expired":
        return f"Bearer {token('U1', expired=True)}"
    return f"Bearer {token(user)}"


def event(body: str, auth: str | None, path: str = "/api/data", method: str = "POST") -> dict[str, Any]:
    """An API Gateway HTTP API payload v2 event (built as ``serve`` builds one from a request)."""
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = auth
    return event_from_request(method, path, headers, body.encode("utf-8"))


@dataclass
class Response:
    """A handler response, decoded."""

    status: int
    body: Any
    headers: dict[str, str]


def call(body: Any, user: str | None = "U1", *, raw: str | None = None) -> Response:
    """POST ``body`` (or ``raw`` text) to /api/data through the real Lambda handler."""
    text = raw if raw is not None else json.dumps(body)
    out = lambda_handler(event(text, authorization(user)), LocalContext())  # type: ignore[arg-type]
    payload = out.get("body") or ""
    return Response(int(out["statusCode"]), json.loads(payload) if payload else None, out.get("headers") or {})


# ---- databases -----------------------------------------------------------------------------------


def _pg_admin_url(url: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/postgres"


def _ensure_pg_database(url: str) -> None:
    import psycopg

    name = url.rpartition("/")[2].split("?")[0]
    with psycopg.connect(_pg_admin_url(url), autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def _mssql_drop_statements(cursor: Any) -> list[str]:
    """``ALTER TABLE ... DROP CONSTRAINT`` for every foreign key, then ``DROP TABLE`` for every user table."""
    cursor.execute(
        "SELECT QUOTENAME(s.name) + N'.' + QUOTENAME(t.name), QUOTENAME(f.name) FROM sys.foreign_keys f"
        " JOIN sys.tables t ON f.parent_object_id = t.object_id JOIN sys.schemas s ON t.schema_id = s.schema_id"
    )
    statements = [f"ALTER TABLE {table} DROP CONSTRAINT {fk}" for table, fk in cursor.fetchall()]
    cursor.execute(
        "SELECT QUOTENAME(s.name) + N'.' + QUOTENAME(t.name) FROM sys.tables t"
        " JOIN sys.schemas s ON t.schema_id = s.schema_id WHERE t.is_ms_shipped = 0"
    )
    return statements + [f"DROP TABLE {table}" for (table,) in cursor.fetchall()]


def reset_database(dialect: str, scripts: list[Path], tmp_path: Path) -> str:
    """Empty the test database of ``dialect``, run ``scripts`` into it, and return its URL."""
    if dialect == "sqlite":
        path = tmp_path / f"test-{uuid.uuid4().hex}.sqlite"
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            for script in scripts:
                conn.executescript(script.read_text(encoding="utf-8"))
        return f"sqlite:///{path}"
    if dialect == "postgresql":
        import psycopg

        _ensure_pg_database(POSTGRES_URL)
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
            for script in scripts:
                conn.execute(script.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        return POSTGRES_URL
    if dialect == "mysql":
        import pymysql
        from pymysql.constants import CLIENT

        from powersync_upload.dialects.mysql import connect_args

        args = connect_args(MYSQL_URL, 10)
        database = args.pop("database")
        args["client_flag"] |= CLIENT.MULTI_STATEMENTS
        conn = pymysql.connect(**args)
        try:
            cursor = conn.cursor()
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cursor.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            cursor.execute(f"USE `{database}`")
            for script in scripts:
                cursor.execute(script.read_text(encoding="utf-8"))
                while cursor.nextset():
                    pass
            conn.commit()
        finally:
            conn.close()
        return MYSQL_URL
    if dialect == "mssql":
        assert MSSQL_URL
        db = Database.from_url(MSSQL_URL)
        conn = db.dialect.connect(MSSQL_URL, 10)
        try:
            cursor = conn.cursor()
            # One statement per object: `SELECT @sql += ... FROM` is documented as unreliable (on Babelfish
            # it keeps only the last row, so a reset dropped one table)
            for statement in _mssql_drop_statements(cursor):
                cursor.execute(statement)
            for script in scripts:
                cursor.execute(script.read_text(encoding="utf-8"))
            conn.commit()
        finally:
            conn.close()
        return MSSQL_URL
    raise ValueError(dialect)


def install_runtime(url: str, config_path: Path, **settings: Any) -> Runtime:
    """Point the handler at ``url`` with ``config_path``, verifying HS256 test tokens itself."""
    values: dict[str, Any] = {
        "database_url": url,
        "upload_config": config_path,
        "auth_mode": "handler",
        "jwt_secret": SECRET,
        **settings,
    }
    rt = Runtime(Settings.model_validate(values), load_upload_config(config_path))
    set_runtime(rt)
    return rt


@contextmanager
def demo_sqlite(tmp_path: Path, **settings: Any) -> Iterator[tuple[str, Runtime]]:
    """A fresh SQLite demo database (``schema_scripts('sqlite')``) behind the handler with the demo
    configuration; yields its URL and the runtime, and discards both afterwards."""
    url = reset_database("sqlite", schema_scripts("sqlite"), tmp_path)
    rt = install_runtime(url, ROOT / "functions" / "upload" / "upload.yaml", **settings)
    try:
        yield url, rt
    finally:
        rt.db.discard()
        set_runtime(None)


# ---- reading rows back ---------------------------------------------------------------------------


def normalize(value: Any, kind: Kind, scale: int | None, expected: Any) -> Any:
    """A stored value in the form the shared cases' README compares (UUIDs lower-case, ...)."""
    if value is None:
        return None
    if isinstance(expected, (list, dict)) and isinstance(value, str):
        return json.loads(value)
    if kind is Kind.UUID:
        return str(value).lower()
    if kind is Kind.BOOLEAN:
        return bool(int(value))
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace(" ", "T").replace("Z", "+00:00"))
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds")
    if kind is Kind.DATE:
        return value.isoformat() if isinstance(value, date) else str(value)[:10]
    if kind is Kind.TIME:
        if isinstance(value, str):
            value = dtime.fromisoformat(value)
        if isinstance(value, timedelta):  # PyMySQL reads TIME as a duration
            value = (datetime(2000, 1, 1) + value).time()
        return value.isoformat(timespec="milliseconds")
    if kind is Kind.DECIMAL:
        number = Decimal(str(value))
        return str(number.quantize(Decimal(1).scaleb(-(scale or 0)))) if scale is not None else str(number)
    if kind is Kind.JSON and isinstance(value, str):
        return json.loads(value)
    if kind is Kind.FLOAT:
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value).lower()
    return value


class RowReader:
    """Reads rows back through the dialect's own connection and introspection."""

    def __init__(self, url: str) -> None:
        self.db = Database.from_url(url)
        self.conn = self.db.dialect.connect(url, 10)
        self.ph = "?" if self.db.dialect.name == "sqlite" else "%s"
        if self.db.dialect.name == "mysql":
            self.conn.autocommit(True)  # see each committed change, not a repeatable-read snapshot

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _cursor(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        cursor = self.conn.cursor()
        cursor.execute(sql, params)
        return cursor

    def row(self, table: str, key: str, row_id: str, expected: dict[str, Any] | None) -> dict[str, Any] | None:
        """The row whose ``key`` is ``row_id`` (UUID keys converted first), normalized for comparison."""
        schema = self.db.dialect.introspect(self.conn, table)
        assert schema is not None, f"table {table} missing"
        key_column = schema.column(key)
        assert key_column is not None
        quote = dialects.load(self.db.dialect.name).quote  # type: ignore[attr-defined]
        key_value = convert(row_id, key_column)
        to_driver = self.db.dialect.to_driver  # type: ignore[attr-defined]
        cursor = self._cursor(
            f"SELECT * FROM {quote(table)} WHERE {quote(key_column.name)} = {self.ph}",
            (to_driver(key_value, key_column),),
        )
        names = [d[0] for d in cursor.description]
        found = cursor.fetchone()
        self.conn.rollback()
        if found is None:
            return None
        out = {}
        for name, value in zip(names, found, strict=False):
            column = schema.columns[name]
            out[name] = normalize(value, column.kind, column.scale, (expected or {}).get(name))
        return out

    def execute(self, sql: str) -> None:
        """Run ``sql`` in its own transaction and commit it (a change made beside the product). No
        parameters: a ``%`` in the statement is literal SQL, never a placeholder."""
        cursor = self.conn.cursor()
        cursor.execute(sql)
        cursor.close()
        self.conn.commit()

    def count(self, table: str) -> int:
        """Rows in ``table`` (a fixture table or one of the product's own, e.g. the errors table)."""
        quote = dialects.load(self.db.dialect.name).quote  # type: ignore[attr-defined]
        cursor = self._cursor(f"SELECT COUNT(*) FROM {quote(table)}")
        value = int(cursor.fetchone()[0])
        self.conn.rollback()
        return value


T = TypeVar("T")


def classified_as(kind: type[T], result: object) -> T:
    """``result`` (what a dialect's ``classify`` returned), asserted to be a ``kind`` (``FatalOpError``
    or ``RetryableError``)."""
    assert isinstance(result, kind), result
    return result


def stored_row(url: str, table: str, row_id: str, expected: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The row of ``table`` whose ``id`` is ``row_id`` (as :meth:`RowReader.row` reads it), through a
    reader opened and closed around the one read; ``None`` when there is none."""
    reader = RowReader(url)
    try:
        return reader.row(table, "id", row_id, expected)
    finally:
        reader.close()


def stored_count(url: str, table: str) -> int:
    """Rows in ``table`` (as :meth:`RowReader.count` counts them), through a reader opened and closed
    around the one count."""
    reader = RowReader(url)
    try:
        return reader.count(table)
    finally:
        reader.close()


# ---- counting round trips ------------------------------------------------------------------------

DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


class DriverCallWrapper:
    """A DB-API connection or cursor that forwards everything to the one it wraps, except the driver
    calls named in :attr:`WRAPPED`, which go through :meth:`_call`; the cursors it opens are wrapped
    the same way. ``state`` is what the subclass records into (a count, a clock), shared by a
    connection and its cursors. The wrapper's own two attributes have names no driver uses (an
    attribute named like the driver's own, e.g. pymssql's ``_conn``, would hide it)."""

    __slots__ = ("_wrapped_state", "_wrapped_target")

    WRAPPED: frozenset[str] = frozenset()

    def __init__(self, target: Any, state: Any) -> None:
        object.__setattr__(self, "_wrapped_target", target)
        object.__setattr__(self, "_wrapped_state", state)

    def _call(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call one of the :attr:`WRAPPED` driver functions and record it into the state."""
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._wrapped_target, name)
        if name == "cursor":
            return lambda *args, **kwargs: type(self)(value(*args, **kwargs), self._wrapped_state)
        if name in self.WRAPPED:
            return lambda *args, **kwargs: self._call(value, args, kwargs)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._wrapped_target, name, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._wrapped_target)


class DriverCallCounter(DriverCallWrapper):
    """A DB-API connection that counts the driver calls that cost a round trip on a server database:
    ``execute``, ``executemany``, ``executescript``, ``commit`` and ``rollback`` (on the connection or
    on its cursors), into ``calls[0]``. For SQLite, which has no wire to count at. Everything else is
    forwarded to the wrapped connection, reads and writes alike."""

    __slots__ = ()

    WRAPPED = frozenset({"execute", "executemany", "executescript", "commit", "rollback"})

    def __init__(self, target: Any, calls: list[int]) -> None:
        super().__init__(target, calls)

    def _call(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._wrapped_state[0] += 1
        return function(*args, **kwargs)


@dataclass
class RoundTrips:
    """What :func:`counting_round_trips` yields: the URL to use and the count so far."""

    url: str
    _read: Callable[[], int]

    @property
    def count(self) -> int:
        """Round trips since counting started (all connections to ``url``)."""
        return self._read()


@contextmanager
def counting_round_trips(url: str) -> Iterator[RoundTrips]:
    """Count the round trips made to the database at ``url``, as ``bench/proxy.py``'s docstring
    defines them (the one definition, used by the pinned tests and the bench alike).

    Server databases are counted on the wire, through :class:`bench.proxy.Proxy` without delay
    (a turn of the conversation is one round trip, however the driver batches or pipelines): connect
    to the yielded ``url``. SQLite is counted at the driver (:class:`DriverCallCounter` around every
    connection the dialect opens while the block runs); its ``url`` is unchanged.
    """
    name = dialects.dialect_name(url)
    if name == "sqlite":
        calls = [0]
        module: Any = dialects.load("sqlite")
        original = module.connect
        module.connect = lambda target, timeout_s, statement_s=None: DriverCallCounter(
            original(target, timeout_s, statement_s), calls
        )
        try:
            yield RoundTrips(url, lambda: calls[0])
        finally:
            module.connect = original
        return
    from bench.proxy import Proxy

    parts = urlsplit(url)
    with Proxy(parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[name], delay_s=0) as proxy:
        yield RoundTrips(proxy.url(url), lambda: proxy.round_trips)


# ---- the local HTTP server ------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, process: Any, log_path: Path, timeout_s: float) -> None:
    """Poll ``base``/health until it answers 200; raise with the end of the server's log when the
    process exits or ``timeout_s`` seconds pass first."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"serve at {base} did not start:\n{output}") from None
            time.sleep(0.1)


@contextmanager
def running_serve(directory: Path) -> Iterator[tuple[str, Path]]:
    """``python -m powersync_upload.local serve`` on a free port against a fresh SQLite demo database
    in ``directory``, verifying HS256 tokens signed with :data:`SECRET`; yields (base URL, database)."""
    import sqlite3
    import subprocess
    import sys

    from powersync_upload.local import schema_scripts

    path = directory / "serve.sqlite"
    with sqlite3.connect(path) as conn:
        for script in schema_scripts("sqlite"):
            conn.executescript(script.read_text(encoding="utf-8"))
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "functions" / "upload"), str(ROOT)]),
        "DATABASE_URL": f"sqlite:///{path}",
        "JWT_SECRET": SECRET,
        "PORT": str(port),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    for name in ("JWT_JWKS_URL", "JWT_JWKS_FILE", "JWT_ISSUER", "JWT_AUDIENCE", "DB_SECRET_ID", "UPLOAD_CONFIG"):
        env.pop(name, None)
    log_path = path.with_suffix(".log")
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "powersync_upload.local", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            log.flush()
            wait_healthy(base, process, log_path, 20)
            yield base, path
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
