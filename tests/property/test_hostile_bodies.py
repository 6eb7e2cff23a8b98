"""Property: no body a client can send makes the handler fail (5xx) or touch a table outside the
configuration.

Against the real Lambda handler on a SQLite database with the demo schema, the shipped ``upload.yaml``
and one extra table, ``unlisted``, that the configuration does not name: arbitrary JSON documents,
arbitrary text and bytes, and valid batches mutated (wrong types, missing and extra keys, random ops,
tables, ids, column names and values). Every answer is one of the contract's statuses (200, 400, 401,
413, 503), a 200 body is a valid ``UploadResponse`` with one result per transaction, ``unlisted`` keeps
its rows and no table is created or dropped.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from powersync_upload.contract import UploadResponse
from powersync_upload.handler import Runtime, lambda_handler, set_runtime
from powersync_upload.local import LocalContext, schema_scripts
from tests.property.counts import record
from tests.support import ROOT, USERS, authorization, event, install_runtime, reset_database

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
STATUSES = {200, 400, 401, 413, 503}
EXAMPLES = 250
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UNLISTED_ROWS = [("u1", "keep me", 1), ("u2", "'; DROP TABLE unlisted; --", 2)]
LIST_ID = "a0000000-0000-4000-8000-0000000000a1"


class Fixture:
    """The database, the runtime installed for it, and what must never change."""

    def __init__(self, path: Path, rt: Runtime) -> None:
        self.path = path
        self.rt = rt
        self.tables = self._tables()

    def _tables(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.path) as conn:
            return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()

    def unlisted(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return conn.execute("SELECT id, note, n FROM unlisted ORDER BY id").fetchall()

    def check_untouched(self) -> None:
        assert self.unlisted() == UNLISTED_ROWS, "a table outside the configuration changed"
        assert self._tables() == self.tables, "a table or index was created or dropped"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    url = reset_database("sqlite", schema_scripts("sqlite"), tmp_path_factory.mktemp("hostile"))
    path = Path(url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE unlisted (id TEXT PRIMARY KEY, note TEXT, n INTEGER)")
        conn.executemany("INSERT INTO unlisted VALUES (?, ?, ?)", UNLISTED_ROWS)
        conn.execute(
            "INSERT INTO lists (id, owner_id, name) VALUES (?, ?, 'seed')",
            (LIST_ID, USERS["U1"]),
        )
    rt = install_runtime(url, CONFIG)
    yield Fixture(path, rt)
    rt.db.discard()
    set_runtime(None)


def send(fixture: Fixture, text: str, user: str | None, *, base64_body: bool = False) -> dict[str, Any]:
    set_runtime(fixture.rt)
    request = event(text, authorization(user))
    if base64_body:
        request["isBase64Encoded"] = True
    return lambda_handler(request, LocalContext())  # type: ignore[arg-type]


def check_response(out: dict[str, Any], transactions: int | None = None) -> None:
    status = int(out["statusCode"])
    assert status in STATUSES, f"status {status}: {out.get('body')!r:.300}"
    note_event(f"HTTP {status}")
    body = json.loads(out.get("body") or "null")
    if status in (200, 503):
        results = UploadResponse.model_validate(body).results
        if transactions is not None:
            assert len(results) == transactions
        for result in results:
            failed = getattr(result, "failed_operation", None)
            note_event(f"result {result.status}" + (f" {failed.error_code}" if failed else ""))
    else:
        assert isinstance(body, dict) and isinstance(body.get("message"), str)


# ---- strategies ----------------------------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "1", "true", "2024-01-01T00:00:00Z", "1e400", "NaN", "\x00", "'", '"', "]", "`"])
)
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
users = st.sampled_from(["U1"] * 8 + ["U2", None, "garbage", "expired"])
ops = st.sampled_from(["PUT"] * 8 + ["PATCH"] * 6 + ["DELETE"] * 4 + ["put", "MERGE", "", "DELETE ", "INSERT"])
tables = st.sampled_from(
    ["lists"] * 10
    + ["todos"] * 10
    + ["unlisted", "powersync_upload_errors", "sqlite_master", "LISTS", "lists ", "main.unlisted", '"unlisted"']
) | st.text(min_size=1, max_size=20)
ids = (
    st.sampled_from([LIST_ID, str(uuid.UUID(int=1)), LIST_ID.upper()])
    | st.uuids().map(str)
    | st.text(min_size=1, max_size=40)
)
columns = st.sampled_from(
    ["name", "owner_id", "id", "description", "list_id", "completed", "priority", "amount", "tags", "created_at"]
) | st.sampled_from(["completed_at", "rowid", "_rowid_", "oid", "NAME", "note", "n", "owner_id "])
random_data = st.dictionaries(columns | st.text(max_size=12), json_values, max_size=5)
plausible_values = {
    "name": st.text(max_size=30) | st.sampled_from(["Groceries", "Work"]),
    "description": st.text(max_size=30),
    "list_id": st.sampled_from([LIST_ID, LIST_ID.upper(), str(uuid.UUID(int=2))]),
    "completed": st.sampled_from([0, 1, True, False, "1", "true", 2, None]),
    "priority": st.integers(min_value=-(2**40), max_value=2**40) | st.none(),
    "amount": st.decimals(allow_nan=False, allow_infinity=False, places=3).map(float) | st.sampled_from(["12.34"]),
    "tags": json_values,
    "created_at": st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01 10:00", "yesterday", 0]),
    "owner_id": st.sampled_from([USERS["U1"], USERS["U2"]]),
}
plausible_data = st.fixed_dictionaries(
    {},
    optional={k: v for k, v in plausible_values.items()},  # noqa: C416 - optional needs a dict
)
row_data = plausible_data | random_data


@st.composite
def crud_entries(draw: st.DrawFn, shape: str, tx_id: int) -> dict[str, Any]:
    op = draw(ops)
    entry: dict[str, Any] = {"op": op, ("table" if shape == "A" else "type"): draw(tables), "id": draw(ids)}
    if op != "DELETE" or draw(st.booleans()):
        entry["op_data" if shape == "A" else "data"] = draw(row_data)
    if shape == "B":
        entry["op_id"] = draw(st.integers(min_value=0, max_value=10**6))
        entry["tx_id"] = tx_id
    return entry


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed body of either shape whose ops, tables, ids, columns and values are random."""
    shape = draw(st.sampled_from(["A", "B"]))
    count = draw(st.integers(min_value=1, max_value=4))
    if shape == "A":
        transactions = [
            {"transaction_id": n, "crud": draw(st.lists(crud_entries("A", n), min_size=1, max_size=4))}
            for n in range(count)
        ]
        return {"transactions": transactions}
    batch = [e for n in range(count) for e in draw(st.lists(crud_entries("B", n), min_size=1, max_size=4))]
    return {"batch": batch}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid-shaped batch with one to three mutations: a node replaced by random JSON (wrong type),
    a key removed, an extra key added, a list item duplicated or removed, an op or table changed."""
    body: Any = draw(batches())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(body)))
        if not path:
            body = draw(json_values) if draw(st.integers(0, 9)) == 0 else body
            continue
        parent: Any = body
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "remove", "extra", "duplicate", "alias"]))
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "remove":
            del parent[last]
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12) | st.sampled_from(["old", "metadata", "batch", "transactions"]))] = draw(
                json_values
            )
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[last])))
        elif action == "alias" and isinstance(parent, dict):
            aliases = {
                "table": "type",
                "type": "table",
                "op_data": "opData",
                "data": "op_data",
                "tx_id": "transaction_id",
            }
            if last in aliases:
                parent[aliases[last]] = parent.pop(last)
    return body


def _dumps(body: Any) -> str:
    return json.dumps(body, allow_nan=True)


def _transactions(body: Any) -> int | None:
    """How many results a 200 must hold (``None`` when the body is not a well-formed batch)."""
    if isinstance(body, dict) and isinstance(body.get("transactions"), list):
        return len(body["transactions"])
    if isinstance(body, dict) and isinstance(body.get("batch"), list):
        groups, last = 0, object()
        for entry in body["batch"]:
            tx = entry.get("tx_id", entry.get("transaction_id")) if isinstance(entry, dict) else None
            if tx is None or tx != last:
                groups += 1
            last = tx if tx is not None else object()
        return groups
    return None


# ---- properties ----------------------------------------------------------------------------------

_counts: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _record_counts(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    for name, count in _counts.items():
        record(pytestconfig, name, count)


def _count(name: str) -> None:
    _counts[name] = _counts.get(name, 0) + 1


@SETTINGS
@given(body=json_values, user=users)
def test_arbitrary_json_never_fails(db: Fixture, body: Any, user: str | None) -> None:
    _count("hostile: arbitrary JSON bodies")
    check_response(send(db, _dumps(body), user))
    db.check_untouched()


@SETTINGS
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")), user=users)
def test_arbitrary_text_never_fails(db: Fixture, text: str, user: str | None) -> None:
    _count("hostile: arbitrary text bodies")
    check_response(send(db, text, user))
    db.check_untouched()


@SETTINGS
@given(raw=st.binary(max_size=300), user=users)
def test_arbitrary_base64_bytes_never_fail(db: Fixture, raw: bytes, user: str | None) -> None:
    _count("hostile: arbitrary bytes (base64 events)")
    check_response(send(db, base64.b64encode(raw).decode("ascii"), user, base64_body=True))
    db.check_untouched()


@SETTINGS
@given(body=batches(), user=users)
def test_random_batches_never_fail(db: Fixture, body: dict[str, Any], user: str | None) -> None:
    _count("hostile: random well-formed batches")
    out = send(db, _dumps(body), user)
    check_response(out, _transactions(body) if out["statusCode"] == 200 else None)
    db.check_untouched()


@SETTINGS
@given(body=mutated(), user=users)
def test_mutated_batches_never_fail(db: Fixture, body: Any, user: str | None) -> None:
    _count("hostile: mutated batches")
    check_response(send(db, _dumps(body), user))
    db.check_untouched()
