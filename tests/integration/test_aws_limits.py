"""What API Gateway and Lambda enforce, enforced the same way by the handler: the 6 MB invocation
payload limit on the whole event (so ``serve`` refuses what AWS would), ``MAX_BODY_BYTES`` on the
body, and a deadline counted from when API Gateway received the request (``timeEpoch``), so a cold
start is inside it. Real SQLite database, real handler, events as API Gateway builds them."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.events import LAMBDA_EVENT_LIMIT, event_size
from powersync_upload.handler import Runtime, lambda_handler, set_runtime
from powersync_upload.local import LocalContext, schema_scripts
from tests.support import ROOT, authorization, event, install_runtime, reset_database, stored_count, stored_row

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000001"


@pytest.fixture
def sqlite_rt(tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    url = reset_database("sqlite", schema_scripts("sqlite"), tmp_path)
    rt = install_runtime(url, CONFIG, max_body_bytes=10 * 1024 * 1024)
    yield url, rt
    rt.db.discard()
    set_runtime(None)


def _invoke(payload: dict[str, Any]) -> tuple[int, Any]:
    out = lambda_handler(payload, LocalContext())  # type: ignore[arg-type]
    return int(out["statusCode"]), json.loads(out["body"])


def _quote_heavy_event(target_event_bytes: int) -> dict[str, Any]:
    """A valid upload whose event, as compact JSON, is exactly ``target_event_bytes``: one list whose
    ``name`` is padded with double quotes (each becomes two bytes, ``\\"``, inside the event)."""
    template = {"batch": [{"op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "data": {"name": "PAD"}}]}
    base = event(json.dumps(template), authorization("U1"))
    empty = _compact_size({**base, "body": json.dumps(template).replace("PAD", "")})
    room = target_event_bytes - empty
    quotes, odd = divmod(room, 4)  # '"' is '\\"' in the body and '\\\\\\"' in the event: 4 bytes
    padding = '"' * quotes + "x" * odd
    body = json.dumps(template).replace("PAD", json.dumps(padding)[1:-1])
    return {**base, "body": body}


def _compact_size(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def test_an_event_exactly_at_lambdas_limit_reaches_the_upload(sqlite_rt: tuple[str, Runtime], tmp_path: Path) -> None:
    # Given an event file of exactly 6,291,456 bytes (a quote-heavy body of about 3 MB)
    path = tmp_path / "at-limit.json"
    path.write_text(json.dumps(_quote_heavy_event(LAMBDA_EVENT_LIMIT), ensure_ascii=False, separators=(",", ":")))
    assert path.stat().st_size == LAMBDA_EVENT_LIMIT
    loaded = json.loads(path.read_text())
    assert event_size(loaded) == LAMBDA_EVENT_LIMIT
    # When it is invoked
    status, body = _invoke(loaded)
    # Then it is not refused for its size: the upload is applied (or rejected per value), not 413
    assert status == 200, body
    assert len(body["results"]) == 1


def test_one_byte_over_lambdas_limit_is_413_naming_that_limit(sqlite_rt: tuple[str, Runtime]) -> None:
    url, _ = sqlite_rt
    # Given the same upload one byte larger as an event, its body well under MAX_BODY_BYTES (10 MiB here)
    over = _quote_heavy_event(LAMBDA_EVENT_LIMIT + 1)
    assert len(over["body"].encode()) < 4 * 1024 * 1024
    # When it is invoked
    status, body = _invoke(over)
    # Then it is 413, the message names Lambda's limit, and nothing was written
    assert status == 413
    assert "6291456-byte invocation payload limit" in body["message"]
    assert "send smaller batches" in body["message"]
    assert stored_count(url, "lists") == 0


def test_a_base64_body_counts_as_base64_in_the_event(sqlite_rt: tuple[str, Runtime]) -> None:
    # Given a 4.9 MB upload that arrives base64-encoded (about 6.5 MB inside the event)
    todos = [
        {"op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "data": {"name": "n" * 4_900_000}},
    ]
    text = json.dumps({"batch": todos})
    payload = {
        **event(text, authorization("U1")),
        "body": base64.b64encode(text.encode()).decode(),
        "isBase64Encoded": True,
    }
    # When it is invoked
    status, body = _invoke(payload)
    # Then Lambda's limit applies to the encoded size: 413
    assert status == 413
    assert "invocation payload limit" in body["message"]


def _list_put(number: int, name: str) -> dict[str, Any]:
    return {
        "op": "PUT",
        "table": "lists",
        "id": f"a0000000-0000-4000-8000-00000000000{number}",
        "op_data": {"name": name},
    }


def test_a_body_over_max_body_bytes_is_answered_per_transaction(sqlite_rt: tuple[str, Runtime]) -> None:
    url, rt = sqlite_rt
    # Given MAX_BODY_BYTES of 4096 and a shape A body of three transactions, the middle one 5000 bytes
    rt.settings = rt.settings.model_copy(update={"max_body_bytes": 4096})
    crud = [_list_put(1, "first"), _list_put(2, "x" * 4900), _list_put(3, "third")]
    text = json.dumps({"transactions": [{"crud": [c]} for c in crud]})
    # When it is invoked
    status, body = _invoke(event(text, authorization("U1")))
    # Then it is a 200 (no connector blocks on it): the large one is fatal TOO_LARGE, the others applied
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["success", "fatal_error", "success"]
    assert body["results"][1]["failed_operation"]["error_code"] == "TOO_LARGE"
    assert stored_count(url, "lists") == 2


def test_shape_a_transactions_past_max_body_bytes_are_not_attempted(sqlite_rt: tuple[str, Runtime]) -> None:
    url, rt = sqlite_rt
    # Given MAX_BODY_BYTES of 4096 and three transactions of about 1700 bytes each (15 lists each)
    rt.settings = rt.settings.model_copy(update={"max_body_bytes": 4096})
    numbers = [[t * 100 + n for n in range(15)] for t in (1, 2, 3)]
    transactions = [{"crud": [_list_put(n, f"list {n:016d}") for n in tx]} for tx in numbers]
    text = json.dumps({"transactions": transactions})
    # When it is invoked
    status, body = _invoke(event(text, authorization("U1")))
    # Then the first two (within the cap) are applied and the third is not_attempted (sent again later)
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["success", "success", "not_attempted"]
    assert stored_count(url, "lists") == 30


def test_a_request_whose_deadline_passed_during_a_cold_start_is_503_and_writes_nothing(
    sqlite_rt: tuple[str, Runtime],
) -> None:
    url, rt = sqlite_rt
    # Given a 5 s deadline and a request API Gateway received 4.9 s ago (a slow cold start)
    rt.settings = rt.settings.model_copy(update={"deadline_s": 5.0})
    text = json.dumps({"batch": [{"op": "PUT", "type": "lists", "id": LIST, "data": {"name": "late"}}]})
    late = event(text, authorization("U1"))
    late["requestContext"]["timeEpoch"] = int((time.time() - 4.9) * 1000)
    # When it reaches the handler
    started = time.monotonic()
    status, body = _invoke(late)
    # Then it answers retry at once (the API would stop waiting soon) and writes nothing
    assert status == 503
    assert body["results"][0]["status"] == "retryable_error"
    assert time.monotonic() - started < 2
    assert stored_count(url, "lists") == 0


def test_a_replayed_event_file_with_an_old_time_epoch_counts_from_the_handlers_start(
    sqlite_rt: tuple[str, Runtime],
) -> None:
    url, _ = sqlite_rt
    # Given an event file saved days ago (its timeEpoch is not a live request's)
    text = json.dumps({"batch": [{"op": "PUT", "type": "lists", "id": LIST, "data": {"name": "replayed"}}]})
    replayed = event(text, authorization("U1"))
    replayed["requestContext"]["timeEpoch"] = int((time.time() - 3 * 86400) * 1000)
    # When it is invoked
    status, _ = _invoke(replayed)
    # Then it is applied
    assert status == 200
    assert stored_row(url, "lists", LIST)["name"] == "replayed"  # type: ignore[index]
