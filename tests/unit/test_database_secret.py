"""Database credentials from a Secrets Manager secret (RDS secret JSON shape), through Powertools
Parameters, against moto: the URL built from it, caching across calls, the forced fetch after a login
failure, broken secrets, and no boto3 at all when no secret is configured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from powersync_upload.config import ConfigError
from powersync_upload.database import resolve_url
from powersync_upload.settings import Settings
from tests.support import ROOT

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

SECRET_ID = "powersync/upload/db"
PASSWORD = "p@ss:w/rd?#[]%&=+ é'\"\\"
SECRET = {
    "engine": "postgres",
    "host": "db.example.internal",
    "port": 5432,
    "username": "app user@corp",
    "password": PASSWORD,
    "dbname": "powersync",
}


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto Secrets Manager with fake credentials; Powertools' provider cache emptied around it."""
    from aws_lambda_powertools.utilities import parameters

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    parameters.clear_caches()
    with moto.mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")
    parameters.clear_caches()


def settings(**extra: Any) -> Settings:
    return Settings(db_secret_id=SECRET_ID, **extra)


def create(client: Any, value: Any, secret_id: str = SECRET_ID) -> None:
    client.create_secret(Name=secret_id, SecretString=value if isinstance(value, str) else json.dumps(value))


def test_url_from_the_rds_secret(secrets: Any) -> None:
    create(secrets, SECRET)
    url = resolve_url(settings())
    parts = urlsplit(url)
    assert parts.scheme == "postgresql"
    assert parts.hostname == "db.example.internal" and parts.port == 5432 and parts.path == "/powersync"
    # every special character of the user name and password is percent-encoded, and decodes back
    userinfo = parts.netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    assert unquote(user) == "app user@corp"
    assert unquote(password) == PASSWORD
    assert all(c not in userinfo for c in "@/?#[] '\"\\")


def test_password_survives_the_dialect_url_parsing(secrets: Any) -> None:
    # The MySQL dialect turns the URL back into driver arguments: the password must come back as stored.
    from powersync_upload.dialects.mysql import connect_args

    create(secrets, {**SECRET, "engine": "mariadb", "port": 3306})
    url = resolve_url(settings())
    assert url.startswith("mysql://")
    args = connect_args(url, 5)
    assert args["password"] == PASSWORD
    assert args["user"] == "app user@corp"
    assert args["host"] == "db.example.internal"


@pytest.mark.parametrize(
    ("engine", "default", "scheme"),
    [
        ("sqlserver-se", "mssql", "mssql"),
        ("postgres", "mssql", "postgresql"),
        ("aurora-postgresql", "mssql", "postgresql"),
        ("mariadb", "mssql", "mysql"),
        (None, "mssql", "mssql"),
        (None, "postgresql", "postgresql"),
    ],
)
def test_engine_from_the_secret_or_db_engine(secrets: Any, engine: str | None, default: str, scheme: str) -> None:
    secret = {k: v for k, v in SECRET.items() if k != "engine"}
    if engine is not None:
        secret["engine"] = engine
    create(secrets, secret)
    assert resolve_url(settings(db_engine=default)).startswith(f"{scheme}://")


def test_secret_is_cached_across_calls(secrets: Any) -> None:
    # Given a resolved secret
    create(secrets, SECRET)
    first = resolve_url(settings())
    # When the secret is rotated in Secrets Manager
    secrets.put_secret_value(SecretId=SECRET_ID, SecretString=json.dumps({**SECRET, "password": "rotated"}))
    # Then the next call still uses the cached value (no Secrets Manager round trip)
    assert resolve_url(settings()) == first
    # And force_secret (after a login failure) fetches it again, and that value is cached in turn
    forced = resolve_url(settings(), force_secret=True)
    assert unquote(urlsplit(forced).password or "") == "rotated"
    assert resolve_url(settings()) == forced


def test_cached_call_does_not_reach_secrets_manager(secrets: Any) -> None:
    # Count GetSecretValue calls made through botocore by any client (Powertools builds its own).
    from botocore.client import BaseClient

    create(secrets, SECRET)
    calls: list[str] = []
    original = BaseClient._make_api_call

    def counting(self: Any, operation: str, params: Any) -> Any:
        if operation == "GetSecretValue":
            calls.append(operation)
        return original(self, operation, params)

    BaseClient._make_api_call = counting  # type: ignore[method-assign]
    try:
        for _ in range(5):
            resolve_url(settings())
        assert len(calls) == 1
        resolve_url(settings(), force_secret=True)
        assert len(calls) == 2
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]


@pytest.mark.parametrize("missing", ["host", "username", "password"])
def test_secret_missing_a_key(secrets: Any, missing: str) -> None:
    create(secrets, {k: v for k, v in SECRET.items() if k != missing})
    with pytest.raises(ConfigError) as caught:
        resolve_url(settings())
    assert missing in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_secret_with_an_empty_password(secrets: Any) -> None:
    create(secrets, {**SECRET, "password": ""})
    with pytest.raises(ConfigError, match="password"):
        resolve_url(settings())


