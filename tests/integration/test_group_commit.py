"""Group commit on real databases: client transactions of one request share a database transaction,
and every result is still what one database transaction per client transaction gives (DESIGN.md
section 3). Each test runs on every dialect, with the demo schema (``lists`` has a unique index on
``(owner_id, name)``; ``todos.list_id`` references ``lists``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.errors import RetryableError
from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from powersync_upload.session import Session
from tests.support import ROOT, available_dialects, call, install_runtime, reset_database, stored_count, stored_row

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"


@pytest.fixture(params=available_dialects())
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    url = reset_database(request.param, schema_scripts(request.param), tmp_path)
    rt = install_runtime(url, CONFIG)
    yield url, rt
    rt.db.discard()
    set_runtime(None)


def _put_list(tx: int, list_id: str, name: str) -> dict[str, Any]:
    return {"op_id": tx, "op": "PUT", "type": "lists", "id": list_id, "tx_id": tx, "data": {"name": name}}


@pytest.mark.parametrize("bad", [0, 4, 9])
def test_a_fatal_transaction_anywhere_in_a_group_leaves_the_others_committed(
    demo: tuple[str, Runtime], bad: int
) -> None:
    # Given 10 single-PUT transactions in one request, the one at position `bad` taking a name an
    # existing list already has (only the database's unique index knows)
    url, _ = demo
    assert call({"batch": [_put_list(100, str(uuid.uuid4()), "taken")]}).status == 200
    names = [f"list {i}" for i in range(10)]
    names[bad] = "taken"
    batch = [_put_list(i, str(uuid.uuid4()), name) for i, name in enumerate(names)]
    # When they are sent together
    response = call({"batch": batch})
    # Then only that transaction is fatal, on its unique index, and the 9 others are committed
    assert response.status == 200
    statuses = [r["status"] for r in response.body["results"]]
    assert statuses == ["fatal_error" if i == bad else "success" for i in range(10)]
    assert response.body["results"][bad]["failed_operation"]["error_code"] == "UNIQUE_VIOLATION"
    assert stored_count(url, "lists") == 1 + 9
    assert stored_count(url, "powersync_upload_errors") == 1


def test_two_transactions_of_one_group_that_collide_end_as_if_applied_one_after_the_other(
    demo: tuple[str, Runtime],
) -> None:
    # Given two transactions creating different lists with the same name
    url, _ = demo
    batch = [_put_list(1, str(uuid.uuid4()), "same"), _put_list(2, str(uuid.uuid4()), "same")]
    # When sent together / Then the first wins and the second is fatal, as in queue order
    response = call({"batch": batch})
    assert [r["status"] for r in response.body["results"]] == ["success", "fatal_error"]
    assert stored_count(url, "lists") == 1


def test_a_put_that_updates_an_existing_row_in_a_group_does_not_free_a_name_for_an_earlier_one(
    demo: tuple[str, Runtime],
) -> None:
    # Given a list named "old"
    url, _ = demo
    existing = str(uuid.uuid4())
    assert call({"batch": [_put_list(100, existing, "old")]}).status == 200
    # When transaction 1 creates a list named "old" and transaction 2 renames the existing one by a PUT
    batch = [_put_list(1, str(uuid.uuid4()), "old"), _put_list(2, existing, "new")]
    response = call({"batch": batch})
    # Then transaction 1 fails as it would have alone (the rename came later), and the rename stands
    assert [r["status"] for r in response.body["results"]] == ["fatal_error", "success"]
    assert response.body["results"][0]["failed_operation"]["error_code"] == "UNIQUE_VIOLATION"
    assert stored_row(url, "lists", existing, {"name": "new"})["name"] == "new"  # type: ignore[index]
    assert stored_count(url, "lists") == 1


def test_a_retryable_failure_in_a_later_group_keeps_the_earlier_groups_committed(
    demo: tuple[str, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a list, a todo in it, then the delete of another list: the delete starts a second group
    # (a parent-table delete beside child-table writes), whose database transaction fails to start
    # with a temporary error
    url, _ = demo
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [
        _put_list(1, first, "one"),
        {
            "op_id": 2,
            "op": "PUT",
            "type": "todos",
            "id": str(uuid.uuid4()),
            "tx_id": 2,
            "data": {"list_id": first, "description": "d"},
        },
        {"op_id": 3, "op": "DELETE", "type": "lists", "id": second, "tx_id": 3},
    ]
    begins = {"count": 0}
    real_begin = Session.begin

    def failing_second_begin(self: Session) -> Any:
        begins["count"] += 1
        if begins["count"] == 2:
            raise RetryableError("connection")
        return real_begin(self)

    monkeypatch.setattr(Session, "begin", failing_second_begin)
    # When sent in shape A (so a partial commit is answered 200)
    body = {"transactions": [{"transaction_id": e["tx_id"], "crud": [e]} for e in batch]}
    for tx in body["transactions"]:
        entry = tx["crud"][0]
        entry["table"] = entry.pop("type")
        if "data" in entry:
            entry["op_data"] = entry.pop("data")
    response = call(body)
    # Then the first group (transactions 0 and 1) is committed, the third is retryable
    assert response.status == 200
    assert [r["status"] for r in response.body["results"]] == ["success", "success", "retryable_error"]
    assert stored_count(url, "lists") == 1
    assert stored_count(url, "todos") == 1


def _patch_list(list_id: str, name: str) -> dict[str, Any]:
    return {"op_id": 1, "op": "PATCH", "type": "lists", "id": list_id, "tx_id": 1, "data": {"name": name}}


def _two_lists(url: str) -> tuple[str, str]:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert call({"batch": [_put_list(1, first, "x"), _put_list(2, second, "y")]}).status == 200
    return first, second


def _names(url: str, *ids: str) -> list[str]:
    return [stored_row(url, "lists", i, {"name": ""})["name"] for i in ids]  # type: ignore[index]


REFUSED_AT_FIRST = {"status": "fatal_error", "error_code": "UNIQUE_VIOLATION", "operation_index": 0}
"""The outcome when the first rename meets its new name still taken: fatal at operation 0, nothing changed."""


@pytest.mark.parametrize(
    ("renames", "outcome", "names"),
    [
        # the first to "y", then the second to "x": the first rename meets "y" still taken
        pytest.param([(0, "y"), (1, "x")], REFUSED_AT_FIRST, ["x", "y"], id="swap"),
        # the same swap through a temporary name
        pytest.param([(0, "tmp"), (1, "x"), (0, "y")], {"status": "success"}, ["y", "x"], id="swap-through-tmp"),
        # the second to "x" and only then the first (holding "x") to "w": refused whatever order a batch
        # statement would visit the rows in (PostgreSQL visits the first list first and would succeed)
        pytest.param([(1, "x"), (0, "w")], REFUSED_AT_FIRST, ["x", "y"], id="take-before-the-holder-gives-up"),
    ],
)
def test_renames_of_unique_names_succeed_or_fail_as_in_queue_order(
    demo: tuple[str, Runtime], renames: list[tuple[int, str]], outcome: dict[str, Any], names: list[str]
) -> None:
    # Given lists "x" (created first) and "y" of one owner (name unique per owner)
    url, _ = demo
    lists = _two_lists(url)
    # When one transaction renames them in the given order
    response = call({"batch": [_patch_list(lists[which], name) for which, name in renames]})
    # Then it succeeds or fails as queue order would, and the names are as queue order leaves them
    [result] = response.body["results"]
    failed = result.get("failed_operation", {})
    got = {"status": result["status"], **{k: failed[k] for k in ("error_code", "operation_index") if k in failed}}
    assert got == outcome
    assert _names(url, *lists) == names
