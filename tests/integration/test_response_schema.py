"""Every kind of answer the handler gives validates against the published ``openapi.json``: results
``success``, ``fatal_error``, ``retryable_error`` and ``not_attempted``, and the statuses 200, 400,
401, 413 and 503, each against the schema the document declares for that status (JSON Schema 2020-12,
as OpenAPI 3.1 embeds it). The fields the reference write API's OpenAPI requires are required there
too (``status``; ``requires_client_handling`` and ``failed_operation`` in a fatal result), so a
connector generated from either document reads our answers.

Real handler, real SQLite database; the 503 comes from a database that refuses connections.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from powersync_upload.events import LAMBDA_EVENT_LIMIT
from powersync_upload.handler import lambda_handler, runtime, set_runtime
from powersync_upload.local import LocalContext
from tests.support import ROOT, authorization, demo_sqlite, event, install_runtime

DOCUMENT = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
RESPONSES = DOCUMENT["paths"]["/api/data"]["post"]["responses"]
CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000001"


def _validator(status: int) -> Any:
    """The validator of the body schema the document declares for ``status``."""
    schema = RESPONSES[str(status)]["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def _send(body: Any, user: str | None = "U1", raw: str | None = None) -> tuple[int, Any]:
    text = raw if raw is not None else json.dumps(body)
    out = lambda_handler(event(text, authorization(user)), LocalContext())  # type: ignore[arg-type]
    return int(out["statusCode"]), json.loads(out["body"])


def _put(name: Any, number: int = 1) -> dict[str, Any]:
    return {"op": "PUT", "table": "lists", "id": f"a0000000-0000-4000-8000-{number:012d}", "op_data": {"name": name}}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with demo_sqlite(tmp_path) as (url, _):
        yield url


def _assert_valid(status: int, body: Any) -> None:
    errors = [error.message for error in _validator(status).iter_errors(body)]
    assert not errors, f"{status} body {body} does not match openapi.json: {errors}"


def test_success_fatal_and_not_attempted_results_match_the_published_schema(sqlite_url: str) -> None:
    # Given max_transactions 2 and four transactions: a valid list, one without its required name, and
    # two more (past the cap)
    runtime().config = runtime().config.model_copy(update={"max_transactions": 2})
    body = {"transactions": [{"crud": [_put("ok", 1)]}, {"crud": [_put(None, 2)]}, {"crud": [_put("x", 3)]}]}
    body["transactions"].append({"crud": [{**_put("y", 4), "id": 3479}]})
    # When it is sent
    status, answer = _send(body)
    # Then it is a 200 with success, fatal_error, not_attempted, not_attempted, valid against the document
    assert status == 200
    assert [r["status"] for r in answer["results"]] == ["success", "fatal_error", "not_attempted", "not_attempted"]
    assert answer["results"][1]["requires_client_handling"] is False
    _assert_valid(200, answer)


def test_a_refused_entry_and_a_too_large_transaction_match_the_published_schema(sqlite_url: str) -> None:
    # Given an entry whose id is a number, then (MAX_BODY_BYTES 4096) a transaction of 5000 bytes
    runtime().settings = runtime().settings.model_copy(update={"max_body_bytes": 4096})
    body = {"transactions": [{"crud": [{**_put("n"), "id": 3479}]}, {"crud": [_put("z" * 5000, 2)]}]}
    # When sent
    status, answer = _send(body)
    # Then both are fatal (INVALID_DATA, TOO_LARGE) in a 200 that matches the document
    assert status == 200
    codes = [r["failed_operation"]["error_code"] for r in answer["results"]]
    assert codes == ["INVALID_DATA", "TOO_LARGE"]
    _assert_valid(200, answer)


def test_a_503_carries_a_message_and_retryable_then_not_attempted_results(tmp_path: Path) -> None:
    # Given a database that refuses connections (nothing listens on port 1)
    rt = install_runtime("postgresql://postgres@127.0.0.1:1/nowhere", CONFIG)
    try:
        # When two transactions are sent
        status, answer = _send({"transactions": [{"crud": [_put("a", 1)]}, {"crud": [_put("b", 2)]}]})
    finally:
        rt.db.discard()
        set_runtime(None)
    # Then it is a 503 whose body says why (the reference connectors print `message`) and holds one
    # result per transaction (retryable_error, not_attempted), valid against the document
    assert status == 503
    assert answer["message"]
    assert [r["status"] for r in answer["results"]] == ["retryable_error", "not_attempted"]
    _assert_valid(503, answer)


@pytest.mark.parametrize(
    ("name", "status"),
    [("not JSON", 400), ("neither shape", 400), ("no token", 401), ("over Lambda's limit", 413)],
)
def test_error_statuses_match_the_published_schema(sqlite_url: str, name: str, status: int) -> None:
    # Given a request that the handler refuses as a whole
    requests: dict[str, tuple[Any, str | None, str | None]] = {
        "not JSON": (None, "U1", "{not json"),
        "neither shape": ({"rows": []}, "U1", None),
        "no token": ({"transactions": [{"crud": [_put("a")]}]}, None, None),
        "over Lambda's limit": ({"transactions": [{"crud": [_put("x" * LAMBDA_EVENT_LIMIT)]}]}, "U1", None),
    }
    body, user, raw = requests[name]
    # When it is sent
    got, answer = _send(body, user, raw)
    # Then the status is the expected one and its body matches the document's schema for it
    assert got == status, answer
    assert answer["message"]
    _assert_valid(status, answer)


def test_a_shape_a_request_over_the_reference_limit_of_50_transactions_is_a_400(sqlite_url: str) -> None:
    # Given the default max_transactions (50) and a request of 51 transactions (over the reference
    # write API's maxItems: shared case 023)
    body = {"transactions": [{"crud": [_put("x", n)]} for n in range(1, 52)]}

    # When it is sent
    status, answer = _send(body)

    # Then it is a malformed envelope (400, nothing written), valid against the document
    assert status == 400
    assert "at most 50" in answer["message"]
    _assert_valid(400, answer)


def test_a_cap_below_50_answers_the_transactions_past_it_not_attempted(sqlite_url: str) -> None:
    # Given max_transactions 10 (a cap below the connector's batch size) and 50 transactions
    runtime().config = runtime().config.model_copy(update={"max_transactions": 10})
    body = {"transactions": [{"crud": [_put(f"list {n}", n)]} for n in range(1, 51)]}

    # When they are sent
    status, answer = _send(body)

    # Then the first 10 are applied and the other 40 are not attempted (sent again), never a 400
    assert status == 200
    assert [r["status"] for r in answer["results"]] == ["success"] * 10 + ["not_attempted"] * 40
