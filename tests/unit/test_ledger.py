"""The ledger's pure core (DESIGN.md section 3, "Replays"): identity, digest and the replay decision, no database."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from powersync_upload import ledger
from powersync_upload.contract import Operation, Transaction, UploadRequest, to_upload
from powersync_upload.handler import lenient_json

USER = "11111111-1111-1111-1111-111111111111"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
PATCH = Operation("PATCH", "todos", "t1", {"description": "x"}, 5, {"description": "w"}, "m")
ADAPTER: TypeAdapter[Any] = TypeAdapter(UploadRequest)


def _tx(*operations: Operation) -> Transaction:
    return Transaction(tuple(operations), 1)


def test_identity_is_user_client_first_and_last_op_id_and_digest() -> None:
    # Given a two-operation transaction with op_ids and a client id
    second = Operation("DELETE", "todos", "t2", None, 9)
    transaction = _tx(PATCH, second)

    # When its identity is taken
    ident = ledger.identity(USER, "dev-1", transaction)

    # Then it names the user, the client, op_ids 5 and 9 and the digest of both operations
    assert ident == ledger.Identity(USER, "dev-1", 5, 9, ledger.digest(transaction.operations))
    assert len(ident.digest) == 64


def test_no_identity_without_a_storable_client_id_or_with_an_operation_missing_its_op_id() -> None:
    # Given transactions that lack a client id, an op_id, or any operation
    no_op_id = _tx(PATCH, Operation("DELETE", "todos", "t2", None, None))

    # When / Then none of them has an identity: they rely on idempotency alone
    assert ledger.identity(USER, None, _tx(PATCH)) is None
    assert ledger.identity(USER, "", _tx(PATCH)) is None
    assert ledger.identity(USER, "dev-1", no_op_id) is None
    assert ledger.identity(USER, "dev-1", Transaction((), 1)) is None
    assert ledger.identity(USER, "x" * 256, _tx(PATCH)) is None
    assert ledger.identity(USER, "dev-\ud800", _tx(PATCH)) is None
    assert ledger.identity(USER, "dev-\x00", _tx(PATCH)) is None


def test_values_nested_too_deeply_to_digest_leave_the_transaction_without_identity() -> None:
    # Given a PATCH whose value is an array nested far deeper than the interpreter's recursion limit
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    transaction = _tx(Operation("PATCH", "todos", "t1", {"tags": deep}, 5))

    # When / Then it has no identity (it is applied without the ledger), and nothing raises
    assert ledger.identity(USER, "dev-1", transaction) is None


def test_digest_changes_with_every_part_of_an_operation() -> None:
    # Given one operation and six variants, each differing in one of op, table, id, data, old, metadata
    base = ledger.digest([PATCH])
    variants = [
        Operation("PUT", "todos", "t1", {"description": "x"}, 5, {"description": "w"}, "m"),
        Operation("PATCH", "lists", "t1", {"description": "x"}, 5, {"description": "w"}, "m"),
        Operation("PATCH", "todos", "t2", {"description": "x"}, 5, {"description": "w"}, "m"),
        Operation("PATCH", "todos", "t1", {"description": "y"}, 5, {"description": "w"}, "m"),
        Operation("PATCH", "todos", "t1", {"description": "x"}, 5, None, "m"),
        Operation("PATCH", "todos", "t1", {"description": "x"}, 5, {"description": "w"}, None),
    ]

    # When each is digested / Then every digest differs from the base and from each other
    digests = {ledger.digest([v]) for v in variants}
    assert base not in digests
    assert len(digests) == len(variants)


def test_digest_ignores_key_order_and_the_op_id_but_keeps_number_types() -> None:
    # Given the same data with keys in another order, another op_id, and a number sent as text
    reordered = Operation("PATCH", "todos", "t1", {"b": 2, "a": Decimal("1.50")}, 5)
    same = Operation("PATCH", "todos", "t1", {"a": Decimal("1.50"), "b": 2}, 77)
    text = Operation("PATCH", "todos", "t1", {"a": "1.50", "b": 2}, 5)

    # When / Then key order and op_id do not matter; 1.50 and "1.50" are different content
    assert ledger.digest([reordered]) == ledger.digest([same])
    assert ledger.digest([reordered]) != ledger.digest([text])


def test_both_shapes_give_the_same_identity_for_the_same_transaction() -> None:
    # Given one transaction sent in shape A and in shape B, with every alias of each
    crud = {"op": "PATCH", "id": "t1", "op_id": 3, "metadata": "m"}
    a = {
        "client_id": "c",
        "transactions": [{"crud": [{**crud, "table": "todos", "opData": {"x": 1}, "previousValues": {"x": 0}}]}],
    }
    b = {"client_id": "c", "batch": [{**crud, "type": "todos", "data": {"x": 1}, "old": {"x": 0}, "tx_id": 8}]}

    # When both are parsed and identified
    ids = [ledger.identity(USER, "c", to_upload(ADAPTER.validate_python(body), 50).transactions[0]) for body in (a, b)]

    # Then the identities are equal
    assert ids[0] is not None
    assert ids[0] == ids[1]


# Digests computed by the code that wrote the ledger rows before the fingerprint was rewritten on the
# C JSON encoder (a recursive canonical JSON in Python): stored rows must still answer replays.
_BEFORE = {
    "shape_a_aliases": (
        r'{"client_id":"c","transactions":[{"crud":[{"op":"PUT","type":"todos","id":"t1","op_id":1,'
        r'"opData":{"b":2,"a":"x"}},{"op":"PATCH","table":"todos","id":"t1","op_id":2,"data":{"n":1},'
        r'"previousValues":{"n":0},"metadata":{"k":[1,2]}},{"op":"DELETE","table":"todos","id":"t1","op_id":3}]}]}',
        "291f23dea56df6348fe2703d689dd218ce69b90f1e2fcea2bee40f04d9abb0bf",
    ),
    "shape_b_same": (
        r'{"client_id":"c","batch":[{"op":"PUT","table":"todos","id":"t1","op_id":1,"tx_id":9,"data":{"a":"x",'
        r'"b":2}},{"op":"PATCH","type":"todos","id":"t1","op_id":2,"tx_id":9,"op_data":{"n":1},"old":{"n":0},'
        r'"metadata":{"k":[1,2]}},{"op":"DELETE","type":"todos","id":"t1","op_id":3,"tx_id":9}]}',
        "291f23dea56df6348fe2703d689dd218ce69b90f1e2fcea2bee40f04d9abb0bf",
    ),
    "decimals": (
        r'{"client_id":"c","batch":[{"op":"PUT","type":"t","id":"d","op_id":1,"data":{"a":1.50,"b":-0.0,'
        r'"c":1e400,"d":1E+2,"e":0.1,"f":123456789012345678901234567890.123456789,"g":[2.50,{"h":-1e-7}],'
        r'"i":12345678901234567890123}}]}',
        "c1dca046a52de606f57195dde7dcb4da315f0b79276023b10e85a73b0c789cc6",
    ),
    "unicode": (
        '{"client_id":"c","batch":[{"op":"PUT","type":"t\u00e9","id":"\\ud800x","op_id":1,"data":{"\u00e9":'
        '"\u65e5\u672c\ud83d\ude00","s":"\\udc00","q":"a\\"b\\\\c\\n\\t\\u0001","z":"\\u0000"}}]}',
        "f724c60e225ba16ff0c5f4293085c6dcd5327969d1cb01e5f8169e2a525f1eb0",
    ),
    "nul_next_to_decimal": (
        r'{"client_id":"c","batch":[{"op":"PUT","type":"t","id":"e","op_id":1,"data":{"a":"x\"\u0000",'
        r'"b":"\u0000","c":1.5,"d":"\"\u0000\""}}]}',
        "b768c08dc576032736443a7718f43ce5c772232aa3ee4e532a39cf3182537bee",
    ),
    "nested_json": (
        r'{"client_id":"c","batch":[{"op":"PUT","type":"t","id":"n","op_id":1,"data":{"j":{"z":{"y":[1,[2,'
        r'[3,{"x":null,"w":true,"v":false}]]]},"a":[]},"k":{}},"metadata":[{"b":1,"a":2}]}]}',
        "d3bc1374ddf48349e490e5e1369d0e53c1572e483fa402dbe6cf5b99944b5f6c",
    ),
    "floats": (
        r'{"client_id":"c","batch":[{"op":"PUT","type":"t","id":"f","op_id":1,"data":{"a":NaN,"b":Infinity,'
        r'"c":-Infinity,"d":[NaN,1.5]}}]}',
        "cc2bae5bfb80aaa4044f068bc238fbcd37edb54409e045eae98762f207c0e6ae",
    ),
    "big_int": (
        '{"client_id":"c","batch":[{"op":"PUT","type":"t","id":"b","op_id":1,"data":{"a":'
        + "9" * 4500
        + ',"b":-9223372036854775808}}]}',
        "f8f104d67d91b91008517902703d5a945d2655fa1b75a0644462f50b6b4db58e",
    ),
}


@pytest.mark.parametrize("name", sorted(_BEFORE))
def test_digest_equals_the_one_stored_by_the_previous_code(name: str) -> None:
    # Given a request body and the digest the previous fingerprint code stored for its transaction
    body, stored = _BEFORE[name]

    # When the body is parsed as the handler parses it and the transaction digested
    transaction = to_upload(ADAPTER.validate_python(lenient_json(body)), 50).transactions[0]

    # Then the digest is the stored one: a replay of that transaction is answered from its ledger row
    assert ledger.digest(transaction.operations) == stored


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec=None, exclude_categories=()) | st.sampled_from(["\x00", '"', "\\"]))
)
_JSON = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["PUT", "PATCH", "DELETE"]),
            st.text(),
            st.text(),
            st.none() | st.dictionaries(st.text(), _JSON, max_size=5),
            st.none() | st.dictionaries(st.text(), _JSON, max_size=3),
            _JSON,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_digest_is_the_previous_function_of_any_json_transaction(ops: list[tuple[Any, ...]]) -> None:
    # Given any operations with JSON values: decimals, floats (NaN, infinities), unicode, NUL, nesting
    operations = [Operation(op, table, id_, data, 1, old, metadata) for op, table, id_, data, old, metadata in ops]

    # When digested / Then the digest is the SHA-256 of the reference canonical text (the previous code,
    # kept as the fallback; the frozen digests above pin it)
    text = ledger._canonical([[o.op, o.table, o.id, o.data, o.old, o.metadata] for o in operations])
    assert ledger.digest(operations) == hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _entry(result: dict[str, Any], age: timedelta) -> ledger.Entry:
    ident = ledger.identity(USER, "dev-1", _tx(PATCH))
    assert ident is not None
    return ledger.entry(ident, result, NOW - age)


def test_unknown_identity_is_applied() -> None:
    # Given no stored row / When deciding / Then the transaction is applied
    assert ledger.decide(None, NOW, retention_days=7) == ledger.APPLY


def test_replay_of_a_committed_transaction_answers_one_already_applied_warning() -> None:
    # Given a committed transaction stored an hour ago, with its own warnings
    stored = _entry(
        {"status": "success", "warnings": [{"operation_index": 0, "code": "ROW_NOT_FOUND"}]}, timedelta(hours=1)
    )

    # When its replay is decided
    decision = ledger.decide(stored, NOW, retention_days=7)

    # Then it is not applied and answers success with exactly ALREADY_APPLIED, without an index
    assert decision == ledger.Decision(
        apply=False, answer={"status": "success", "warnings": [{"code": "ALREADY_APPLIED"}]}
    )


def test_replay_of_a_fatal_transaction_answers_the_same_fatal_error() -> None:
    # Given a rejected transaction stored with its conflict id
    fatal = {
        "status": "fatal_error",
        "message": "m",
        "requires_client_handling": False,
        "failed_operation": {"error_code": "CONFLICT", "operation_index": 0, "details": {"conflict_id": "c-1"}},
    }
    stored = _entry(fatal, timedelta(days=1))

    # When its replay is decided / Then the same result, conflict id included, is answered
    assert ledger.decide(stored, NOW, retention_days=7) == ledger.Decision(apply=False, answer=fatal)


def test_a_row_older_than_ledger_days_is_forgotten() -> None:
    # Given rows stored just inside and just outside a 7-day window
    inside = _entry({"status": "success"}, timedelta(days=7) - timedelta(seconds=1))
    outside = _entry({"status": "success"}, timedelta(days=7, seconds=1))

    # When / Then the first is answered, the second applied again
    assert not ledger.decide(inside, NOW, retention_days=7).apply
    assert ledger.decide(outside, NOW, retention_days=7).apply


def test_stored_rows_are_read_back_from_driver_values() -> None:
    # Given a ledger row as a driver returns it: char(64) padded, decided_at as text (SQLite)
    ident = ledger.identity(USER, "dev-1", _tx(PATCH))
    assert ident is not None
    stored = ledger.entry(ident, {"status": "success"}, NOW)
    row = (5, 5, ident.digest + "  ", stored.result_text(), "2026-12-01 12:00:00.000")

    # When it is read back / Then it is the same entry, found by its identity
    back = ledger.from_row(USER, "dev-1", row)
    assert back == stored
    assert ledger.find([back], ident) == stored
    assert ledger.find([back], ledger.Identity(USER, "dev-2", 5, 5, ident.digest)) is None


def test_an_unreadable_stored_result_is_treated_as_unknown() -> None:
    # Given stored results that are not JSON, or not a decided status
    rows = [(1, 1, "d", "{not json", NOW), (1, 1, "d", '{"status": "retryable_error"}', NOW), (1, 1, "d", None, NOW)]

    # When / Then none becomes an entry, so the transaction is applied rather than answered wrongly
    assert [ledger.from_row(USER, "c", row) for row in rows] == [None, None, None]


def test_decided_at_is_stored_as_naive_utc_milliseconds() -> None:
    # Given a decision time with a zone and microseconds
    when = datetime(2026, 12, 1, 14, 0, 0, 123456, tzinfo=UTC) + timedelta(hours=0)

    # When an entry is made / Then decided_at is naive UTC cut to milliseconds
    ident = ledger.Identity(USER, "c", 1, 1, "d")
    assert ledger.entry(ident, {"status": "success"}, when).decided_at == datetime(2026, 12, 1, 14, 0, 0, 123000)


def test_the_stored_result_text_is_the_sorted_compact_json_of_the_result() -> None:
    # Given a success without warnings (the common row), one with a warning, and a fatal result
    results = [
        {"status": "success"},
        {"status": "success", "warnings": [{"code": "ROW_NOT_FOUND", "operation_index": 1}]},
        {"status": "fatal_error", "message": "m", "failed_operation": {"error_code": "X", "operation_index": 0}},
    ]

    # When each is stored / Then its text is the sorted, compact JSON of the result, as rows before it were
    for result in results:
        text = ledger.entry(ledger.Identity(USER, "c", 1, 1, "0" * 64), result, NOW).result_text()
        assert text == json.dumps(result, sort_keys=True, separators=(",", ":"))
