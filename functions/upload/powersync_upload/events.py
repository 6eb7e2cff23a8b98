"""The Lambda event before routing: its kind, its size against Lambda's limits, and its body as text.

Pure functions of the API Gateway HTTP API (payload v2) event dict; :mod:`powersync_upload.handler`
answers what they find (400 for another event format, 413 over Lambda's payload limit).
"""

from __future__ import annotations

import base64
import json
from typing import Any

LAMBDA_EVENT_LIMIT = 6_291_456
"""Lambda's synchronous invocation payload limit (6 MB), for the whole event as JSON: headers,
authorizer claims and the body after JSON escaping (or base64, x4/3). API Gateway answers a larger
event itself: the function never sees it. :func:`event_size` applies the same limit here, so ``serve``
and ``invoke`` refuse what AWS would."""

UNSUPPORTED_EVENT = (
    "unsupported event format: this function takes API Gateway HTTP API events (payload format 2.0); "
    "a REST API (payload format 1.0) or another trigger is not supported: deploy template.yaml's HttpApi"
)


def unsupported_event(event: Any) -> bool:
    """Whether ``event`` is not an API Gateway HTTP API payload v2 event (a REST API's payload v1,
    with ``httpMethod`` and ``path``, or anything else): answered 400 with :data:`UNSUPPORTED_EVENT`
    instead of a resolver error that the last resort would turn into a 503 for ever."""
    if not isinstance(event, dict):
        return True
    context = event.get("requestContext")
    return event.get("version") != "2.0" and (
        "httpMethod" in event or not isinstance(context, dict) or "http" not in context
    )


def text_body(event: dict[str, Any]) -> dict[str, Any] | None:
    """The event with a base64 body decoded to text; ``None`` when the body is not UTF-8."""
    if not event.get("isBase64Encoded"):
        return event
    try:
        text = base64.b64decode(event.get("body") or "", validate=False).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return {**event, "body": text, "isBase64Encoded": False}


def body_size(event: dict[str, Any]) -> int:
    """The decoded body's size in bytes (a base64 body counted as 3/4 of its length)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode("utf-8", "surrogatepass"))


def event_size(event: dict[str, Any]) -> int:
    """The event's size in bytes as Lambda counts it against :data:`LAMBDA_EVENT_LIMIT`: the event
    as compact JSON, UTF-8 (the body JSON-escaped, or base64 as it arrived). A body whose escaped
    form cannot reach the limit (6 bytes per byte at most, ``\\u0001``) is not serialized."""
    body = event.get("body") or ""
    rest = {k: v for k, v in event.items() if k != "body"}
    rest_size = len(json.dumps(rest, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8"))
    raw = len(body) if event.get("isBase64Encoded") else len(body.encode("utf-8", "surrogatepass"))
    if rest_size + 6 * raw + 16 < LAMBDA_EVENT_LIMIT:
        return rest_size + raw + len(',"body":""')
    escaped = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return rest_size + len(escaped) + len(',"body":')


def too_large(event: dict[str, Any]) -> str | None:
    """The 413 message when the event is over Lambda's invocation payload limit (API Gateway answers
    such a request itself: the function never sees it), or ``None`` when the function can read it.

    A body over ``MAX_BODY_BYTES`` that the function can read is not refused as a whole: it is
    answered per transaction (:func:`over_cap`, :func:`~powersync_upload.contract.limit_size`), since
    the reference connectors retry a 413 for ever.

    Args:
        event: the API Gateway payload v2 event, body as it arrived (base64 or text).
    """
    size = event_size(event)
    if size > LAMBDA_EVENT_LIMIT:
        return (
            f"request is {size} bytes as a Lambda event (headers plus the body after JSON escaping or base64), "
            f"over Lambda's {LAMBDA_EVENT_LIMIT}-byte invocation payload limit: send smaller batches "
            "(fewer transactions per request)"
        )
    return None


def over_cap(event: dict[str, Any], max_body_bytes: int) -> bool:
    """Whether the decoded body is over ``MAX_BODY_BYTES`` (then answered per transaction)."""
    return body_size(event) > max_body_bytes
