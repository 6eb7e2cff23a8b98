"""Conflicts recorded for the app, against real databases (DESIGN.md section 3, "Conflicts").

Each test loads the product's migrations and the shared ``shop`` fixture (items with previous-value
detection, deltas and rules; tags with ``on_conflict: skip``) into a fresh database of every dialect
that runs here, and talks to the real Lambda handler.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from tests.support import (
    FIXTURES,
    USERS,
    RowReader,
    available_dialects,
    call,
    install_runtime,
    reset_database,
    stored_row,
)

WIDGET = "c0000000-0000-0000-0000-000000000001"
GADGET = "c0000000-0000-0000-0000-000000000002"  # shipped: frozen
TAG = "e0000000-0000-0000-0000-000000000001"
OTHERS = "c0000000-0000-0000-0000-0000000000aa"  # an item of U2's


def _migrations(dialect: str) -> list[Path]:
    return [p for p in schema_scripts(dialect) if "migrations" in p.parts]


@pytest.fixture(params=available_dialects())
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    dialect = request.param
    url = reset_database(dialect, [*_migrations(dialect), FIXTURES / f"shop.{dialect}.sql"], tmp_path)
    _insert_item(url, OTHERS, USERS["U2"], "theirs")
    rt = install_runtime(url, FIXTURES / "shop.upload.yaml")
    yield url, rt
    rt.db.discard()
    set_runtime(None)


def _conflicts(url: str) -> list[dict[str, Any]]:
    reader = RowReader(url)
    try:
        cursor = reader.conn.cursor()
        cursor.execute("SELECT * FROM powersync_upload_conflicts ORDER BY created_at")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        reader.conn.rollback()
        return rows
    finally:
        reader.close()


def _sql(url: str, statement: str) -> None:
    reader = RowReader(url)
    try:
        reader.execute(statement)
    finally:
        reader.close()


def _patch(
    row: str, data: dict[str, Any], old: dict[str, Any] | None = None, op_id: int = 1, table: str = "items"
) -> dict[str, Any]:
    entry: dict[str, Any] = {"op_id": op_id, "op": "PATCH", "type": table, "id": row, "tx_id": op_id, "data": data}
    if old is not None:
        entry["old"] = old
    return entry


def test_a_rejected_conflict_records_both_versions_and_answers_its_id_without_values(
    shop: tuple[str, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    # Given the server renamed the widget after the device last synced it
    url, _ = shop
    _sql(url, f"UPDATE items SET name = 'renamed on server' WHERE id = '{WIDGET}'")

    # When the device's offline rename arrives with the old value it saw
    with caplog.at_level(logging.DEBUG):
        response = call(
            {"batch": [_patch(WIDGET, {"name": "mine"}, {"name": "widget"}, op_id=4)], "client_id": "dev-1"}
        )

    # Then it is a CONFLICT naming its conflicts row, which holds what the app needs to show both versions
    failed = response.body["results"][0]["failed_operation"]
    assert (failed["error_code"], failed["details"]["reason"], failed["details"]["column"]) == (
        "CONFLICT",
        "stale",
        "name",
    )
    [row] = _conflicts(url)
    assert row["id"] == failed["details"]["conflict_id"]
    assert (str(row["user_id"]), row["client_id"], row["transaction_id"], row["op_id"]) == (USERS["U1"], "dev-1", 4, 4)
    assert (row["table_name"], str(row["row_id"]).lower(), row["reason"], int(row["resolved"])) == (
        "items",
        WIDGET,
        "stale",
        0,
    )
    assert json.loads(row["client_values"]) == {"name": "mine"}
    assert json.loads(row["server_values"]) == {"name": "renamed on server"}
    # And neither the response nor the logs carry a value
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    for value in ("mine", "renamed on server"):
        assert value not in json.dumps(response.body)
        assert value not in logged


def test_a_replayed_conflict_answers_the_same_conflict_id_and_records_it_once(shop: tuple[str, Runtime]) -> None:
    # Given a rejected conflict sent with a client id
    url, _ = shop
    _sql(url, f"UPDATE items SET name = 'renamed on server' WHERE id = '{WIDGET}'")
    body = {"batch": [_patch(WIDGET, {"name": "mine"}, {"name": "widget"})], "client_id": "dev-1"}
    first = call(body)

    # When it is sent again / Then the same result, conflict id included, and one conflicts row
    assert call(body).body == first.body
    assert len(_conflicts(url)) == 1


def test_a_skipped_conflict_warns_with_the_id_of_its_row_and_commits_the_rest(shop: tuple[str, Runtime]) -> None:
    # Given a tag changed on the server (tags: on_conflict skip)
    url, _ = shop
    _sql(url, f"UPDATE tags SET label = 'blue' WHERE id = '{TAG}'")

    # When a stale PATCH of it and a PUT of a new tag arrive in one transaction
    new_tag = "e0000000-0000-0000-0000-000000000009"
    put = {"op_id": 2, "op": "PUT", "type": "tags", "id": new_tag, "tx_id": 1, "data": {"label": "new"}}
    response = call({"batch": [_patch(TAG, {"label": "green"}, {"label": "red"}, table="tags"), put]})

    # Then the transaction commits with CONFLICT_SKIPPED on the PATCH, whose conflict_id names the row
    [warning] = response.body["results"][0]["warnings"]
    assert (warning["code"], warning["operation_index"], warning["details"]["reason"]) == (
        "CONFLICT_SKIPPED",
        0,
        "stale",
    )
    [row] = _conflicts(url)
    assert row["id"] == warning["details"]["conflict_id"]
    assert json.loads(row["server_values"]) == {"label": "blue"}
    assert stored_row(url, "tags", new_tag)["label"] == "new"
    assert stored_row(url, "tags", TAG)["label"] == "blue"


def test_a_conflict_on_another_users_row_is_unauthorized_and_records_nothing(shop: tuple[str, Runtime]) -> None:
    # Given an item of U2's, and U1's PATCH of it with an old value that does not match
    url, _ = shop

    # When U1 sends it
    response = call({"batch": [_patch(OTHERS, {"name": "mine"}, {"name": "not theirs"})]})

    # Then ownership is checked first: UNAUTHORIZED, and the conflicts table holds nothing of U2's row
    assert response.body["results"][0]["failed_operation"]["error_code"] == "UNAUTHORIZED"
    assert _conflicts(url) == []


def test_server_values_are_limited_to_the_columns_the_table_allows(shop: tuple[str, Runtime], tmp_path: Path) -> None:
    # Given items that clients may only rename (columns: [name]) and a frozen rule on status
    url, rt = shop
    config = tmp_path / "upload.yaml"
    config.write_text(
        "tables:\n  items:\n    owner: owner_id\n    columns: [name]\n    rules: {frozen_when: {status: [shipped]}}\n",
        encoding="utf-8",
    )
    rt.db.discard()
    install_runtime(url, config)

    # When the shipped gadget is renamed
    response = call({"batch": [_patch(GADGET, {"name": "edited"})]})

    # Then it is refused as frozen, and the recorded server values leave out status (not allowed)
    assert response.body["results"][0]["failed_operation"]["details"]["reason"] == "frozen"
    [row] = _conflicts(url)
    assert json.loads(row["server_values"]) == {"name": "gadget"}
    assert json.loads(row["client_values"]) == {"name": "edited"}


def test_the_app_marks_its_own_conflict_resolved_without_configuration(shop: tuple[str, Runtime]) -> None:
    # Given a conflict of U1's
    url, _ = shop
    response = call({"batch": [_patch(GADGET, {"name": "edited"})]})
    conflict_id = response.body["results"][0]["failed_operation"]["details"]["conflict_id"]

    # When U2 tries to resolve it, U1 changes another column of it, and U1 marks it resolved
    by_other = call({"batch": [_patch(conflict_id, {"resolved": 1}, table="powersync_upload_conflicts")]}, "U2")
    other_column = call(
        {"batch": [_patch(conflict_id, {"reason": "none", "resolved": 1}, table="powersync_upload_conflicts")]}
    )
    resolved = call({"batch": [_patch(conflict_id, {"resolved": 1}, table="powersync_upload_conflicts")]})

    # Then only U1's PATCH of resolved is accepted
    assert by_other.body["results"][0]["failed_operation"]["error_code"] == "UNAUTHORIZED"
    assert other_column.body["results"][0]["failed_operation"]["error_code"] == "UNAUTHORIZED"
    assert resolved.body["results"] == [{"status": "success"}]
    [row] = _conflicts(url)
    assert (int(row["resolved"]), row["reason"]) == (1, "frozen")


def _insert_item(url: str, row: str, owner: str, name: str) -> None:
    columns = "id, owner_id, name, status, quantity"
    _sql(url, f"INSERT INTO items ({columns}) VALUES ('{row}', '{owner}', '{name}', 'pending', 10)")


def _more_items(url: str, *ids: str) -> None:
    for row in ids:
        _insert_item(url, row, USERS["U1"], "n")


def test_the_rows_of_a_planned_batch_are_read_once_and_each_gets_its_own_delta(
    shop: tuple[str, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three items with quantity 10, and a count of the current-row reads
    url, rt = shop
    rows = [f"c0000000-0000-0000-0000-00000000010{i}" for i in range(3)]
    _more_items(url, *rows)
    reads: list[int] = []
    original = rt.db.dialect.select_rows
    monkeypatch.setattr(rt.db.dialect, "select_rows", lambda *a, **k: reads.append(len(a[3])) or original(*a, **k))

    # When three client transactions each sell some of one item (deltas with old)
    batch = [_patch(row, {"quantity": 10 - n - 1}, {"quantity": 10}, op_id=n + 1) for n, row in enumerate(rows)]
    response = call({"batch": batch})

    # Then all succeed, each row got its own delta, and the fast path read the three rows in one statement
    assert [r["status"] for r in response.body["results"]] == ["success"] * 3
    assert [stored_row(url, "items", row)["quantity"] for row in rows] == [9, 8, 7]
    assert reads == [3]


@pytest.mark.parametrize("count", [1, 3], ids=["one operation", "a planned batch"])
def test_a_delta_is_added_to_the_stored_total_even_after_a_stale_read(
    shop: tuple[str, Runtime], monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    # Given items whose stored quantity is 50, but whose locking read reports 10 (a lock that did not
    # hold: another writer changed the rows after the read, as on an engine that ignores lock hints)
    url, rt = shop
    rows = [f"c0000000-0000-0000-0000-00000000030{i}" for i in range(count)]
    _more_items(url, *rows)
    _sql(url, "UPDATE items SET quantity = 50 WHERE name = 'n'")
    original = rt.db.dialect.select_rows

    def stale(*args: Any, **kwargs: Any) -> Any:
        return [(key, {**values, "quantity": 10}) for key, values in original(*args, **kwargs)]

    monkeypatch.setattr(rt.db.dialect, "select_rows", stale)

    # When each of `count` client transactions sells one (10 -> 9, a delta with old)
    response = call(
        {"batch": [_patch(row, {"quantity": 9}, {"quantity": 10}, op_id=n + 1) for n, row in enumerate(rows)]}
    )

    # Then each stored total went down by one from what was stored (never back to 9, the stale result)
    assert [r["status"] for r in response.body["results"]] == ["success"] * count
    assert [stored_row(url, "items", row)["quantity"] for row in rows] == [49] * count


def test_a_stale_patch_among_grouped_transactions_rejects_only_its_own(shop: tuple[str, Runtime]) -> None:
    # Given two more items, and the widget renamed on the server
    url, _ = shop
    rows = ["c0000000-0000-0000-0000-000000000201", "c0000000-0000-0000-0000-000000000202"]
    _more_items(url, *rows)
    _sql(url, f"UPDATE items SET name = 'renamed on server' WHERE id = '{WIDGET}'")

    # When four transactions arrive: two deltas, a stale rename of the widget, then a delta on the widget
    batch = [
        _patch(rows[0], {"quantity": 9}, {"quantity": 10}, op_id=1),
        _patch(rows[1], {"quantity": 9}, {"quantity": 10}, op_id=2),
        _patch(WIDGET, {"name": "mine"}, {"name": "widget"}, op_id=3),
        _patch(WIDGET, {"quantity": 8}, {"quantity": 10}, op_id=4),
    ]
    response = call({"batch": batch})

    # Then only the stale rename is rejected, as CONFLICT on its own operation; the rest applied
    results = response.body["results"]
    assert [r["status"] for r in results] == ["success", "success", "fatal_error", "success"]
    assert results[2]["failed_operation"]["details"]["reason"] == "stale"
    assert stored_row(url, "items", WIDGET)["name"] == "renamed on server"
    assert stored_row(url, "items", WIDGET)["quantity"] == 8
    assert [stored_row(url, "items", row)["quantity"] for row in rows] == [9, 9]
    assert len(_conflicts(url)) == 1


def test_a_configuration_that_does_not_fit_the_schema_refuses_only_that_table(
    shop: tuple[str, Runtime], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a delta on a text column (valid YAML; only the schema shows the mistake)
    url, rt = shop
    config = tmp_path / "upload.yaml"
    config.write_text(
        "tables:\n  items:\n    owner: owner_id\n    deltas: [name]\n  tags:\n    owner: owner_id\n", encoding="utf-8"
    )
    rt.db.discard()
    install_runtime(url, config)

    # When an item and a tag are written
    with caplog.at_level(logging.ERROR):
        items = call({"batch": [_patch(WIDGET, {"name": "x"}, {"name": "widget"})]})
        tags = call({"batch": [_patch(TAG, {"label": "green"}, table="tags")]})

    # Then the item is SCHEMA_MISMATCH, the problem is logged naming the key, and tags still work
    assert items.body["results"][0]["failed_operation"]["error_code"] == "SCHEMA_MISMATCH"
    assert tags.body["results"] == [{"status": "success"}]
    assert any("tables.items.deltas" in str(getattr(r, "problems", "")) for r in caplog.records)


def test_a_transaction_that_ships_an_item_and_then_edits_it_is_refused_at_the_edit(shop: tuple[str, Runtime]) -> None:
    # Given a pending widget
    url, _ = shop

    # When one transaction packs it, ships it, then renames it (each PATCH with the previous values the
    # SDK tracks)
    steps = [
        ({"status": "packed"}, {"status": "pending"}),
        ({"status": "shipped"}, {"status": "packed"}),
        ({"name": "renamed after shipping"}, {"name": "widget"}),
    ]
    batch = [{**_patch(WIDGET, data, old, op_id=n + 1), "tx_id": 1} for n, (data, old) in enumerate(steps)]
    response = call({"batch": batch})

    # Then the rename is refused as frozen by the status the transaction itself set; nothing of it stays
    failed = response.body["results"][0]["failed_operation"]
    assert (failed["error_code"], failed["operation_index"], failed["details"]["reason"]) == ("CONFLICT", 2, "frozen")
    assert stored_row(url, "items", WIDGET)["status"] == "pending"


NOTE = "d0000000-0000-0000-0000-000000000001"


def _reference_patch(table: str, row: str, data: dict[str, Any]) -> dict[str, Any]:
    """One PATCH as the reference connectors send it: shape A, no previous values, op_id or client id."""
    return {"transactions": [{"crud": [{"op": "PATCH", "table": table, "id": row, "op_data": data}]}]}


@pytest.mark.parametrize(
    ("table", "row", "data"),
    [("items", WIDGET, {"quantity": 7}), ("notes", NOTE, {"body": "mine"})],
    ids=["delta", "version"],
)
def test_by_default_a_reference_connectors_patch_is_rejected_saying_no_previous_values_were_sent(
    shop: tuple[str, Runtime], table: str, row: str, data: dict[str, Any]
) -> None:
    # Given the shop fixture (items: previous_values and a quantity delta; notes: version), with
    # missing_previous unset (reject where the write cannot be computed without them)
    url, _ = shop
    before = _row(url, table, row)
    # When a connector written the reference way sends a PATCH without previous values
    response = call(_reference_patch(table, row, data))
    # Then it is fatal INVALID_DATA needs_previous_value, its message says the connector sent no
    # previous values and how to fix it, and the row is unchanged
    result = response.body["results"][0]
    assert result["failed_operation"]["error_code"] == "INVALID_DATA"
    assert result["failed_operation"]["details"]["reason"] == "needs_previous_value"
    assert "the connector sent no previous values" in result["message"]
    assert _row(url, table, row) == before


def test_by_default_a_reference_connectors_patch_of_a_previous_values_column_is_applied_with_a_warning(
    shop: tuple[str, Runtime],
) -> None:
    # Given the shop fixture (items: detect previous_values), missing_previous unset
    url, _ = shop
    # When a connector written the reference way sends a PATCH of a checked column without old
    response = call(_reference_patch("items", WIDGET, {"name": "mine"}))
    # Then it commits unchecked (DESIGN: a PATCH without old is not checked), and the warning
    # CONFLICT_UNCHECKED names the column whose check was skipped, so the app can see it
    assert response.body["results"] == [
        {
            "status": "success",
            "warnings": [
                {"operation_index": 0, "code": "CONFLICT_UNCHECKED", "details": {"table": "items", "column": "name"}}
            ],
        }
    ]
    assert _row(url, "items", WIDGET)["name"] == "mine"


def _row(url: str, table: str, row: str) -> dict[str, Any]:
    found = stored_row(url, table, row)
    assert found is not None
    return found


def test_with_missing_previous_apply_the_patches_are_applied_unchecked_with_a_warning(
    shop: tuple[str, Runtime], tmp_path: Path
) -> None:
    # Given items and notes configured with missing_previous: apply
    url, rt = shop
    config = tmp_path / "upload.yaml"
    config.write_text(
        "tables:\n"
        "  items:\n    owner: owner_id\n    deltas: [quantity]\n"
        "    conflicts: {detect: previous_values, missing_previous: apply}\n"
        "  notes:\n    owner: owner_id\n"
        "    conflicts: {detect: version, version_column: version, missing_previous: apply}\n",
        encoding="utf-8",
    )
    rt.db.discard()
    install_runtime(url, config)
    # When a reference connector's PATCHes (no previous values) arrive for a delta, a checked column
    # and a versioned row
    answers = [
        call(_reference_patch("items", WIDGET, {"quantity": 7, "name": "mine"})),
        call(_reference_patch("notes", NOTE, {"body": "mine"})),
    ]
    # Then each commits with one CONFLICT_UNCHECKED warning naming the table and the unchecked column
    warnings = [a.body["results"][0]["warnings"] for a in answers]
    assert warnings == [
        [{"operation_index": 0, "code": "CONFLICT_UNCHECKED", "details": {"table": "items", "column": "quantity"}}],
        [{"operation_index": 0, "code": "CONFLICT_UNCHECKED", "details": {"table": "notes", "column": "version"}}],
    ]
    # And the delta column took the value sent (last write wins), the version was still incremented
    item, note = _row(url, "items", WIDGET), _row(url, "notes", NOTE)
    assert (item["quantity"], item["name"]) == (7, "mine")
    assert (note["body"], int(note["version"])) == ("mine", 2)
