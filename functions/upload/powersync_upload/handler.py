"""The Lambda entry: API Gateway HTTP API (payload v2) events in, HTTP responses out.

This is the only module that knows HTTP. It checks the body size and the caller's identity, lets
the Powertools resolver validate the body against the contract's pydantic models, hands the
transactions to the engine, and turns the :class:`~powersync_upload.engine.Outcome` into a status:
200 after COMMIT, 503 with ``Retry-After`` when the client must send again, 400/401/413 for a broken
envelope, token or size (docs/contract.md, section 1).
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from . import auth, observability
from .config import UploadConfig, load_upload_config
from .contract import (
    REFERENCE_MAX_TRANSACTIONS,
    ErrorMessage,
    NotAttemptedResult,
    UnavailableResponse,
    UploadRequest,
    UploadRequestA,
    UploadResponse,
    entry_sizes,
    limit_size,
    to_upload,
)
from .database import Database, resolve_url
from .engine import Caller, Deadline, Outcome, apply_upload, unavailable
from .errors import AuthReason, RetryableError
from .events import UNSUPPORTED_EVENT, body_size, over_cap, text_body, too_large, unsupported_event
from .settings import Settings, log_level

logger = Logger(service="powersync-upload", level=log_level(os.environ))
copy_config_to_registered_loggers(source_logger=logger, include={"powersync_upload"})

UPLOAD_PATH = "/api/data"
LAMBDA_MARGIN_S = 2.0
"""Seconds kept back from the Lambda timeout to answer before the runtime kills the invocation."""
MAX_REQUEST_AGE_S = 900.0
"""A ``requestContext.timeEpoch`` older than Lambda's longest timeout (or in the future by more
than :data:`CLOCK_SKEW_S`) is not a live request's (a replayed event file): the deadline then
counts from the handler's start."""
CLOCK_SKEW_S = 5.0
RETRY_MESSAGE = "temporary failure; send the transactions again"
"""The 503 message when no result names the failure (every 503 body has a ``message``: the reference
connectors print it)."""


def _int_token(text: str) -> int | Decimal:
    # Python refuses to turn more than 4300 digits into an int; keep such a number as a Decimal so the
    # value alone is rejected (out_of_range) instead of the whole request.
    return int(text) if len(text) <= 4000 else Decimal(text)


MAX_PARSE_DEPTH = 500
"""Nesting level at which :func:`shallow` cuts a value too deep for the parser (its recursion limit is
about 1000 levels, envelope included)."""
_JSON_SPECIALS = re.compile(r'[\\"\[\]{}]')


def shallow(text: str, limit: int = MAX_PARSE_DEPTH) -> str:
    """``text`` with every array or object that opens at nesting level ``limit`` replaced by the token
    ``NaN``, which :func:`lenient_json` accepts and the conversion rejects per value (``INVALID_DATA``):
    a value nested too deep fails its own operation, never the whole request (docs/contract.md section 2).
    Brackets inside strings are text; a malformed body stays malformed. One linear pass, no recursion."""
    parts: list[str] = []
    depth, cut, last, in_string, escaped_at = 0, -1, 0, False, -1
    for match in _JSON_SPECIALS.finditer(text):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            cut = at if depth == limit and cut < 0 else cut
        elif char in "]}":
            if depth == limit and cut >= 0:
                parts += [text[last:cut], "NaN"]
                last, cut = match.end(), -1
            depth -= 1
    parts.append(text[last:])
    return "".join(parts)


def lenient_json(text: str) -> Any:
    """Parse a body as docs/contract.md section 2 asks: non-integers as exact ``Decimal``; ``NaN``, ``Infinity``,
    huge integers and numbers beyond float range as tokens, so each is rejected per value later, never
    as a 400.

    Raises:
        json.JSONDecodeError: not JSON, or nested too deeply to parse.
    """
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=float)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer of more than 4300 digits: parse again, keeping such numbers whole
        pass
    except RecursionError:  # a value nested too deep: cut it, so it fails only its own operation
        text = shallow(text)
    try:
        return json.loads(text, parse_float=Decimal, parse_int=_int_token, parse_constant=float)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as exc:
        raise json.JSONDecodeError("not parseable", text, 0) from exc