def test_secret_that_is_not_an_object(secrets: Any) -> None:
    create(secrets, ["host", "user"])
    with pytest.raises(ConfigError, match="JSON object"):
        resolve_url(settings())


def test_secret_that_is_not_json(secrets: Any) -> None:
    create(secrets, "host=db user=app password=x")
    with pytest.raises(ConfigError):
        resolve_url(settings())


class FakeDialect:
    """Connects only with the current password; any other is a PostgreSQL login failure."""

    name = "postgresql"

    def __init__(self, password: str) -> None:
        self.password = password
        self.urls: list[str] = []

    def connect(self, url: str, timeout_s: float, statement_s: float | None = None) -> object:
        self.urls.append(url)
        if unquote(urlsplit(url).password or "") != self.password:
            raise Exception('FATAL:  password authentication failed for user "app"')
        return object()

    def classify(self, exc: BaseException) -> None:
        return None


def _database(secrets: Any, password: str) -> tuple[Any, FakeDialect]:
    from powersync_upload.database import Database

    db = Database.from_url(resolve_url(settings()), settings())
    fake = FakeDialect(password)
    db.dialect = fake  # type: ignore[assignment]
    return db, fake


def test_login_failure_fetches_the_rotated_secret_once(secrets: Any) -> None:
    # Given a container that cached the secret, then a rotation
    create(secrets, SECRET)
    db, fake = _database(secrets, "rotated")
    secrets.put_secret_value(SecretId=SECRET_ID, SecretString=json.dumps({**SECRET, "password": "rotated"}))
    # When it connects: the cached password fails, the secret is fetched again, the second try works
    assert db.connection(5) is not None
    assert [unquote(urlsplit(u).password or "") for u in fake.urls] == [PASSWORD, "rotated"]


def test_login_failure_with_a_still_wrong_secret_is_retryable(secrets: Any) -> None:
    from powersync_upload.errors import RetryableError

    create(secrets, SECRET)
    db, fake = _database(secrets, "something-else")
    with pytest.raises(RetryableError):
        db.connection(5)
    assert len(fake.urls) == 2


def test_secrets_manager_failure_during_the_refetch_is_retryable(secrets: Any) -> None:
    from powersync_upload.errors import RetryableError

    create(secrets, SECRET)
    db, _ = _database(secrets, "rotated")
    secrets.delete_secret(SecretId=SECRET_ID, ForceDeleteWithoutRecovery=True)
    with pytest.raises(RetryableError):
        db.connection(5)


def test_database_url_wins_over_the_secret(secrets: Any) -> None:
    # No secret exists: DATABASE_URL is used without asking Secrets Manager.
    assert resolve_url(settings(database_url="sqlite:///x.sqlite")) == "sqlite:///x.sqlite"


def test_no_boto3_without_a_secret(tmp_path: Any) -> None:
    # A cold start and a request with DATABASE_URL and no DB_SECRET_ID never import boto3.
    database = tmp_path / "x.sqlite"
    LIST, USER = "a0000000-0000-4000-8000-000000000001", "11111111-1111-1111-1111-111111111111"  # noqa: N806
    script = f"""
import json, sys
from powersync_upload.local import create_demo_database, LocalContext
from pathlib import Path
create_demo_database(Path({str(database)!r}))
import powersync_upload.handler as handler
from tests.support import event
out = handler.lambda_handler(event('{{"batch": []}}', None, path="/health", method="GET"), LocalContext())
assert out["statusCode"] == 200, out
upload = event('{{"batch": [{{"op": "DELETE", "type": "lists", "id": "{LIST}"}}]}}', None)
upload["requestContext"]["authorizer"] = {{"jwt": {{"claims": {{"sub": "{USER}"}}}}}}
out = handler.lambda_handler(upload, LocalContext())
assert json.loads(out["body"]) == {{"results": [{{"status": "success"}}]}}, out
aws = ("boto3", "botocore", "aws_lambda_powertools.utilities.parameters")
print(json.dumps({{"status": out["statusCode"], "loaded": sorted(m for m in sys.modules if m.startswith(aws))}}))
"""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DB_SECRET_ID", "JWT_SECRET", "JWT_JWKS_FILE", "JWT_JWKS_URL")
    }
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "functions" / "upload"), str(ROOT)]),
            "DATABASE_URL": f"sqlite:///{database}",
            "AUTH_MODE": "authorizer",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    # Powertools itself imports the top-level ``botocore`` package (shared/user_agent.py, to tag SDK
    # sessions); no client, session, boto3 or the Parameters utility is loaded.
    assert result["loaded"] == ["botocore"]
