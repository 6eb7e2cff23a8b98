"""The function's environment: the ``Settings`` read from environment variables and the log level.

Read once per container (cold start) and validated there, so a broken variable stops start-up with a
message that names it instead of failing the first upload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import DEFAULT_CONFIG_PATH, ConfigError


class Settings(BaseModel):
    """The function's environment variables.

    Attributes:
        database_url: ``mssql://``, ``postgresql://``, ``mysql://`` or ``sqlite:///path`` URL.
        db_secret_id: Secrets Manager secret (RDS secret JSON shape) used when no URL is given.
        db_engine: dialect for the secret (``mssql`` unless the secret names its ``engine``).
        upload_config: path of the YAML configuration file.
        auth_mode: ``authorizer`` (claims from the HttpApi JWT authorizer) or ``handler`` (the handler
            verifies the bearer token itself with the ``JWT_*`` settings).
        jwt_secret / jwt_jwks_url / jwt_jwks_file / jwt_issuer / jwt_audience: token verification.
        jwt_leeway_s: clock skew allowed on ``exp``/``nbf``/``iat``, in seconds.
        max_body_bytes: request body size limit (413 above it).
        deadline_s: the longest a request may work, in seconds (API Gateway HTTP APIs stop at 30 s).
        fast_path: batch consecutive operations into one statement each (``FAST_PATH=0``: one statement
            per operation, the reference backends' way; the benchmark's baseline).
        local_sqlite: when no database is configured, use the embedded demo SQLite file
            (only the local commands set this).
    """

    model_config = ConfigDict(extra="ignore")

    database_url: str | None = None
    db_secret_id: str | None = None
    db_engine: str = "mssql"
    upload_config: Path = DEFAULT_CONFIG_PATH
    auth_mode: Literal["authorizer", "handler"] = "authorizer"
    jwt_secret: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    deadline_s: float = Field(default=28.0, gt=0, le=900)
    fast_path: bool = True
    local_sqlite: Path | None = None

    @model_validator(mode="after")
    def _usable_token_settings(self) -> Settings:
        """Token settings that could only answer 401 refuse to start instead, naming the variable."""
        if self.jwt_secret is not None and len(self.jwt_secret.encode("utf-8")) < MIN_HS256_SECRET_BYTES:
            raise ValueError(
                f"JWT_SECRET: an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes "
                "(RFC 7518 section 3.2); generate one with `openssl rand -base64 48`"
            )
        if self.jwt_jwks_file is not None:
            problem = jwks_file_problem(self.jwt_jwks_file)
            if problem is not None:
                raise ValueError(f"JWT_JWKS_FILE: {problem}")
        return self

    @classmethod
    def from_env(cls) -> Settings:
        """Build from ``os.environ`` (names upper-cased: ``DATABASE_URL``, ``UPLOAD_CONFIG``, ...).

        Raises:
            ConfigError: a variable has an invalid value; the message names it.
        """
        values = {name: os.environ[name.upper()] for name in cls.model_fields if os.environ.get(name.upper(), "") != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(_env_problem(e) for e in exc.errors())
            raise ConfigError(f"invalid environment: {problems}") from exc


def _env_problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]).upper()
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def jwks_file_problem(path: Path) -> str | None:
    """Why ``JWT_JWKS_FILE`` cannot be used (missing, unreadable, not a JWKS with a signing key), or
    ``None`` when it can: checked at cold start, so a mistake stops start-up instead of answering 401
    to every request."""
    import jwt  # PyJWT loads only when a JWKS file is configured (the handler verifies tokens itself)

    try:
        with path.open(encoding="utf-8") as handle:
            keys = jwt.PyJWKSet.from_dict(json.load(handle)).keys
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror})"
    except (ValueError, jwt.PyJWTError) as exc:
        return f"{path} is not a JWKS ({type(exc).__name__})"
    return None if keys else f"{path} holds no usable signing key"


MIN_HS256_SECRET_BYTES = 32
"""RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output (256 bits)."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(environ: Mapping[str, str]) -> str | None:
    """The log level ``POWERTOOLS_LOG_LEVEL`` (or the legacy ``LOG_LEVEL``) asks for, upper-cased;
    ``TRACE`` is ``DEBUG`` (as Lambda's advanced logging controls map it), ``WARN`` is ``WARNING``;
    ``None`` when unset.

    Raises:
        ConfigError: any other name; the message names the variable and the accepted levels.
    """
    for name in ("POWERTOOLS_LOG_LEVEL", "LOG_LEVEL"):
        value = environ.get(name, "").strip()
        if not value:
            continue
        level = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL"}.get(value.upper(), value.upper())
        if level not in LOG_LEVELS:
            raise ConfigError(f"{name}: {value!r} is not a log level (one of {', '.join(LOG_LEVELS)}, or TRACE)")
        return level
    return None
