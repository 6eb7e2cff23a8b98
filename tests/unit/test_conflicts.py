"""Conflict detection, deltas and rules (DESIGN.md section 3, "Conflicts"): the pure core, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from powersync_upload import conflicts
from powersync_upload.config import TableConfig
from powersync_upload.conflicts import Change, Finding
from powersync_upload.errors import ConflictReason, ErrorCode, FatalOpError, Reason
from powersync_upload.schema import INT_RANGES, Column, Kind, TableSchema

COLUMNS = {
    c.name: c
    for c in [
        Column("id", Kind.UUID),
        Column("name", Kind.TEXT, max_length=100),
        Column("code", Kind.TEXT, type_name="char", max_length=6),
        Column("status", Kind.TEXT, max_length=20),
        Column("quantity", Kind.INTEGER, int_range=INT_RANGES["int"]),
        Column("price", Kind.DECIMAL, precision=10, scale=2),
        Column("seen_at", Kind.TIMESTAMP, fraction_digits=3),
        Column("meta", Kind.JSON),
        Column("version", Kind.INTEGER, int_range=INT_RANGES["int"]),
    ]
}
SCHEMA = TableSchema("items", COLUMNS)
ROW = {"name": "widget", "code": "AB    ", "status": "pending", "quantity": 10, "price": Decimal("2.50"), "version": 3}


def _rules(**table: Any) -> conflicts.TableRules:
    return conflicts.compile_rules(TableConfig.model_validate(table), SCHEMA)


PREVIOUS = _rules(conflicts={"detect": "previous_values"}, deltas=["quantity"])
VERSION = _rules(conflicts={"detect": "version", "version_column": "version"})
RULES = _rules(
    rules={
        "frozen_when": {"status": ["shipped"]},
        "transitions": {"status": {"pending": ["packed", "cancelled"], "packed": ["shipped"]}},
    }
)


def _check(rules: conflicts.TableRules, change: Change, row: dict[str, Any] | None = None) -> Finding | None:
    return conflicts.check(ROW if row is None else row, change, rules, COLUMNS)


def test_a_patch_whose_old_value_still_matches_applies() -> None:
    # Given a PATCH of name whose old value is the server's
    change = Change("PATCH", {"name": "widget 2"}, old={"name": "widget"})

    # When / Then no conflict
    assert _check(PREVIOUS, change) is None


def test_a_patch_whose_old_value_no_longer_matches_is_stale_naming_the_first_column_in_data_order() -> None:
    # Given a PATCH of status then name, both stale, and quantity (a delta, never checked)
    change = Change(
        "PATCH",
        {"status": "packed", "name": "mine", "quantity": 3},
        old={"name": "before", "status": "draft", "quantity": 99},
    )

    # When it is checked
    finding = _check(PREVIOUS, change)

    # Then it is stale, names status (first in data), and involves both stale columns only
    assert finding == Finding(ConflictReason.STALE, "status", ("status", "name"))


def test_a_replay_whose_new_value_is_already_there_is_not_stale() -> None:
    # Given the server already holds the PATCH's new value (the same PATCH applied before)
    change = Change("PATCH", {"name": "widget"}, old={"name": "older"})

    # When / Then no conflict: setting a column to its current value is no change at all
    assert _check(PREVIOUS, change) is None


def test_old_keys_the_server_does_not_know_are_not_checked() -> None:
    # Given a PATCH whose old names only other columns
    unknown = Change("PATCH", {"name": "x"}, old={"colour": "red"})

    # When / Then it does not conflict
    assert _check(PREVIOUS, unknown) is None


# ---- missing_previous: entries without previous values at all (the SDKs' reference connectors) -----

PREVIOUS_APPLY = _rules(conflicts={"detect": "previous_values", "missing_previous": "apply"}, deltas=["quantity"])
PREVIOUS_REJECT = _rules(conflicts={"detect": "previous_values", "missing_previous": "reject"})
VERSION_APPLY = _rules(conflicts={"detect": "version", "version_column": "version", "missing_previous": "apply"})


@pytest.mark.parametrize(
    ("rules", "change"),
    [
        (PREVIOUS_REJECT, Change("PATCH", {"name": "x"})),
        (VERSION, Change("PATCH", {"name": "x"})),
        (VERSION, Change("PUT", {"name": "x"})),
    ],
    ids=["previous_values-reject-patch", "version-patch", "version-put-of-existing-row"],
)
def test_a_change_without_any_previous_values_is_rejected_saying_the_connector_sent_none(
    rules: conflicts.TableRules, change: Change
) -> None:
    # Given a version table (missing_previous unset: reject) or a previous_values table with
    # missing_previous: reject, and an entry that carries none (old absent: what the reference
    # connectors send)
    # When it is checked against the existing row
    with pytest.raises(FatalOpError) as caught:
        _check(rules, change)

    # Then it is INVALID_DATA needs_previous_value, and the message says the connector sent none and
    # how to fix it (no silent lost update)
    assert (caught.value.code, caught.value.reason) == (ErrorCode.INVALID_DATA, Reason.NEEDS_PREVIOUS_VALUE)
    assert "the connector sent no previous values" in caught.value.message
    assert "missing_previous: apply" in caught.value.message


def test_by_default_a_previous_values_patch_without_any_previous_values_is_applied_unchecked() -> None:
    # Given a previous_values table with missing_previous unset, and a PATCH without old at all,
    # against a row whose name someone else changed
    change = Change("PATCH", {"name": "mine"})
    row = {**ROW, "name": "someone else's"}

    # When it is checked
    finding = _check(PREVIOUS, change, row)

    # Then nothing is found (DESIGN: a PATCH without old is not checked) and the skipped check is
    # named for the CONFLICT_UNCHECKED warning, so it is not silent
    assert finding is None
    assert conflicts.unchecked(change, PREVIOUS) == "name"


def test_by_default_a_delta_without_any_previous_values_is_rejected_and_never_unchecked() -> None:
    # Given a previous_values table with a delta column, missing_previous unset
    change = Change("PATCH", {"quantity": 4})

    # When / Then the delta cannot be computed: it needs old (rejected before any read), never a warning
    assert conflicts.needs_old(change, PREVIOUS) == "quantity"
    assert conflicts.unchecked(change, PREVIOUS) is None


def test_a_delta_without_any_previous_values_says_the_connector_sent_none_and_one_with_some_does_not() -> None:
    # Given a PATCH of a delta column without old at all, and one whose old lacks that column
    none_sent = Change("PATCH", {"quantity": 1})
    some_sent = Change("PATCH", {"quantity": 1}, old={"name": "widget"})

    # When / Then both need a previous value; only the first names the connector as the cause
    assert conflicts.missing_hint(none_sent) == conflicts.NO_PREVIOUS_VALUES
    assert conflicts.missing_hint(some_sent) is None
    with pytest.raises(FatalOpError) as caught:
        conflicts.delta_values(ROW, some_sent, PREVIOUS_APPLY)
    assert "connector sent no previous values" not in caught.value.message


@pytest.mark.parametrize(
    ("rules", "change", "column"),
    [
        (PREVIOUS_APPLY, Change("PATCH", {"name": "x"}), "name"),
        (VERSION_APPLY, Change("PATCH", {"name": "x"}), "version"),
        (VERSION_APPLY, Change("PUT", {"name": "x"}), "version"),
        (PREVIOUS_APPLY, Change("PATCH", {"quantity": 4}), "quantity"),
    ],
    ids=["previous_values", "version-patch", "version-put", "delta"],
)
def test_with_apply_a_change_without_any_previous_values_is_unchecked(
    rules: conflicts.TableRules, change: Change, column: str
) -> None:
    # Given missing_previous: apply and an entry without previous values, against a row whose version
    # and name differ from anything the client saw
    row = {**ROW, "version": 99, "name": "someone else's"}

    # When it is checked
    finding = _check(rules, change, row)

    # Then nothing is found, a delta takes the value sent (no previous value to subtract), and the
    # column whose check was skipped is named for the CONFLICT_UNCHECKED warning
    assert finding is None
    assert conflicts.needs_old(change, rules) is None
    assert conflicts.delta_values(row, change, rules) == {}
    assert conflicts.unchecked(change, rules) == column


def test_with_apply_a_change_that_sent_previous_values_is_still_checked() -> None:
    # Given missing_previous: apply and a stale PATCH that does carry old
    change = Change("PATCH", {"name": "mine"}, old={"name": "before"})

    # When / Then it is a conflict as usual, and nothing is unchecked
    assert _check(PREVIOUS_APPLY, change) == Finding(ConflictReason.STALE, "name", ("name",))
    assert conflicts.unchecked(change, PREVIOUS_APPLY) is None
    assert conflicts.unchecked(Change("DELETE", {}), PREVIOUS_APPLY) is None


@pytest.mark.parametrize(
    ("column", "server", "old", "equal"),
    [
        ("name", "Widget", "widget", False),
        ("name", "widget ", "widget", False),
        ("code", "AB    ", "AB", True),
        ("quantity", 10, "10", True),
        ("price", Decimal("2.50"), "2.5", True),
        ("price", Decimal("2.50"), "2.51", False),
        ("seen_at", datetime(2026, 1, 1, 10, 0, 0), "2026-01-01T12:00:00.0004+02:00", True),
        ("seen_at", datetime(2026, 1, 1, 10, 0, 0), "2026-01-01T10:00:00.001Z", False),
        ("meta", {"a": [1, 2]}, '{ "a": [1, 2] }', True),
        ("meta", '{"a": 1}', '{"a": 2}', False),
        ("name", None, None, True),
        ("name", None, "", False),
    ],
    ids=[
        "text-case",
        "text-trailing-space",
        "char-padding",
        "number-as-text",
        "decimal-scale",
        "decimal-differs",
        "timestamp-instant-at-precision",
        "timestamp-differs",
        "json-parsed",
        "json-differs",
        "null-null",
        "null-empty",
    ],
)
def test_equality_is_exact_on_converted_values(column: str, server: Any, old: Any, equal: bool) -> None:
    # Given a server value and a client old value of one column
    col = COLUMNS[column]

    # When / Then they are equal exactly as DESIGN section 3 says
    assert conflicts.same(server, old, col) is equal


def test_version_the_client_saw_from_old_or_data_must_match() -> None:
    # Given the row at version 3
    matching_old = Change("PATCH", {"name": "x"}, old={"version": 1}, version_seen=3)
    stale = Change("PATCH", {"name": "x"}, version_seen="2")

    # When / Then the version it saw decides; a mismatch involves the version and the changed columns
    assert _check(VERSION, matching_old) is None
    assert _check(VERSION, stale) == Finding(ConflictReason.VERSION, "version", ("version", "name"))


def test_an_update_without_the_version_it_saw_needs_a_previous_value() -> None:
    # Given an update of an existing row that sends no version
    change = Change("PUT", {"name": "x"})

    # When / Then it is INVALID_DATA needs_previous_value; an insert (no row) is not checked
    with pytest.raises(FatalOpError) as caught:
        _check(VERSION, change)
    assert (caught.value.code, caught.value.reason) == (ErrorCode.INVALID_DATA, Reason.NEEDS_PREVIOUS_VALUE)
    assert conflicts.check(None, change, VERSION, COLUMNS) is None


def test_a_delete_is_never_a_conflict_but_a_frozen_row_refuses_it() -> None:
    # Given a DELETE with a stale version, and a DELETE of a shipped row
    delete = Change("DELETE", {})

    # When / Then deletes win over detection; frozen rows still refuse any change
    assert _check(VERSION, delete, {**ROW, "version": 99}) is None
    assert _check(RULES, delete, {**ROW, "status": "shipped"}) == Finding(ConflictReason.FROZEN, "status", ("status",))


def test_a_frozen_row_refuses_a_change_but_not_a_write_of_its_current_values() -> None:
    # Given a shipped row
    shipped = {**ROW, "status": "shipped"}

    # When / Then editing its name is refused; writing its status as it is changes nothing
    assert _check(RULES, Change("PATCH", {"name": "edited"}), shipped) == Finding(
        ConflictReason.FROZEN, "status", ("status", "name")
    )
    assert _check(RULES, Change("PATCH", {"status": "shipped"}), shipped) is None


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "packed", True),
        ("packed", "pending", False),
        ("cancelled", "pending", False),
        (None, "shipped", True),
    ],
    ids=["listed", "not-listed", "terminal-state", "null-allows-any"],
)
def test_transitions_allow_only_the_listed_moves(current: str | None, new: str, allowed: bool) -> None:
    # Given a row in the current state and a PATCH of status
    finding = _check(RULES, Change("PATCH", {"status": new}), {**ROW, "status": current})

    # When / Then only a listed move (or any move from NULL) is allowed
    assert (finding is None) is allowed
    if not allowed:
        assert finding == Finding(ConflictReason.TRANSITION, "status", ("status",))


def test_rule_values_are_converted_like_client_values() -> None:
    # Given a transition rule on an integer column written in YAML as text and numbers
    rules = _rules(rules={"transitions": {"quantity": {"10": ["11", 12]}}})

    # When / Then 10 -> 11 and 10 -> "12" are allowed, 10 -> 13 is not
    assert _check(rules, Change("PATCH", {"quantity": 11})) is None
    assert _check(rules, Change("PATCH", {"quantity": 12})) is None
    assert _check(rules, Change("PATCH", {"quantity": 13})) is not None


def test_a_delta_adds_new_minus_old_to_the_current_value() -> None:
    # Given a current quantity of 8 (another device sold two) and this device's sale of one (10 -> 9)
    change = Change("PATCH", {"quantity": 9}, old={"quantity": "10"})

    # When the delta is computed / Then 8 + (9 - 10) = 7 is written; NULL stays NULL
    assert conflicts.delta_values({**ROW, "quantity": 8}, change, PREVIOUS) == {"quantity": 7}
    assert conflicts.delta_values({**ROW, "quantity": None}, change, PREVIOUS) == {"quantity": None}


def test_a_delta_is_written_as_its_increment_once_the_sum_is_checked() -> None:
    # Given a current quantity of 8 and a sale of one (10 -> 9), and a sale that would pass the int range
    sale = Change("PATCH", {"quantity": 9}, old={"quantity": "10"})
    too_much = Change("PATCH", {"quantity": 2**31 - 1}, old={"quantity": 0})

    # When / Then the write adds 9 - 10 (whatever the current value); a PUT, and a delta written
    # unchecked (no previous values at all, missing_previous: apply), add nothing: they set the value
    assert conflicts.delta_increments({**ROW, "quantity": 8}, sale, PREVIOUS) == {"quantity": -1}
    assert conflicts.delta_increments({**ROW, "quantity": None}, sale, PREVIOUS) == {"quantity": -1}
    assert conflicts.delta_increments(ROW, Change("PUT", {"quantity": 1}), PREVIOUS) == {}
    assert conflicts.delta_increments(ROW, Change("PATCH", {"quantity": 3}), PREVIOUS_APPLY) == {}

    # And a sum out of the column's range is still refused before any write
    with pytest.raises(FatalOpError) as caught:
        conflicts.delta_increments({**ROW, "quantity": 5}, too_much, PREVIOUS)
    assert caught.value.reason is Reason.OUT_OF_RANGE


def test_a_delta_without_a_previous_value_is_invalid_data() -> None:
    # Given PATCHes of a delta column without old, and with a null old
    for old in (None, {"quantity": None}):
        change = Change("PATCH", {"quantity": 1}, old=old)

        # When / Then it needs a previous value, before and after the row is read
        assert conflicts.needs_old(change, PREVIOUS) == "quantity"
        with pytest.raises(FatalOpError) as caught:
            conflicts.delta_values(ROW, change, PREVIOUS)
        assert caught.value.reason is Reason.NEEDS_PREVIOUS_VALUE


def test_a_put_overwrites_delta_columns() -> None:
    # Given a PUT that sets quantity
    change = Change("PUT", {"quantity": 1, "name": "n"})

    # When / Then no delta is computed and no previous value is needed
    assert conflicts.delta_values(ROW, change, PREVIOUS) == {}
    assert conflicts.needs_old(change, PREVIOUS) is None


def test_a_delta_result_outside_the_column_range_is_out_of_range() -> None:
    # Given a current value near the integer limit and a large increment
    change = Change("PATCH", {"quantity": 2**31 - 1}, old={"quantity": 0})

    # When / Then the result is INVALID_DATA out_of_range
    with pytest.raises(FatalOpError) as caught:
        conflicts.delta_values({**ROW, "quantity": 5}, change, PREVIOUS)
    assert caught.value.reason is Reason.OUT_OF_RANGE


def test_the_row_after_an_operation_is_what_the_next_check_sees() -> None:
    # Given the row, a PATCH that wrote status, a DELETE, and a PATCH of a missing row
    patched = conflicts.after(ROW, Change("PATCH", {"status": "packed"}), {"status": "packed"})

    # When / Then the next check sees the written values, no row after a DELETE, nothing created by PATCH
    assert patched == {**ROW, "status": "packed"}
    assert conflicts.after(ROW, Change("DELETE", {}), {}) is None
    assert conflicts.after(None, Change("PATCH", {"name": "x"}), {"name": "x"}) is None
    assert _check(RULES, Change("PATCH", {"status": "pending"}), patched) is not None


def test_a_table_without_conflict_configuration_needs_no_read() -> None:
    # Given a table with no conflicts, deltas or rules / When compiled / Then nothing is checked
    rules = _rules()
    assert not rules.active
    assert _check(rules, Change("PATCH", {"name": "x"}, old={"name": "y"})) is None


def test_values_recorded_for_the_app_are_json() -> None:
    # Given driver values of several types / When made JSON-safe / Then they are text or numbers
    when = datetime(2026, 1, 1, tzinfo=UTC)
    ident = uuid.UUID(int=1)
    assert [conflicts.json_safe(v) for v in (when, Decimal("2.50"), ident, 3, None, timedelta(hours=1))] == [
        "2026-01-01T00:00:00+00:00",
        "2.50",
        str(ident),
        3,
        None,
        "1:00:00",
    ]
