"""The one data-access seam: which database, its dialect, a connection kept across warm invocations,
and the introspected schema.

A Lambda container handles one request at a time, so one connection per container is enough. It is not
pinged: the first statement of a transaction (:meth:`Database.begin`) is the liveness check, and a kept
connection that the server closed while it sat idle (``pg_terminate_backend``, an idle-session timeout,
a failover, a NAT or proxy idle cut) fails there and is replaced once, before anything of the
transaction was sent, within the time the request has left. Credentials come
from ``DATABASE_URL`` or, deployed, from a Secrets Manager secret in the RDS secret JSON shape
(``{"engine", "host", "port", "username", "password", "dbname"}``), cached by Powertools Parameters
and fetched again once after a login failure (a rotated password).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as urlquote

from . import dialects
from .config import ConfigError
from .dialects import Dialect
from .errors import RetryableError
from .schema import SchemaCache, TableSchema
from .settings import Settings

logger = logging.getLogger(__name__)

LOST_CONNECTION_KINDS = frozenset({"connection", "admin_shutdown", "crash_shutdown"})
"""Retryable kinds (:class:`RetryableError`) that mean the server closed the session: the kept
connection is dead, not the database busy. PostgreSQL's ``pg_terminate_backend`` is 57P01
``admin_shutdown``; SQL Server's KILL and DB-Lib's lost-connection errors are ``connection``."""
LOST_CONNECTION_STATES = frozenset({"57P05"})
"""SQLSTATEs of a closed session that the dialect does not class as retryable: PostgreSQL 14+'s
``idle_session_timeout`` (57P05, "terminating connection due to idle-session timeout")."""

_SECRET_ENGINES = {
    "sqlserver": "mssql",
    "sqlserver-ex": "mssql",
    "sqlserver-se": "mssql",
    "sqlserver-ee": "mssql",
    "sqlserver-web": "mssql",
    "postgres": "postgresql",
    "aurora-postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "aurora-mysql": "mysql",
}


def url_from_secret(secret: dict[str, Any], default_engine: str) -> str:
    """Build a database URL from an RDS-shaped secret.

    Raises:
        ConfigError: the secret lacks ``host``, ``username`` or ``password``.
    """
    missing = [k for k in ("host", "username", "password") if not secret.get(k)]
    if missing:
        raise ConfigError(f"database secret lacks {', '.join(missing)}")
    engine = _SECRET_ENGINES.get(str(secret.get("engine", "")).lower(), default_engine)
    port = f":{secret['port']}" if secret.get("port") else ""
    dbname = secret.get("dbname") or ""
    user, password = urlquote(str(secret["username"]), safe=""), urlquote(str(secret["password"]), safe="")
    return f"{engine}://{user}:{password}@{secret['host']}{port}/{dbname}"


def _secret_url(settings: Settings, force: bool) -> str:
    from aws_lambda_powertools.utilities import parameters  # boto3 only when a secret is configured

    assert settings.db_secret_id is not None
    try:
        secret = parameters.get_secret(settings.db_secret_id, transform="json", force_fetch=force)
    except parameters.exceptions.TransformParameterError as exc:
        raise ConfigError("the database secret is not JSON (expected the RDS secret shape)") from exc
    if not isinstance(secret, dict):
        raise ConfigError("the database secret is not a JSON object")
    return url_from_secret(secret, settings.db_engine)


def resolve_url(settings: Settings, *, force_secret: bool = False) -> str:
    """The database URL: ``DATABASE_URL``, else the secret, else (local commands only) the demo SQLite file.

    Raises:
        ConfigError: no database is configured.
    """
    if settings.database_url:
        return settings.database_url
    if settings.db_secret_id:
        return _secret_url(settings, force_secret)
    if settings.local_sqlite is not None:
        return f"sqlite:///{settings.local_sqlite}"
    raise ConfigError("no database configured: set DATABASE_URL or DB_SECRET_ID")


@dataclass
class Database:
    """A database the engine writes to.

    Attributes:
        url: the database URL (never logged: it may hold a password).
        dialect: the dialect module for ``url``.
        schema: introspected tables, shared by every request in this container.
        fresh: True while the kept connection was opened for the current transaction (a failure on it
            is not a stale connection).
    """

    url: str
    dialect: Dialect
    settings: Settings | None = None
    schema: SchemaCache = field(default_factory=SchemaCache)
    fresh: bool = False
    _conn: Any = None

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> Database:
        """A database for ``url``; imports only that URL's dialect."""
        return cls(url=url, dialect=dialects.load(dialects.dialect_name(url)), settings=settings)

    def connection(self, timeout_s: float) -> Any:
        """The kept connection, or a new one (``fresh`` tells which).

        Raises:
            RetryableError: the database cannot be reached (or refused the login) within ``timeout_s``.
        """
        if self._conn is None:
            self._conn = self._connect(timeout_s)
            self.fresh = True
        return self._conn

    def begin(self, budget: Callable[[], float]) -> Any:
        """A connection with an open transaction. A connection kept from an earlier invocation that
        fails this first statement because the server closed it while idle is replaced once: nothing of
        the transaction was sent yet, so the second try is safe. Each try gets only the time left.

        Args:
            budget: seconds the request may still spend (called before each try); it raises
                :class:`RetryableError` ("deadline") when too little is left.

        Returns:
            the connection, inside a transaction opened with ``dialect.begin``.

        Raises:
            RetryableError: no connection within the budget, or the deadline came first.
            Exception: the driver's error from ``begin`` on a fresh connection, or one that is not a
                lost connection (the caller classifies it).
        """
        seconds = budget()
        conn = self.connection(min(10.0, seconds))
        try:
            self.dialect.begin(conn, seconds)
            return conn
        except Exception as exc:
            if self.fresh or not self.is_lost_connection(exc):
                raise
            number = getattr(self.dialect.classify(exc), "number", None)
            logger.info(
                "kept connection was closed by the server; reconnecting once",
                extra={"error_type": type(exc).__name__, "error_number": number},
            )
            self.discard()
        seconds = budget()
        conn = self.connection(min(10.0, seconds))
        self.dialect.begin(conn, seconds)
        return conn

    def is_lost_connection(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the server closed the session (see :data:`LOST_CONNECTION_KINDS`)."""
        classified = self.dialect.classify(exc)
        if isinstance(classified, RetryableError):
            return classified.kind in LOST_CONNECTION_KINDS
        return classified is not None and getattr(classified, "number", None) in LOST_CONNECTION_STATES

    def mark_used(self) -> None:
        """The kept connection has served a transaction: it is no longer ``fresh``."""
        self.fresh = False

    def _connect(self, timeout_s: float) -> Any:
        statement_s = self.settings.deadline_s if self.settings is not None else None
        try:
            return self.dialect.connect(self.url, timeout_s, statement_s)
        except Exception as exc:
            if self.settings is not None and self.settings.db_secret_id and _is_login_failure(exc):
                try:  # the password may have been rotated: fetch the secret again, once
                    self.url = resolve_url(self.settings, force_secret=True)
                    return self.dialect.connect(self.url, timeout_s, statement_s)
                except Exception as again:  # noqa: BLE001 - Secrets Manager or the database: retryable
                    exc = again
            classified = self.dialect.classify(exc)
            number = getattr(classified, "number", None)
            logger.warning(
                "database connection failed", extra={"error_number": number, "error_type": type(exc).__name__}
            )
            raise RetryableError("connection", number=number, retry_after_ms=2000) from exc

    def discard(self) -> None:
        """Close and forget the cached connection (after a connection-level failure)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is already broken
                conn.close()

    def table(self, conn: Any, server_table: str) -> TableSchema | None:
        """The introspected table, cached for the container's life."""
        return self.schema.get(server_table, lambda t: self.dialect.introspect(conn, t))

    def refresh_table(self, conn: Any, server_table: str) -> bool:
        """Introspect the table again, at most once a minute; True when it was reloaded."""
        return self.schema.refresh(server_table, lambda t: self.dialect.introspect(conn, t))


def _is_login_failure(exc: BaseException) -> bool:
    """SQL Server 18456, PostgreSQL 28P01/28000, MySQL 1045: the password may have been rotated."""
    text = repr(exc.args)
    return any(marker in text for marker in ("18456", "28P01", "password authentication", "1045"))
