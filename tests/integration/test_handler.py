"""The Lambda handler against real databases: SQLite, PostgreSQL (and SQL Server when MSSQL_URL is set).

Each test loads the errors table and the demo schema (``db/migrations/<dialect>``,
``db/demo/<dialect>``) and the shipped ``upload.yaml`` into a fresh
database and talks to the handler with API Gateway HTTP API events, as API Gateway would.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from powersync_upload.handler import Runtime, lambda_handler, set_runtime
from powersync_upload.local import LocalContext, schema_scripts
from tests.support import (
    ROOT,
    SECRET,
    USERS,
    RowReader,
    available_dialects,
    call,
    event,
    install_runtime,
    reset_database,
    stored_count,
    stored_row,
    token,
)

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000001"
OTHER_LIST = "a0000000-0000-4000-8000-000000000002"
TODO = "b0000000-0000-4000-8000-000000000001"
SAMPLES = ROOT.parent / "shared" / "samples" / "sdk-crud-entries.jsonl"


@pytest.fixture(params=available_dialects())
def demo_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, Runtime]]:
    dialect = request.param
    url = reset_database(dialect, schema_scripts(dialect), tmp_path)
    rt = install_runtime(url, CONFIG)
    yield dialect, url, rt
    rt.db.discard()
    set_runtime(None)


def _put_list(name: str = "Groceries", list_id: str = LIST) -> dict[str, Any]:
    return {"op_id": 1, "op": "PUT", "type": "lists", "id": list_id, "tx_id": 1, "data": {"name": name}}


def test_sdk_batch_is_applied(demo_db: tuple[str, str, Runtime]) -> None:
    # Given a list owned by U1 and the real SDK's CrudEntry output for the todos table
    _, url, _ = demo_db
    assert call({"batch": [_put_list()]}).status == 200
    batch = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    batch = [e for e in batch if e["type"] == "todos"]
    for entry in batch:
        if entry["op"] == "PUT":
            entry["data"]["list_id"] = LIST
    # When it is uploaded in shape B
    response = call({"batch": batch})
    # Then every transaction succeeds, the deleted row is gone and the other one is there
    assert response.status == 200
    assert [r["status"] for r in response.body["results"]] == ["success"] * 4
    assert stored_row(url, "todos", "11111111-1111-4111-8111-111111111111") is None
    kept = stored_row(url, "todos", "3a92b379-a4df-4378-baea-85a5fef36ddb")
    assert kept is not None
    assert kept["description"] == "only description, nulls omitted"
    assert kept["owner_id"] == USERS["U1"]


def test_patch_of_missing_row_warns_and_creates_nothing(demo_db: tuple[str, str, Runtime]) -> None:
    _, url, _ = demo_db
    # When a PATCH names a row that does not exist
    response = call({"batch": [{"op": "PATCH", "type": "lists", "id": LIST, "tx_id": 1, "data": {"name": "x"}}]})
    # Then it succeeds with a ROW_NOT_FOUND warning and no row appears
    assert response.status == 200
    assert response.body["results"] == [
        {"status": "success", "warnings": [{"operation_index": 0, "code": "ROW_NOT_FOUND"}]}
    ]
    assert stored_row(url, "lists", LIST) is None


def test_shape_a_stop_leaves_the_rest_not_attempted(demo_db: tuple[str, str, Runtime]) -> None:
    # Given on_fatal_error: stop
    _, url, rt = demo_db
    rt.config = rt.config.model_copy(update={"on_fatal_error": "stop"})
    body = {
        "transactions": [
            {"crud": [{"op": "PUT", "table": "lists", "id": LIST, "op_data": {}}]},
            {"crud": [{"op": "PUT", "table": "lists", "id": LIST, "op_data": {"name": "ok"}}]},
        ]
    }
    # When the first transaction is fatal
    response = call(body)
    # Then the second is not attempted and nothing is written
    assert response.status == 200
    assert [r["status"] for r in response.body["results"]] == ["fatal_error", "not_attempted"]
    assert stored_row(url, "lists", LIST) is None


def test_shape_a_stop_after_a_value_that_cannot_be_converted_keeps_the_transactions_before_it(
    demo_db: tuple[str, str, Runtime],
) -> None:
    # Given on_fatal_error: stop, and three transactions of which the second has a value no column takes
    _, url, rt = demo_db
    rt.config = rt.config.model_copy(update={"on_fatal_error": "stop"})
    second, third = "a0000000-0000-4000-8000-000000000002", "a0000000-0000-4000-8000-000000000003"
    body = {
        "transactions": [
            {"crud": [{"op": "PUT", "table": "lists", "id": LIST, "op_data": {"name": "first"}}]},
            {"crud": [{"op": "PUT", "table": "lists", "id": second, "op_data": {"name": "x" * 101}}]},
            {"crud": [{"op": "PUT", "table": "lists", "id": third, "op_data": {"name": "third"}}]},
        ]
    }
    # When they are sent together (the second fails before any SQL runs)
    response = call(body)
    # Then the first is committed, the second is fatal and the third not attempted
    assert response.status == 200
    assert [r["status"] for r in response.body["results"]] == ["success", "fatal_error", "not_attempted"]
    assert stored_row(url, "lists", LIST) is not None
    assert stored_row(url, "lists", third) is None


def test_shape_b_continues_after_fatal_even_with_stop(demo_db: tuple[str, str, Runtime]) -> None:
    _, _, rt = demo_db
    rt.config = rt.config.model_copy(update={"on_fatal_error": "stop"})
    bad = {"op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "data": {}}
    good = {**_put_list(list_id="a0000000-0000-4000-8000-000000000002"), "tx_id": 2}
    response = call({"batch": [bad, good]})
    assert [r["status"] for r in response.body["results"]] == ["fatal_error", "success"]


def test_fatal_result_never_echoes_the_submitted_value(demo_db: tuple[str, str, Runtime]) -> None:
    # Given a list whose name is unique per owner and looks like a secret
    secret = "s3cr3t-value-that-must-not-leak"
    assert call({"batch": [_put_list(name=secret)]}).status == 200
    # When the same unique (owner, name) is inserted under another id
    response = call({"batch": [_put_list(name=secret, list_id="a0000000-0000-4000-8000-000000000009")]})
    # Then the result is a UNIQUE_VIOLATION that names no value
    result = response.body["results"][0]
    assert result["failed_operation"]["error_code"] == "UNIQUE_VIOLATION"
    assert secret not in json.dumps(response.body)


def test_a_transaction_over_the_body_cap_is_too_large_for_itself_only(demo_db: tuple[str, str, Runtime]) -> None:
    # Given MAX_BODY_BYTES of 2048 and one transaction of over 3000 bytes (one per request, as the
    # reference connectors send): a 413 would be retried by them for ever
    _, url, rt = demo_db
    rt.settings = rt.settings.model_copy(update={"max_body_bytes": 2048})
    body = {"batch": [_put_list(name="x" * 3000)]}
    # When it is sent
    response = call(body)
    # Then it is answered 200, fatal_error TOO_LARGE naming MAX_BODY_BYTES, and nothing is written
    assert response.status == 200
    failed = response.body["results"][0]["failed_operation"]
    assert (failed["error_code"], failed["details"]) == ("TOO_LARGE", {"limit": "MAX_BODY_BYTES"})
    assert stored_row(url, "lists", LIST) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        f"Bearer {token('U1', secret='another-secret-another-secret-0123')}",
        f"Bearer {jwt.encode({'sub': 'x', 'exp': 9999999999}, key='', algorithm='none')}",
        f"Bearer {jwt.encode({'exp': 9999999999}, SECRET, algorithm='HS256')}",
        f"Bearer {token('U1', expired=True)}",
    ],
    ids=["missing", "basic", "garbage", "wrong-secret", "alg-none", "no-sub", "expired"],
)
def test_bad_tokens_are_401_and_write_nothing(demo_db: tuple[str, str, Runtime], header: str | None) -> None:
    _, url, _ = demo_db
    out = lambda_handler(event(json.dumps({"batch": [_put_list()]}), header), LocalContext())  # type: ignore[arg-type]
    assert out["statusCode"] == 401
    assert "message" in json.loads(out["body"])
    assert stored_row(url, "lists", LIST) is None


def test_health(demo_db: tuple[str, str, Runtime]) -> None:
    out = lambda_handler(event("", None, path="/health", method="GET"), LocalContext())  # type: ignore[arg-type]
    assert out["statusCode"] == 200
    assert json.loads(out["body"]) == {"status": "ok"}


def test_make_demo_prints_results_and_rows() -> None:
    # When the README's main command runs
    out = subprocess.run(
        [sys.executable, "-m", "powersync_upload.local", "demo"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "functions" / "upload"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Then it shows a success, the NOT NULL rejection, the malformed body and the rows
    assert '"status": "success"' in out.stdout
    assert "NOT_NULL_VIOLATION" in out.stdout
    assert "HTTP 400" in out.stdout
    assert "== rows in todos" in out.stdout


def test_body_is_json_whatever_the_content_type(demo_db: tuple[str, str, Runtime]) -> None:
    # Given a connector whose fetch() sends a string body as text/plain
    _, url, _ = demo_db
    request = event(json.dumps({"batch": [_put_list()]}), f"Bearer {token('U1')}")
    request["headers"]["content-type"] = "text/plain;charset=UTF-8"
    # When it is uploaded
    out = lambda_handler(request, LocalContext())  # type: ignore[arg-type]
    # Then it is applied like a JSON body
    assert out["statusCode"] == 200
    assert stored_row(url, "lists", LIST) is not None


def test_fatal_results_are_recorded_in_the_errors_table(demo_db: tuple[str, str, Runtime]) -> None:
    # Given a transaction that fails a NOT NULL constraint, followed by a good one
    _, url, _ = demo_db
    bad = {"op_id": 7, "op": "PUT", "type": "lists", "id": LIST, "tx_id": 3, "data": {}}
    good = {**_put_list(list_id="a0000000-0000-4000-8000-000000000002"), "tx_id": 4}
    # When it is uploaded
    response = call({"batch": [bad, good], "client_id": "device-1"})
    # Then the result is unchanged and one errors-table row describes the rejection
    assert [r["status"] for r in response.body["results"]] == ["fatal_error", "success"]
    reader = RowReader(url)
    try:
        assert reader.count("powersync_upload_errors") == 1
        cursor = reader.conn.cursor()
        cursor.execute(
            "SELECT user_id, client_id, transaction_id, op_index, op_id, table_name, row_id, error_code "
            "FROM powersync_upload_errors"
        )
        row = tuple(cursor.fetchone())
    finally:
        reader.close()
    assert row == (USERS["U1"], "device-1", 3, 0, 7, "lists", LIST, "NOT_NULL_VIOLATION")


def test_missing_errors_table_never_changes_the_result(tmp_path: Path) -> None:
    # Given a database without the errors table
    url = reset_database("sqlite", [ROOT / "db" / "demo" / "sqlite" / "001_demo_schema.sql"], tmp_path)
    rt = install_runtime(url, CONFIG)
    try:
        # When a transaction is rejected
        response = call({"batch": [{"op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "data": {}}]})
        # Then the client still gets its fatal_error (and the upload is not turned into a failure)
        assert response.status == 200
        assert response.body["results"][0]["failed_operation"]["error_code"] == "NOT_NULL_VIOLATION"
    finally:
        rt.db.discard()
        set_runtime(None)


@pytest.mark.parametrize("depth", [300, 900, 990, 5_000, 100_000])
def test_a_value_nested_at_any_depth_fails_only_its_own_operation(
    demo_db: tuple[str, str, Runtime], depth: int
) -> None:
    # Given a value nested deep, in a request whose second transaction is fine
    nested = "[" * depth + "]" * depth
    raw = (
        '{"batch":[{"op":"PUT","type":"lists","id":"' + LIST + '","tx_id":1,"data":{"name":' + nested + "}},"
        '{"op":"PUT","type":"lists","id":"' + OTHER_LIST + '","tx_id":2,"data":{"name":"ok"}}]}'
    )
    # When it is uploaded
    response = call(None, raw=raw)
    # Then the request is answered per transaction (never a 400 or a 500): the deep value's own
    # transaction is rejected INVALID_DATA (too long for the column, or too deep), the other one commits
    assert response.status == 200
    first, second = response.body["results"]
    assert first["failed_operation"]["error_code"] == "INVALID_DATA"
    assert second["status"] == "success"


def test_hostile_envelopes_never_become_a_500(demo_db: tuple[str, str, Runtime]) -> None:
    # Given requests a fuzzing client or a broken connector could send
    huge = "9" * 5000
    cases = {
        "huge integer value": '{"batch":[{"op":"PATCH","type":"lists","id":"' + LIST + '","tx_id":1,'
        '"data":{"name":' + huge + "}}]}",
        "huge integer tx_id": '{"batch":[{"op":"PATCH","type":"lists","id":"' + LIST + '","tx_id":' + huge + "}]}",
        "lone surrogate id": '{"batch":[{"op":"PUT","type":"lists","id":"x\\ud800y","tx_id":1,"data":{"name":"n"}}]}',
        "lone surrogate table": '{"batch":[{"op":"DELETE","type":"li\\ud800sts","id":"' + LIST + '","tx_id":1}]}',
    }
    for name, raw in cases.items():
        # When each is uploaded / Then the answer is a 200 with per-transaction results or a 400
        response = call(None, raw=raw)
        assert response.status in (200, 400), name
    # And a value or name that cannot be stored is rejected for its own operation, not as a 400
    huge_value = call(None, raw=cases["huge integer value"]).body["results"][0]
    assert huge_value["failed_operation"]["error_code"] == "INVALID_DATA"
    assert call(None, raw=cases["lone surrogate id"]).body["results"][0]["failed_operation"]["error_code"] in (
        "INVALID_DATA"
    )
    assert call(None, raw=cases["lone surrogate table"]).body["results"][0]["failed_operation"]["error_code"] == (
        "SCHEMA_MISMATCH"
    )


def test_huge_unknown_names_are_not_echoed_in_full(demo_db: tuple[str, str, Runtime]) -> None:
    # Given an operation whose unknown column name is 100,000 characters long
    name = "c" * 100_000
    response = call({"batch": [{"op": "PATCH", "type": "lists", "id": LIST, "tx_id": 1, "data": {name: 1}}]})
    # Then it is a SCHEMA_MISMATCH whose response stays small
    assert response.body["results"][0]["failed_operation"]["error_code"] == "SCHEMA_MISMATCH"
    assert len(json.dumps(response.body)) < 2000


def test_base64_body_that_is_not_utf8_is_400(demo_db: tuple[str, str, Runtime]) -> None:
    request = event("", f"Bearer {token('U1')}")
    request["body"] = base64.b64encode(b'{"batch": [\xff]}').decode()
    request["isBase64Encoded"] = True
    out = lambda_handler(request, LocalContext())  # type: ignore[arg-type]
    assert out["statusCode"] == 400
    assert "UTF-8" in json.loads(out["body"])["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"batch": [{"op": "PUT", "type": "lists"}]}, "batch.0.id: Field required"),
        ({"transactions": [{}]}, "transactions.0.crud: Field required"),
        ({"rows": []}, '"transactions"'),
        ({"batch": [], "transactions": []}, "not both"),
    ],
)
def test_malformed_envelopes_name_the_problem(demo_db: tuple[str, str, Runtime], body: Any, expected: str) -> None:
    response = call(body)
    assert response.status == 400
    assert expected in response.body["message"]
    assert "UploadRequest" not in response.body["message"]


def test_unknown_path_is_404_with_a_message(demo_db: tuple[str, str, Runtime]) -> None:
    out = lambda_handler(event("", None, path="/nope", method="GET"), LocalContext())  # type: ignore[arg-type]
    assert out["statusCode"] == 404
    assert "message" in json.loads(out["body"])


def test_metrics_are_emitted_as_emf_without_names_or_values(
    demo_db: tuple[str, str, Runtime], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given metrics turned on
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    secret = "metric-leak-check-4321"
    capsys.readouterr()
    # When a request commits one transaction and rejects another
    call({"batch": [_put_list(name=secret), {"op": "PUT", "type": "lists", "id": LIST, "tx_id": 2, "data": {}}]})
    printed = capsys.readouterr().out
    # Then the EMF document counts them, with an ErrorCode dimension, and holds no submitted value
    documents = [json.loads(line) for line in printed.splitlines() if '"_aws"' in line]
    merged: dict[str, Any] = {}
    for document in documents:
        merged.update(document)
    assert merged["TransactionsApplied"] in (1.0, [1.0])
    assert any(d.get("ErrorCode") == "NOT_NULL_VIOLATION" for d in documents)
    assert "OperationsPerRequest" in merged and "ApplyDurationMs" in merged
    assert all(secret not in json.dumps(d) for d in documents)


def test_the_garbage_collector_runs_again_after_a_request(demo_db: tuple[str, str, Runtime]) -> None:
    # Given the collector enabled, as in a fresh Lambda container
    import gc

    assert gc.isenabled()
    # When a request is handled (it pauses the collector while it runs)
    assert call({"batch": [_put_list()]}).status == 200
    # Then the collector is enabled again for the time between requests
    assert gc.isenabled()


def test_nan_inside_a_json_value_is_invalid_data_for_its_transaction_only(demo_db: tuple[str, str, Runtime]) -> None:
    # Given a list, then a body whose first todo's tags hold NaN (accepted as a token, never as JSON)
    _, url, _ = demo_db
    assert call({"batch": [_put_list()]}).status == 200

    def todo(row: str, tx: int, tags: str) -> str:
        data = f'{{"list_id": "{LIST}", "description": "d", "tags": {tags}}}'
        return f'{{"op": "PUT", "type": "todos", "id": "{row}", "tx_id": {tx}, "data": {data}}}'

    second_todo = "b0000000-0000-4000-8000-000000000002"
    raw = f'{{"batch": [{todo(TODO, 1, "[NaN, 1]")}, {todo(second_todo, 2, "[1]")}]}}'
    # When it is sent
    response = call(None, raw=raw)
    # Then that transaction alone is INVALID_DATA naming the column, and the next one is applied
    assert response.status == 200
    first, second = response.body["results"]
    assert first["failed_operation"]["error_code"] == "INVALID_DATA"
    assert first["failed_operation"]["details"]["column"] == "tags"
    assert second == {"status": "success"}
    assert stored_row(url, "todos", TODO) is None


def test_an_errors_table_created_after_the_first_rejection_records_the_next_ones(tmp_path: Path) -> None:
    # Given a SQLite demo database whose errors table is missing when the first rejection comes
    import sqlite3

    url = reset_database("sqlite", schema_scripts("sqlite"), tmp_path)
    path = url.removeprefix("sqlite:///")
    migration = schema_scripts("sqlite")[0].read_text(encoding="utf-8")
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE powersync_upload_errors")
    rt = install_runtime(url, CONFIG)
    now = [1000.0]
    rt.db.schema.clock = lambda: now[0]
    try:
        bad = {"op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "data": {}}
        assert call({"batch": [bad]}).body["results"][0]["status"] == "fatal_error"
        # When the table is created (a migration) and, a minute later, another transaction is rejected
        with sqlite3.connect(path) as conn:
            conn.executescript(migration)
        now[0] += 61
        assert call({"batch": [bad]}).body["results"][0]["status"] == "fatal_error"
        # Then that rejection is recorded: the missing table was not remembered for good
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM powersync_upload_errors").fetchone()[0] == 1
    finally:
        rt.db.discard()
        set_runtime(None)


def test_mariadb_demo_ids_that_differ_only_by_accent_or_case_are_different_rows(tmp_path: Path) -> None:
    # Given the shipped MariaDB/MySQL demo schema (text ids)
    url = reset_database("mysql", schema_scripts("mysql"), tmp_path)
    rt = install_runtime(url, CONFIG)
    try:
        # When lists "abc", "ábc" and "ABC" are PUT
        batch = [_put_list(name=f"list {i}", list_id=n) for i, n in enumerate(("abc", "\u00e1bc", "ABC"))]
        response = call({"batch": [{**e, "tx_id": i} for i, e in enumerate(batch)]})
        # Then each is a row of its own, stored as sent (the device has three)
        assert [r["status"] for r in response.body["results"]] == ["success"] * 3
        assert stored_count(url, "lists") == 3
    finally:
        rt.db.discard()
        set_runtime(None)


def test_an_unexpected_error_in_our_code_answers_503_not_500(
    demo_db: tuple[str, str, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a bug somewhere below the handler (here: the engine raising a plain exception)
    from powersync_upload import handler

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug, with a value: s3cr3t")

    monkeypatch.setattr(handler, "apply_upload", broken)
    # When an upload arrives
    response = call({"batch": [_put_list()]})
    # Then the client is told to retry (the upload stays queued), with no text of the error
    assert response.status == 503
    assert response.headers.get("Retry-After") == "5"
    assert "s3cr3t" not in json.dumps(response.body)


@pytest.mark.parametrize("demo_db", ["postgresql"], indirect=True)  # its owner columns are uuid
def test_a_subject_the_uuid_owner_column_cannot_hold_is_named_as_such(
    demo_db: tuple[str, str, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a token whose sub is an Auth0 user id, against the demo's uuid owner column
    # When that user writes twice
    first = call({"batch": [_put_list()]}, "auth0|5f7c8ec7c33c6c004bbafe82")
    call({"batch": [_put_list(list_id=OTHER_LIST)]}, "auth0|5f7c8ec7c33c6c004bbafe82")
    # Then the rejection says the owner column cannot hold the subject (not "not allowed")
    failed = first.body["results"][0]["failed_operation"]
    assert failed["error_code"] == "UNAUTHORIZED"
    assert failed["details"]["reason"] == "subject_not_storable"
    assert "cannot hold the token's subject" in failed["message"]
    # And the operator gets one warning for that column, not one per request
    warnings = [r for r in caplog.records if "cannot hold the token's subject" in r.getMessage()]
    assert len(warnings) == 1


def test_operations_with_the_same_columns_are_each_checked_and_a_later_one_names_its_own_failure(
    demo_db: tuple[str, str, Runtime],
) -> None:
    # Given one transaction of three PUTs with the same columns (resolved once for the transaction),
    # the third with a name longer than the column takes, and the second naming a column nobody has
    lists = [f"a0000000-0000-4000-8000-00000000001{i}" for i in range(4)]
    too_long = {"op": "PUT", "type": "lists", "id": lists[2], "tx_id": 1, "data": {"name": "x" * 101}}
    body = {
        "batch": [
            {"op": "PUT", "type": "lists", "id": lists[0], "tx_id": 1, "data": {"name": "a"}},
            {"op": "PUT", "type": "lists", "id": lists[1], "tx_id": 1, "data": {"name": "b"}},
            too_long,
            {"op": "PUT", "type": "lists", "id": lists[3], "tx_id": 2, "data": {"name": "d", "nope": 1}},
        ]
    }

    # When they are sent
    response = call(body)

    # Then the first transaction fails at its third operation for the value, the second at its
    # unknown column, and nothing of either is written
    assert response.status == 200
    first, second = response.body["results"]
    assert (first["failed_operation"]["operation_index"], first["failed_operation"]["error_code"]) == (
        2,
        "INVALID_DATA",
    )
    assert second["failed_operation"]["error_code"] == "SCHEMA_MISMATCH"
    assert all(stored_row(demo_db[1], "lists", list_id) is None for list_id in lists)