@dataclass
class Runtime:
    """What a container keeps between invocations: settings, configuration and the database."""

    settings: Settings
    config: UploadConfig
    _db: Database | None = field(default=None, repr=False)

    @property
    def db(self) -> Database:
        """The database, created on first use (no driver import or connection before a request needs it)."""
        if self._db is None:
            self._db = Database.from_url(resolve_url(self.settings), self.settings)
        return self._db

    def reset_database(self) -> Database | None:
        """Forget the database object and return it (closing it is the caller's): the next request
        makes a new one. Used after a SnapStart restore (:mod:`powersync_upload.snapstart`)."""
        db, self._db = self._db, None
        return db


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The container's runtime, built from the environment on first call (cold start).

    Raises:
        ConfigError: the environment or the configuration file is invalid.
    """
    global _runtime
    if _runtime is None:
        settings = Settings.from_env()
        _runtime = Runtime(settings, load_upload_config(settings.upload_config))
    return _runtime


def current_runtime() -> Runtime | None:
    """The container's runtime if it was built, without building it."""
    return _runtime


def set_runtime(value: Runtime | None) -> None:
    """Replace the container's runtime (local commands and tests)."""
    global _runtime
    _runtime = value


app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=lenient_json)


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


_SHAPE_KEYS = {"UploadRequestA": "transactions", "UploadRequestB": "batch"}
NEITHER_SHAPE = (
    'the body must be a JSON object with "transactions" (the PowerSync reference write API) '
    'or "batch" (a list of CrudEntry.toJSON() objects)'
)


def envelope_message(errors: list[dict[str, Any]], body: Any) -> str:
    """A 400 message naming the offending paths and pydantic's reason, never the submitted values."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return "request body is not valid JSON"
    keys = set(body) if isinstance(body, dict) else set()
    if {"transactions", "batch"} <= keys:
        return 'send either "transactions" or "batch", not both'
    shape = next((model for model, key in _SHAPE_KEYS.items() if key in keys), None)
    relevant = [e for e in errors if shape in e.get("loc", ())] if shape else []
    if not relevant:
        return NEITHER_SHAPE
    problems = []
    for error in relevant[:5]:
        path = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", shape))
        problems.append(f"{path}: {error.get('msg', error.get('type', 'invalid'))}")
    more = f" (and {len(relevant) - 5} more)" if len(relevant) > 5 else ""
    return "malformed request: " + "; ".join(problems) + more


@app.exception_handler(RequestValidationError)
def _malformed(exc: RequestValidationError) -> Response[Any]:
    try:
        body = app.current_event.json_body
    except Exception:  # noqa: BLE001 - the body is not JSON: the errors say so
        body = None
    message = envelope_message(list(exc.errors()), body)
    return _json_response(400, ErrorMessage(message=message).model_dump())


@app.not_found
def _not_found(exc: Exception) -> Response[Any]:
    return _json_response(404, ErrorMessage(message="not found: POST /api/data or GET /health").model_dump())


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness: the function is deployed and its configuration loaded (no database round trip)."""
    return {"status": "ok"}


