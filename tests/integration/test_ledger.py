"""Exactly-once replays with the client ledger, against real databases (DESIGN.md section 3, "Replays").

Each test loads the product's migrations (errors table, ledger, conflicts table) and the demo schema
into a fresh database of every dialect that runs here, and talks to the real Lambda handler. A race
uses a second, real connection (a second :class:`~powersync_upload.database.Database`), never a mock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from powersync_upload import engine, errors_table, ledger, replays
from powersync_upload.contract import Operation, Transaction
from powersync_upload.database import Database
from powersync_upload.errors import RetryableError
from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from powersync_upload.session import Session
from tests.support import ROOT, USERS, RowReader, available_dialects, call, install_runtime, reset_database

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000011"
TODO = "b0000000-0000-4000-8000-000000000011"
MISSING_LIST = "a0000000-0000-4000-8000-0000000000ff"


@pytest.fixture(params=available_dialects())
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    url = reset_database(request.param, schema_scripts(request.param), tmp_path)
    rt = install_runtime(url, CONFIG)
    # Given a list and a todo of U1's (sent without client_id: not in the ledger)
    seed = [
        {"op_id": 1, "op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "data": {"name": "Groceries"}},
        {
            "op_id": 2,
            "op": "PUT",
            "type": "todos",
            "id": TODO,
            "tx_id": 1,
            "data": {"list_id": LIST, "description": "milk"},
        },
    ]
    assert call({"batch": seed}).status == 200
    yield url, rt
    rt.db.discard()
    set_runtime(None)


def _patch(description: str, op_id: int = 7, row: str = TODO) -> dict[str, Any]:
    return {
        "op_id": op_id,
        "op": "PATCH",
        "type": "todos",
        "id": row,
        "tx_id": op_id,
        "data": {"description": description},
    }


def _read(url: str, table: str, row_id: str | None = None) -> Any:
    reader = RowReader(url)
    try:
        return reader.count(table) if row_id is None else reader.row(table, "id", row_id, None)
    finally:
        reader.close()


def _assert_already_applied(response: Any, url: str, description: str, *, ledger_rows: int) -> None:
    """Answered from the ledger (``ALREADY_APPLIED``, alone, no index), the todo as ``description``."""
    assert response.status == 200
    assert response.body["results"] == [{"status": "success", "warnings": [{"code": "ALREADY_APPLIED"}]}]
    assert _read(url, "todos", TODO)["description"] == description
    assert _read(url, "powersync_upload_ledger") == ledger_rows


def _codes(result: dict[str, Any]) -> list[str]:
    return [w["code"] for w in result.get("warnings") or []]


def test_a_replay_after_a_lost_response_does_not_overwrite_another_devices_newer_change(
    demo: tuple[str, Runtime],
) -> None:
    # Given device 1's PATCH committed (its response lost), then device 2's newer PATCH of the same row
    url, _ = demo
    first = {"batch": [_patch("from device 1")], "client_id": "device-1"}
    assert call(first).body["results"][0]["status"] == "success"
    assert call({"batch": [_patch("from device 2", op_id=3)], "client_id": "device-2"}).status == 200

    # When device 1 sends its transaction again
    response = call(first)

    # Then it is answered ALREADY_APPLIED, alone and without an index, and device 2's change survives
    _assert_already_applied(response, url, "from device 2", ledger_rows=2)


def test_a_replayed_fatal_transaction_answers_the_same_error_and_leaves_one_errors_table_row(
    demo: tuple[str, Runtime],
) -> None:
    # Given a transaction that can never be applied (its list does not exist), sent with a client id
    put = {"op_id": 9, "op": "PUT", "type": "todos", "id": TODO, "tx_id": 9, "data": {"list_id": MISSING_LIST}}
    body = {"batch": [put], "client_id": "device-1"}
    url, _ = demo
    first = call(body)

    # When it is sent twice more
    replays = [call(body), call(body)]

    # Then every answer is the same fatal_error, and the errors table and the ledger hold one row each
    assert first.body["results"][0]["status"] == "fatal_error"
    assert [r.body for r in replays] == [first.body, first.body]
    assert _read(url, "powersync_upload_errors") == 1
    assert _read(url, "powersync_upload_ledger") == 1


def test_two_users_with_the_same_client_id_do_not_share_a_ledger(demo: tuple[str, Runtime]) -> None:
    # Given U1 created a list, with client id "shared"
    url, _ = demo
    other_list = "a0000000-0000-4000-8000-000000000022"
    body = {
        "batch": [{"op_id": 1, "op": "PUT", "type": "lists", "id": other_list, "tx_id": 1, "data": {"name": "x"}}],
        "client_id": "shared",
    }
    assert call(body, "U1").body["results"][0]["status"] == "success"

    # When U2 sends the very same transaction with the same client id
    response = call(body, "U2")

    # Then it is applied for U2 (and refused: the row is U1's), not answered from U1's ledger row
    result = response.body["results"][0]
    assert result["status"] == "fatal_error"
    assert result["failed_operation"]["error_code"] == "UNAUTHORIZED"
    assert _read(url, "lists", other_list)["owner_id"] == USERS["U1"]


def test_a_cleared_client_restarting_its_op_ids_with_new_content_is_applied(demo: tuple[str, Runtime]) -> None:
    # Given op_id 7 of client "device-1" was applied
    url, _ = demo
    assert call({"batch": [_patch("before clear")], "client_id": "device-1"}).status == 200

    # When the same client, its database cleared, sends op_id 7 again with other content
    response = call({"batch": [_patch("after clear")], "client_id": "device-1"})

    # Then it is applied: nothing is dropped on the strength of an op_id alone
    assert response.body["results"] == [{"status": "success"}]
    assert _read(url, "todos", TODO)["description"] == "after clear"


def test_a_resend_racing_its_first_attempt_is_answered_from_the_ledger(
    demo: tuple[str, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a resend whose ledger read finds nothing, because its first attempt is still in flight;
    # the first attempt then commits on its own connection, and another device changes the row
    url, rt = demo
    body = {"batch": [_patch("from device 1")], "client_id": "device-1"}
    first_attempt = Database.from_url(url)
    original = replays.Replays.load

    def load_then_let_the_first_attempt_commit(self: replays.Replays, session: Session) -> None:
        original(self, session)
        if session.db is first_attempt:
            return
        if session.opened is not None:
            # The resend keeps its read's transaction for its writes; on SQLite that holds the write
            # lock, so the first attempt could not commit in between. Let it go, so the race is the
            # same on every dialect: the first attempt commits after the resend's read.
            session.rollback(session.opened)
            session.opened = None
        upload = Transaction((Operation("PATCH", "todos", TODO, {"description": "from device 1"}, 7),), 7)
        outcome = engine.apply_upload(
            engine.Upload([upload], "B", "device-1"),
            engine.Caller(USERS["U1"]),
            rt.config,
            first_attempt,
            engine.Deadline.after(10),
        )
        assert outcome.committed == 1
        reader = RowReader(url)
        reader.execute("UPDATE todos SET description = 'newer' WHERE description = 'from device 1'")
        reader.close()

    monkeypatch.setattr(replays.Replays, "load", load_then_let_the_first_attempt_commit)
    try:
        # When the resend applies its write and claims the ledger row
        response = call(body)
    finally:
        first_attempt.discard()

    # Then the duplicate identity rolls the resend back and it is answered from the ledger
    _assert_already_applied(response, url, "newer", ledger_rows=1)


def test_the_ledger_claim_reports_a_duplicate_with_the_stored_row_and_pruning_keeps_recent_rows(
    demo: tuple[str, Runtime],
) -> None:
    # Given one old and one recent ledger row written through the dialect
    url, rt = demo
    dialect = rt.db.dialect
    now = datetime.now(UTC)
    old = ledger.entry(ledger.Identity("u", "c", 1, 1, "a" * 64), {"status": "success"}, now - timedelta(days=30))
    recent = ledger.entry(ledger.Identity("u", "c", 2, 2, "b" * 64), {"status": "success"}, now)
    conn = dialect.connect(url, 5)
    try:
        dialect.begin(conn, 5)
        assert dialect.ledger_claim(conn, [old, recent]).claimed
        dialect.commit(conn)

        # When the recent identity is claimed again, and rows older than 7 days are pruned
        dialect.begin(conn, 5)
        again = dialect.ledger_claim(conn, [recent])
        dialect.begin(conn, 5)
        pruned = dialect.ledger_prune(conn, (now - timedelta(days=7)).replace(tzinfo=None))
        dialect.commit(conn)
    finally:
        conn.close()

    # Then the claim is refused with the stored row, and only the old row is pruned
    assert not again.claimed
    assert [ledger.from_row("u", "c", row) for row in again.stored] == [recent]
    assert pruned == 1
    assert _read(url, "powersync_upload_ledger") == 1


def test_without_the_ledger_table_uploads_still_apply_and_the_gap_is_logged(
    demo: tuple[str, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a database where the ledger migration was not run
    url, _ = demo
    reader = RowReader(url)
    reader.execute("DROP TABLE powersync_upload_ledger")
    reader.close()

    # When a transaction is sent with a client id, twice
    body = {"batch": [_patch("no ledger")], "client_id": "device-1"}
    with caplog.at_level(logging.ERROR):
        first, second = call(body), call(body)

    # Then both are applied (replays rely on idempotency, never a 5xx) and the missing ledger is logged
    assert [first.body["results"], second.body["results"]] == [[{"status": "success"}]] * 2
    assert _read(url, "todos", TODO)["description"] == "no ledger"
    assert any(r.getMessage() == "cannot read the ledger; replays are applied again" for r in caplog.records)


def test_a_transaction_whose_ledger_row_expired_is_applied_again_and_decided_anew(demo: tuple[str, Runtime]) -> None:
    # Given the ledger row of a transaction decided 30 days ago (ledger_days is 7), not yet pruned
    url, rt = demo
    body = {"batch": [_patch("from device 1")], "client_id": "device-1"}
    transaction = Transaction((Operation("PATCH", "todos", TODO, {"description": "from device 1"}, 7),), 7)
    ident = ledger.identity(USERS["U1"], "device-1", transaction)
    assert ident is not None
    old = ledger.entry(ident, {"status": "success"}, datetime.now(UTC) - timedelta(days=30))
    conn = rt.db.dialect.connect(url, 5)
    rt.db.dialect.begin(conn, 5)
    assert rt.db.dialect.ledger_claim(conn, [old]).claimed
    rt.db.dialect.commit(conn)
    conn.close()

    # When the same transaction arrives
    response = call(body)

    # Then it is applied (the window is over), the expired row is gone and the new decision recorded
    assert response.body["results"] == [{"status": "success"}]
    assert _read(url, "todos", TODO)["description"] == "from device 1"
    assert _read(url, "powersync_upload_ledger") == 1
    assert call(body).body["results"] == [{"status": "success", "warnings": [{"code": "ALREADY_APPLIED"}]}]


@pytest.mark.parametrize("shape", ["A", "B"])
@pytest.mark.parametrize("committed", [False, True], ids=["nothing-kept", "commit-kept-answer-lost"])
def test_a_rejection_whose_recording_fails_is_503_and_the_resend_answers_it_with_one_row(
    demo: tuple[str, Runtime], monkeypatch: pytest.MonkeyPatch, committed: bool, shape: str
) -> None:
    # Given a transaction that is rejected (NOT NULL), whose short recording transaction fails once:
    # before its COMMIT, or after a COMMIT whose answer was lost (in either shape: nothing else in the
    # request committed, so shape A is a 503 too, which the reference connectors retry)
    url, rt = demo
    original = rt.db.dialect.commit
    failures: list[bool] = []

    def failing_once(conn: Any) -> None:
        if not failures:
            failures.append(True)
            if committed:
                original(conn)
            raise RetryableError("commit_unknown")
        original(conn)

    monkeypatch.setattr(rt.db.dialect, "commit", failing_once)
    entry = {"op_id": 40, "op": "PUT", "type": "lists", "id": MISSING_LIST, "tx_id": 40, "data": {"name": None}}
    batch: dict[str, Any] = {"batch": [entry]} if shape == "B" else {"transactions": [{"crud": [entry]}]}
    body = {**batch, "client_id": "device-recording"}
    errors_before = _read(url, "powersync_upload_errors")
    # When it is sent, then sent again as the SDK does after a 503
    first = call(body)
    second = call(body)
    # Then the first answer is 503 (no fatal_error without its errors-table row), the resend is the
    # rejection, and the errors table holds exactly one row for it either way
    assert first.status == 503
    assert second.status == 200
    assert second.body["results"][0]["failed_operation"]["error_code"] == "NOT_NULL_VIOLATION"
    assert _read(url, "powersync_upload_errors") == errors_before + 1


@pytest.mark.parametrize("shape", ["A", "B"])
def test_nothing_after_a_rejection_commits_before_the_rejection_is_recorded(
    demo: tuple[str, Runtime], monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    # Given a rejected transaction (NOT NULL) whose recording fails once, followed in the same request
    # by a valid one that creates a list
    url, _ = demo
    original = errors_table.record
    failures: list[bool] = []

    def failing_once(*args: Any, **kwargs: Any) -> errors_table.Recorded:
        if not failures:
            failures.append(True)
            return errors_table.Recorded(committed=False, retry=RetryableError("commit_unknown"))
        return original(*args, **kwargs)

    monkeypatch.setattr(errors_table, "record", failing_once)
    later_list = "a0000000-0000-4000-8000-0000000000fe"
    rejected = {"op_id": 50, "op": "PUT", "type": "lists", "id": MISSING_LIST, "tx_id": 50, "data": {"name": None}}
    valid = {"op_id": 51, "op": "PUT", "type": "lists", "id": later_list, "tx_id": 51, "data": {"name": "later"}}
    if shape == "B":
        body: dict[str, Any] = {"batch": [rejected, valid], "client_id": "device-order"}
    else:
        body = {"transactions": [{"crud": [rejected]}, {"crud": [valid]}], "client_id": "device-order"}

    # When it is sent
    first = call(body)

    # Then the later transaction was not attempted: the client sends both again, in queue order, and the
    # rejection is decided (and stored) before the later one commits
    assert first.status == 503
    assert [r["status"] for r in first.body["results"]] == ["retryable_error", "not_attempted"]
    assert _read(url, "lists", later_list) is None
    second = call(body)
    assert [r["status"] for r in second.body["results"]] == ["fatal_error", "success"]
    assert _read(url, "lists", later_list) is not None
