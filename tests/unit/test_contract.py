"""Wire contract (DESIGN.md section 2): both request shapes, their aliases, grouping, caps, the response."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from powersync_upload import contract
from powersync_upload.contract import (
    FailedOperation,
    FatalResult,
    NotAttemptedResult,
    OperationWarning,
    RetryableResult,
    SuccessResult,
    UploadRequestA,
    UploadRequestB,
    UploadResponse,
)

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples" / "sdk-crud-entries.jsonl"
ROW = "11111111-1111-4111-8111-111111111111"
ADAPTER = pydantic.TypeAdapter(contract.UploadRequest)


def parse(body: dict[str, Any], max_transactions: int = 50) -> contract.Upload:
    return contract.to_upload(ADAPTER.validate_python(body), max_transactions)


def entry(op: str = "PUT", tx_id: int | None = None, **extra: Any) -> dict[str, Any]:
    """A shape B CrudEntry.toJSON() object."""
    out: dict[str, Any] = {"op_id": 1, "op": op, "type": "todos", "id": ROW, **extra}
    if tx_id is not None:
        out["tx_id"] = tx_id
    return out


# ---- shape A -------------------------------------------------------------------------------------


def test_shape_a_with_canonical_names_becomes_transactions_in_order() -> None:
    # Given a reference write API body with two transactions
    body = {
        "client_id": "device-1",
        "transactions": [
            {
                "transaction_id": 17,
                "crud": [
                    {"op": "PUT", "table": "lists", "id": "L1", "op_data": {"name": "a"}, "op_id": 5},
                    {"op": "PATCH", "table": "todos", "id": "T1", "op_data": {"done": 1}},
                ],
            },
            {"crud": [{"op": "DELETE", "table": "todos", "id": "T2"}]},
        ],
    }

    # When it is parsed
    upload = parse(body)

    # Then both transactions keep their operations, ids and order
    assert upload.shape == "A"
    assert upload.client_id == "device-1"
    assert [t.tx_id for t in upload.transactions] == [17, None]
    first, second = upload.transactions
    assert first.operations == (
        contract.Operation("PUT", "lists", "L1", {"name": "a"}, 5),
        contract.Operation("PATCH", "todos", "T1", {"done": 1}, None),
    )
    assert second.operations == (contract.Operation("DELETE", "todos", "T2", None, None),)


@pytest.mark.parametrize(
    ("crud_keys", "tx_keys"),
    [
        ({"table": "todos", "op_data": {"a": 1}, "previous_values": {"a": 0}}, {"transaction_id": 3}),
        ({"type": "todos", "opData": {"a": 1}, "previousValues": {"a": 0}}, {"tx_id": 3}),
        ({"type": "todos", "data": {"a": 1}, "old": {"a": 0}}, {"transaction_id": 3}),
    ],
    ids=["canonical", "camelCase", "sdk-names"],
)
def test_shape_a_accepts_every_alias(crud_keys: dict[str, Any], tx_keys: dict[str, Any]) -> None:
    # Given a shape A body spelled with one set of aliases
    body = {"transactions": [{**tx_keys, "crud": [{"op": "PATCH", "id": ROW, **crud_keys}]}]}

    # When it is validated and converted
    request = ADAPTER.validate_python(body)
    upload = contract.to_upload(request, 50)

    # Then table, data, previous values and transaction id are all read
    assert isinstance(request, UploadRequestA)
    assert request.transactions[0].crud[0].previous_values == {"a": 0}
    assert upload.transactions[0].tx_id == 3
    assert upload.transactions[0].operations[0] == contract.Operation("PATCH", "todos", ROW, {"a": 1}, None, {"a": 0})


def test_shape_a_over_the_cap_keeps_the_first_transactions_and_counts_the_rest_not_attempted() -> None:
    # Given 53 transactions and the default cap of 50
    body = {"transactions": [{"crud": [{"op": "DELETE", "table": "t", "id": str(i)}]} for i in range(53)]}

    # When converted
    upload = parse(body, max_transactions=50)

    # Then the first 50 are attempted, in order, and the last 3 are answered not_attempted (sent again)
    assert [t.operations[0].id for t in upload.transactions] == [str(i) for i in range(50)]
    assert upload.not_attempted == 3


def test_shape_a_at_the_cap_is_accepted() -> None:
    # Given exactly max_transactions transactions
    body = {"transactions": [{"crud": [{"op": "DELETE", "table": "t", "id": str(i)}]} for i in range(3)]}

    # When it is parsed with a cap of 3
    upload = parse(body, max_transactions=3)

    # Then all three are there
    assert len(upload.transactions) == 3


def test_shape_a_without_transactions_is_rejected() -> None:
    # Given a shape A body with an empty list (1 to 50 transactions are allowed)
    # When / Then validation fails
    with pytest.raises(pydantic.ValidationError):
        ADAPTER.validate_python({"transactions": []})


# ---- shape B -------------------------------------------------------------------------------------


def load_samples() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_real_sdk_entries_parse_as_shape_b_grouped_by_tx_id() -> None:
    # Given the real CrudEntry.toJSON() output of the JS SDK
    samples = load_samples()

    # When it is sent as {"batch": [...]}
    upload = parse({"batch": samples})

    # Then the queue order is kept, every transaction holds one tx_id, and neighbours differ
    assert upload.shape == "B"
    assert [op.op_id for t in upload.transactions for op in t.operations] == [s["op_id"] for s in samples]
    by_op_id = {s["op_id"]: s["tx_id"] for s in samples}
    for transaction in upload.transactions:
        assert {by_op_id[op.op_id] for op in transaction.operations} == {transaction.tx_id}
    tx_ids = [t.tx_id for t in upload.transactions]
    assert all(a != b for a, b in itertools.pairwise(tx_ids))
    assert len(upload.transactions[0].operations) == 2  # tx_id 1 holds two PUTs in the sample


def test_real_sdk_entries_keep_op_table_id_and_data() -> None:
    # Given the real SDK samples
    samples = load_samples()

    # When parsed
    operations = [op for t in parse({"batch": samples}).transactions for op in t.operations]

    # Then each operation carries the entry's op, type, id and data; DELETE carries no data
    assert len(operations) == len(samples)
    for operation, sample in zip(operations, samples, strict=True):
        assert (operation.op, operation.table, operation.id) == (sample["op"], sample["type"], sample["id"])
        if sample["op"] == "DELETE":
            assert operation.data is None
        else:
            assert operation.data == sample["data"]


def test_real_sdk_entries_keep_old_values_on_the_model() -> None:
    # Given the real SDK samples (some tables track previous values and metadata)
    samples = load_samples()

    # When validated
    request = ADAPTER.validate_python({"batch": samples})

    # Then "old" and "metadata" are read, not dropped
    assert isinstance(request, UploadRequestB)
    assert [e.old for e in request.batch] == [s.get("old") for s in samples]
    assert [e.metadata for e in request.batch] == [s.get("metadata") for s in samples]


@pytest.mark.parametrize(
    "keys",
    [
        {"type": "todos", "data": {"a": 1}, "old": {"a": 0}, "tx_id": 3},
        {"table": "todos", "op_data": {"a": 1}, "previous_values": {"a": 0}, "transaction_id": 3},
        {"table": "todos", "opData": {"a": 1}, "previousValues": {"a": 0}, "tx_id": 3},
    ],
    ids=["sdk-names", "reference-names", "camelCase"],
)
def test_shape_b_accepts_every_alias(keys: dict[str, Any]) -> None:
    # Given one shape B entry spelled with one set of aliases
    body = {"batch": [{"op_id": 4, "op": "PATCH", "id": ROW, **keys}]}

    # When it is validated and converted
    request = ADAPTER.validate_python(body)
    upload = contract.to_upload(request, 50)

    # Then table, data, previous values and tx_id are all read
    assert isinstance(request, UploadRequestB)
    assert request.batch[0].old == {"a": 0}
    assert upload.transactions[0].tx_id == 3
    assert upload.transactions[0].operations[0] == contract.Operation("PATCH", "todos", ROW, {"a": 1}, 4, {"a": 0})


def test_shape_b_groups_only_consecutive_equal_tx_ids() -> None:
    # Given entries: tx 1, tx 1, none, none, tx 1 again, tx 2, tx 1 again
    batch = [
        entry(tx_id=1, op_id=1),
        entry(tx_id=1, op_id=2),
        entry(op_id=3),
        entry(op_id=4),
        entry(tx_id=1, op_id=5),
        entry(tx_id=2, op_id=6),
        entry(tx_id=1, op_id=7),
    ]

    # When parsed
    transactions = parse({"batch": batch}).transactions

    # Then entries without tx_id stand alone and a repeated tx_id after a gap is a new transaction
    assert [[op.op_id for op in t.operations] for t in transactions] == [[1, 2], [3], [4], [5], [6], [7]]
    assert [t.tx_id for t in transactions] == [1, None, None, 1, 2, 1]


def test_shape_b_has_no_transaction_cap() -> None:
    # Given 100 single-op transactions, more than the shape A cap
    batch = [entry(tx_id=i, op_id=i) for i in range(100)]

    # When parsed with a cap of 50
    upload = parse({"batch": batch}, max_transactions=50)

    # Then all 100 transactions are kept
    assert len(upload.transactions) == 100


def test_empty_batch_is_an_upload_without_transactions() -> None:
    # Given {"batch": []}
    # When parsed
    upload = parse({"batch": []})

    # Then there is nothing to apply
    assert upload.transactions == []
    assert upload.shape == "B"


# ---- both shapes ---------------------------------------------------------------------------------


def shape_a(crud: dict[str, Any]) -> dict[str, Any]:
    return {"transactions": [{"crud": [crud]}]}


def shape_b(crud: dict[str, Any]) -> dict[str, Any]:
    return {"batch": [crud]}


@pytest.mark.parametrize("wrap", [shape_a, shape_b], ids=["A", "B"])
@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("op", None, "type"),
        ("op", 1, "type"),
        ("id", 3479, "type"),
        ("id", None, "type"),
        ("id", "", "format"),
        ("id", {"a": 1}, "type"),
        ("type", 7, "type"),
        ("type", "", "format"),
        ("type", ["todos"], "type"),
    ],
)
def test_an_entry_with_a_bad_op_table_or_id_refuses_only_its_transaction(
    wrap: Any, key: str, value: Any, reason: str
) -> None:
    # Given a request of two transactions whose first entry has an op, table or id of the wrong kind
    bad = {"op": "PUT", "type": "todos", "id": ROW, "data": {}, key: value}
    good = {"op": "PUT", "type": "todos", "id": ROW, "data": {}}
    body = wrap(bad)
    if "batch" in body:
        body["batch"] += [{**good, "tx_id": 2}]
    else:
        body["transactions"] += [{"crud": [good]}]

    # When parsed (no 400)
    upload = parse(body)

    # Then the first transaction is refused INVALID_DATA naming the key; the second is not
    first, second = upload.transactions
    assert first.refused is not None
    index, error = first.refused
    field = "table" if key == "type" else key
    assert (index, error.code.value, error.details()["field"], error.details()["reason"]) == (
        0,
        "INVALID_DATA",
        field,
        reason,
    )
    assert second.refused is None
    assert f"entry key '{field}'" in error.message


@pytest.mark.parametrize("wrap", [shape_a, shape_b], ids=["A", "B"])
@pytest.mark.parametrize("op", ["UPSERT", "put", ""])
def test_an_op_string_other_than_the_three_kinds_is_a_malformed_envelope(wrap: Any, op: str) -> None:
    # Given an entry whose op is a string outside PUT/PATCH/DELETE (the reference write API's enum;
    # shared case 023: a connector that invents an op is broken whatever the data)
    body = wrap({"op": op, "type": "todos", "id": ROW, "data": {}})

    # When / Then the request does not validate (the handler answers 400)
    with pytest.raises(pydantic.ValidationError, match="op must be 'PUT', 'PATCH' or 'DELETE'"):
        ADAPTER.validate_python(body)


def test_a_numeric_id_is_kept_as_its_json_text_for_the_errors_table() -> None:
    # Given a shape B entry whose id is a JSON number (powersync.dart issue 137)
    upload = parse({"batch": [entry(id=3479)]})

    # Then the operation names it as text and its transaction is refused
    assert upload.transactions[0].operations[0].id == "3479"
    assert upload.transactions[0].refused is not None


def test_a_transaction_larger_than_the_cap_alone_is_too_large_and_the_others_are_kept() -> None:
    # Given shape B: a small transaction, one of about 3 kB, another small one; a cap of 1000 bytes
    body = {"batch": [entry(tx_id=1), entry(tx_id=2, data={"x": "y" * 3000}), entry(tx_id=3)]}
    upload = parse(body)

    # When the body is limited to the cap
    limited = contract.limit_size(upload, contract.entry_sizes(body), 1000)

    # Then only the large one is refused TOO_LARGE (naming MAX_BODY_BYTES); all three are still answered
    refused = [t.refused for t in limited.transactions]
    assert refused[0] is None and refused[2] is None
    assert refused[1] is not None and refused[1][1].code.value == "TOO_LARGE"
    assert refused[1][1].details() == {"limit": "MAX_BODY_BYTES"}
    assert limited.not_attempted == 0


def test_shape_a_past_the_cap_is_not_attempted_after_the_first_transactions_that_fit() -> None:
    # Given shape A: three transactions of about 600 bytes each, a cap of 1000 bytes
    crud = [{"op": "PUT", "table": "t", "id": str(i), "op_data": {"x": "y" * 550}} for i in range(3)]
    body = {"transactions": [{"crud": [c]} for c in crud]}
    upload = parse(body)

    # When limited to the cap
    limited = contract.limit_size(upload, contract.entry_sizes(body), 1000)

    # Then the first is attempted and the other two are answered not_attempted (none refused)
    assert [t.operations[0].id for t in limited.transactions] == ["0"]
    assert limited.not_attempted == 2


@pytest.mark.parametrize("wrap", [shape_a, shape_b], ids=["A", "B"])
def test_delete_carries_no_data_even_when_sent(wrap: Any) -> None:
    # Given a DELETE that also carries data
    body = wrap({"op": "DELETE", "type": "todos", "id": ROW, "data": {"a": 1}})

    # When parsed
    operation = parse(body).transactions[0].operations[0]

    # Then its data is None
    assert operation.op == "DELETE"
    assert operation.data is None


@pytest.mark.parametrize("wrap", [shape_a, shape_b], ids=["A", "B"])
def test_put_without_data_is_an_empty_row(wrap: Any) -> None:
    # Given a PUT without data (the SDK omits data when every column is null)
    body = wrap({"op": "PUT", "type": "todos", "id": ROW})

    # When parsed
    operation = parse(body).transactions[0].operations[0]

    # Then its data is an empty mapping, not None
    assert operation.data == {}


def test_unknown_keys_are_ignored_at_every_level() -> None:
    # Given bodies with keys a newer SDK might add
    body_a = {
        "transactions": [{"crud": [{"op": "PUT", "table": "t", "id": "1", "new_field": 1}], "extra": "x"}],
        "schema_version": 2,
    }
    body_b = {"batch": [{"op": "PUT", "type": "t", "id": "1", "tx_id": 1, "new_field": [1]}], "schema_version": 2}

    # When parsed
    upload_a = parse(body_a)
    upload_b = parse(body_b)

    # Then both are valid and the unknown keys are not part of the operation
    assert upload_a.transactions[0].operations[0] == contract.Operation("PUT", "t", "1", {}, None)
    assert upload_b.transactions[0].operations[0] == contract.Operation("PUT", "t", "1", {}, None)


@pytest.mark.parametrize(
    "body",
    [{}, {"crud": []}, {"batch": "x"}, {"batch": [{"op": "PUT", "type": "t"}]}, {"batch": [{"op": "PUT", "id": "1"}]}],
    ids=["empty", "neither-shape", "batch-not-list", "no-id", "no-table"],
)
def test_body_matching_neither_shape_is_rejected(body: dict[str, Any]) -> None:
    # Given a body that is neither shape A nor shape B
    # When / Then validation fails
    with pytest.raises(pydantic.ValidationError):
        ADAPTER.validate_python(body)


# ---- response ------------------------------------------------------------------------------------


def test_response_omits_absent_optional_keys_but_keeps_requires_client_handling() -> None:
    # Given one result of each kind, with optional fields left out
    response = UploadResponse(
        results=[
            SuccessResult(),
            FatalResult(
                message="a required value is missing",
                failed_operation=FailedOperation(
                    error_code="NOT_NULL_VIOLATION", message="m", operation_index=1, details={"table": "lists"}
                ),
            ),
            RetryableResult(message="try again", retry_after_ms=1000),
            NotAttemptedResult(),
        ]
    )

    # When serialised
    body = response.to_json()

    # Then absent optional keys are gone and requires_client_handling is false
    assert body == {
        "results": [
            {"status": "success"},
            {
                "status": "fatal_error",
                "requires_client_handling": False,
                "message": "a required value is missing",
                "failed_operation": {
                    "error_code": "NOT_NULL_VIOLATION",
                    "message": "m",
                    "operation_index": 1,
                    "details": {"table": "lists"},
                },
            },
            {"status": "retryable_error", "message": "try again", "retry_after_ms": 1000},
            {"status": "not_attempted"},
        ]
    }


def test_response_keeps_warnings_and_op_id_when_present() -> None:
    # Given a success with a warning and a fatal result with an op_id
    response = UploadResponse(
        results=[
            SuccessResult(warnings=[OperationWarning(operation_index=2, code="ROW_NOT_FOUND")]),
            FatalResult(
                message="m",
                failed_operation=FailedOperation(error_code="UNAUTHORIZED", message="m", operation_index=0, op_id=21),
            ),
        ]
    )

    # When serialised
    success, fatal = response.to_json()["results"]

    # Then they are in the body
    assert success["warnings"] == [{"operation_index": 2, "code": "ROW_NOT_FOUND"}]
    assert fatal["failed_operation"]["op_id"] == 21