@app.post(
    UPLOAD_PATH,
    responses={
        200: {"description": "one result per transaction", "content": {"application/json": {"model": UploadResponse}}},
        400: {"description": "malformed envelope", "content": {"application/json": {"model": ErrorMessage}}},
        401: {"description": "missing or invalid token", "content": {"application/json": {"model": ErrorMessage}}},
        413: {
            "description": "event over Lambda's 6 MB invocation limit (the function cannot read it)",
            "content": {"application/json": {"model": ErrorMessage}},
        },
        503: {
            "description": "temporary failure; send again after Retry-After",
            "content": {"application/json": {"model": UnavailableResponse}},
        },
    },
)
def upload(body: Annotated[UploadRequest, Body()]) -> Response[Any]:
    """Apply a PowerSync upload: shape A (reference write API) or shape B (``CrudEntry.toJSON()`` list)."""
    rt: Runtime = app.context["runtime"]
    ceiling = max(REFERENCE_MAX_TRANSACTIONS, rt.config.max_transactions)
    if isinstance(body, UploadRequestA) and len(body.transactions) > ceiling:
        message = f"transactions: at most {ceiling} per request (the reference write API's limit)"
        return _json_response(400, ErrorMessage(message=message).model_dump())
    parsed = to_upload(body, rt.config.max_transactions)
    if app.context.get("over_cap"):  # a body over MAX_BODY_BYTES: answered per transaction (TOO_LARGE)
        parsed = limit_size(parsed, entry_sizes(app.current_event.json_body), rt.settings.max_body_bytes)
    # Powertools caches the parsed JSON on the event; the operations now hold what is needed of it.
    # Free it before the engine runs: at the body cap it is the largest object of the request.
    vars(app.current_event).pop("json_body", None)
    if not parsed.transactions:
        return _json_response(200, UploadResponse(results=[]).to_json())
    started = time.perf_counter()
    try:
        db = rt.db
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable secret: keep the writes queued
        logger.error("database unavailable", extra={"error_type": type(exc).__name__})
        outcome = unavailable(parsed, RetryableError("database_unavailable", retry_after_ms=5000))
    else:
        outcome = apply_upload(
            parsed, app.context["caller"], rt.config, db, app.context["deadline"], fast_path=rt.settings.fast_path
        )
    elapsed_ms = (time.perf_counter() - started) * 1000
    _log_outcome(parsed.shape, outcome)
    operations = sum(len(t.operations) for t in parsed.transactions)
    observability.record(outcome, operations, elapsed_ms, rt.config.errors_table is not None)
    results = [*outcome.results, *(NotAttemptedResult() for _ in range(parsed.not_attempted))]
    if outcome.retry_after_ms is not None:
        retry_after = str(max(1, math.ceil(outcome.retry_after_ms / 1000)))
        message = next((r.message for r in results if r.status == "retryable_error"), RETRY_MESSAGE)
        unavailable_body = UnavailableResponse(message=message, results=results).to_json()
        return _json_response(HTTPStatus.SERVICE_UNAVAILABLE, unavailable_body, {"Retry-After": retry_after})
    return _json_response(200, UploadResponse(results=results).to_json())


_WARNED_SUBJECT: set[str] = set()
"""Owner columns already warned about (:attr:`AuthReason.SUBJECT_NOT_STORABLE`): once per container."""


def _log_outcome(shape: str, outcome: Outcome) -> None:
    for index, _transaction, error, op_index in outcome.fatal:
        if error.reason is AuthReason.SUBJECT_NOT_STORABLE and f"{error.table}.{error.column}" not in _WARNED_SUBJECT:
            _WARNED_SUBJECT.add(f"{error.table}.{error.column}")
            logger.warning(
                "the owner column cannot hold the token's subject: every write to this table is refused",
                extra={"table": error.table, "column": error.column},
            )
        logger.info(
            "transaction rejected",
            extra={
                "transaction_index": index,
                "operation_index": op_index,
                "error_code": error.code.value,
                **error.details(),
            },
        )
    logger.info(
        observability.outcome_message(outcome),
        extra={
            "shape": shape,
            "transactions": len(outcome.results),
            "committed": outcome.committed,
            "rejected": len(outcome.fatal),
            "recorded_errors": outcome.recorded,
            "status": 503 if outcome.retry_after_ms is not None else 200,
        },
    )


def _plain_response(status: int, message: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps({"message": message}),
        "isBase64Encoded": False,
    }


def _request_age_s(event: dict[str, Any]) -> float:
    """Seconds since API Gateway received the request (``requestContext.timeEpoch``, ms), so the
    deadline includes a cold start; 0 when the timestamp is missing or not plausible."""
    epoch_ms = (event.get("requestContext") or {}).get("timeEpoch")
    if not isinstance(epoch_ms, int | float) or isinstance(epoch_ms, bool):
        return 0.0
    age = time.time() - epoch_ms / 1000
    if age < -CLOCK_SKEW_S or age > MAX_REQUEST_AGE_S:
        return 0.0
    return max(0.0, age)


def request_deadline(settings: Settings, event: dict[str, Any], context: Any) -> Deadline:
    """When this request must have answered: ``DEADLINE_S`` after API Gateway received it (its
    ``timeEpoch``: a cold start in a VPC counts), and :data:`LAMBDA_MARGIN_S` before the Lambda
    timeout, whichever comes first; at least 0.5 s, so a late request still answers a clean 503."""
    seconds = settings.deadline_s - _request_age_s(event)
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining_ms):
        seconds = min(seconds, remaining_ms() / 1000 - LAMBDA_MARGIN_S)
    return Deadline.after(max(0.5, seconds))


def _is_upload(event: dict[str, Any]) -> bool:
    path = event.get("rawPath") or ""
    return path.rstrip("/").endswith(UPLOAD_PATH)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway HTTP API (payload format 2.0) entry point.

    The cyclic garbage collector is paused while a request runs (and what the imports built is frozen
    out of its reach once): a 10,000-operation body allocates hundreds of thousands of objects, and
    the collector's passes over them cost about 40% of the request's time, while almost everything a
    request allocates is freed by reference counting. It runs again, and collects, between requests.
    """
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True
    paused = gc.isenabled()
    gc.disable()
    try:
        return _handle(event, context)
    except Exception as exc:  # noqa: BLE001 - last resort: a bug of ours must not become a 500 that the SDK
        # treats like any failure but a client cannot tell from a rejection; 503 keeps the upload queued
        logger.error(
            "unexpected error in the handler; answering 503",
            extra={"error_type": type(exc).__name__, "stack": "".join(traceback.format_tb(exc.__traceback__))},
        )
        return _plain_response(503, RETRY_MESSAGE, {"Retry-After": "5"})
    finally:
        if paused:
            gc.enable()
        observability.flush()


_frozen = False


def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rt = runtime()
    if unsupported_event(event):
        logger.error("unsupported event format", extra={"event_version": str(event.get("version", "1.0"))[:10]})
        return _plain_response(400, UNSUPPORTED_EVENT)
    app.append_context(runtime=rt, deadline=request_deadline(rt.settings, event, context))
    if _is_upload(event):
        app.append_context(over_cap=over_cap(event, rt.settings.max_body_bytes))
        oversize = too_large(event)
        if oversize is not None:
            logger.info("request too large", extra={"body_bytes": body_size(event)})
            return _plain_response(413, oversize)
        decoded = text_body(event)
        if decoded is None:
            return _plain_response(400, "request body is not UTF-8 JSON (send it uncompressed)")
        # The body is JSON whatever Content-Type says: fetch() with a string body sends text/plain.
        headers = {k.lower(): v for k, v in (decoded.get("headers") or {}).items()}
        event = {**decoded, "headers": {**headers, "content-type": "application/json"}}
        try:
            if rt.settings.auth_mode == "handler":
                claims = auth.verify_bearer(headers.get("authorization"), rt.settings)
            else:
                claims = auth.claims_from_authorizer(event)
            app.append_context(caller=Caller(auth.user_id(claims)))
        except auth.Unauthorized as exc:
            logger.info("unauthorized", extra={"reason": exc.reason})
            return _plain_response(401, str(exc), {"WWW-Authenticate": 'Bearer realm="powersync-upload"'})
        except auth.KeysUnavailable as exc:
            logger.error("token keys unavailable; answering 503", extra={"reason": exc.reason})
            return _plain_response(503, "token verification keys unreachable; retry", {"Retry-After": "5"})
    return app.resolve(event, context)
