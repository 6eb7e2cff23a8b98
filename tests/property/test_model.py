"""Property: random valid batches leave the database equal to a simple in-memory model of
PUT/PATCH/DELETE (DESIGN.md section 3).

Two tables on SQLite: ``items`` (no owner: every user may write) and ``owned`` (``owner: owner_id``,
every row the caller's). Each has a nullable text column ``a``, an integer ``b``, and ``c`` with a
database default. The model:

* PUT replaces the row: sent columns take their value, absent ``a``/``b`` become NULL, absent ``c``
  takes its default on insert and keeps its value on update; ``owned.owner_id`` is the caller;
* PATCH sets exactly the given keys; a PATCH with no column (``{}`` or only the same ``id``) does
  nothing; a PATCH of a missing row creates nothing and warns ``ROW_NOT_FOUND``;
* DELETE removes the row (a missing row is fine);
* a transaction with a bad value (``b`` not an integer) is rolled back as a whole (``fatal_error``,
  ``INVALID_DATA``) and the next one still runs.

A third table, ``kids``, references ``items`` (``parent_id``, a foreign key the engine introspects):
the model checks it at the end of each client transaction, as DESIGN.md section 3 promises whatever
order the operations came in; a transaction that leaves a kid without its parent (or an item deleted
under its kids) is ``FOREIGN_KEY_VIOLATION``, and so is a kid written with a reference to an item that
neither exists before the transaction nor is PUT in it, even if a later operation changes that
reference (the engine orders rows, it does not defer the database's checks).

Every example starts from empty tables; each batch is applied twice, planned (the default) and one
statement per operation (``FAST_PATH=0``): both must give the same results and rows, equal to the
model's (the failing operation's index is compared between the two paths, and with the model except
for foreign keys, where the model only knows the transaction).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from tests.property.counts import record
from tests.support import USERS, call, install_runtime, reset_database

EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "200"))
"""200 in ``make test``; set ``MODEL_EXAMPLES`` for a longer search."""
CALLER = USERS["U1"]
DEFAULT_C = "dflt"
TABLES = ("items", "owned", "kids")
IDS = ["r1", "r2", "r3", "R1"]
CONFIG = """
tables:
  items: {}
  owned:
    owner: owner_id
  kids: {}
"""
DDL = [
    "CREATE TABLE items (id TEXT NOT NULL PRIMARY KEY, a TEXT NULL, b INTEGER NULL,"
    f" c TEXT NULL DEFAULT '{DEFAULT_C}')",
    "CREATE TABLE owned (id TEXT NOT NULL PRIMARY KEY, owner_id TEXT NOT NULL, a TEXT NULL, b INTEGER NULL,"
    f" c TEXT NULL DEFAULT '{DEFAULT_C}')",
    "CREATE TABLE kids (id TEXT NOT NULL PRIMARY KEY, parent_id TEXT NULL REFERENCES items(id), a TEXT NULL)",
]

Row = dict[str, Any]


@dataclass
class Model:
    """The expected state: table -> id -> row (``a``, ``b``, ``c`` and, for ``owned``, ``owner_id``)."""

    tables: dict[str, dict[str, Row]] = field(default_factory=lambda: {t: {} for t in TABLES})

    def apply(self, transaction: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply one transaction; return the result the handler must give for it."""
        staged = {t: {k: dict(v) for k, v in rows.items()} for t, rows in self.tables.items()}
        warnings = []
        written_refs: list[Any] = []
        for index, op in enumerate(transaction):
            rows = staged[op["table"]]
            data = {k: v for k, v in (op.get("data") or {}).items() if k != "id"}
            if op["op"] != "DELETE" and any(isinstance(v, str) and v == "not-a-number" for v in data.values()):
                return {"status": "fatal_error", "code": "INVALID_DATA", "index": index}
            values = {k: (int(v) if k == "b" and v is not None else v) for k, v in data.items() if k != "owner_id"}
            current = rows.get(op["id"])
            if op["table"] == "kids" and (op["op"] == "PUT" or (op["op"] == "PATCH" and current is not None)):
                written_refs.append(values.get("parent_id"))
            if op["op"] == "PUT" and op["table"] == "kids":
                rows[op["id"]] = {"parent_id": values.get("parent_id"), "a": values.get("a")}
            elif op["op"] == "PUT":
                kept_c = DEFAULT_C if current is None else current["c"]
                row = {"a": values.get("a"), "b": values.get("b"), "c": values.get("c", kept_c)}
                if op["table"] == "owned":
                    row["owner_id"] = CALLER
                rows[op["id"]] = row
            elif op["op"] == "PATCH":
                if not data:
                    continue
                if current is None:
                    warnings.append({"operation_index": index, "code": "ROW_NOT_FOUND"})
                    continue
                current.update(values)
            else:
                rows.pop(op["id"], None)
        items = staged["items"]
        dangling = any(k["parent_id"] is not None and k["parent_id"] not in items for k in staged["kids"].values())
        created = {o["id"] for o in transaction if o["table"] == "items" and o["op"] == "PUT"}
        referenced = {ref for ref in written_refs if ref is not None}
        if dangling or not referenced <= set(self.tables["items"]) | created:
            return {"status": "fatal_error", "code": "FOREIGN_KEY_VIOLATION", "index": None}
        self.tables = staged
        return {"status": "success", "warnings": warnings}


# ---- strategies ----------------------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
integers = st.integers(min_value=-(2**63), max_value=2**63 - 1)
column_values = {
    "a": st.none() | texts,
    "b": st.none() | integers | integers.map(str) | st.just("not-a-number"),
    "c": st.none() | texts,
}
kid_values = {"parent_id": st.none() | st.sampled_from(IDS[:3]), "a": st.none() | texts}


@st.composite
def operations(draw: st.DrawFn) -> dict[str, Any]:
    table = draw(st.sampled_from(TABLES))
    row_id = draw(st.sampled_from(IDS))
    op = draw(st.sampled_from(["PUT", "PUT", "PATCH", "PATCH", "DELETE"]))
    out: dict[str, Any] = {"op": op, "table": table, "id": row_id}
    if op != "DELETE":
        data = draw(st.fixed_dictionaries({}, optional=kid_values if table == "kids" else column_values))
        if draw(st.integers(0, 5)) == 0:
            data["id"] = row_id
        if table == "owned" and op == "PUT" and draw(st.booleans()):
            data["owner_id"] = CALLER
        out["data"] = data
    return out


transactions = st.lists(st.lists(operations(), min_size=1, max_size=5), min_size=1, max_size=5)


def body_for(shape: str, txs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    if shape == "A":
        return {
            "transactions": [
                {
                    "transaction_id": n,
                    "crud": [
                        {"op": o["op"], "table": o["table"], "id": o["id"], "op_data": o.get("data")} for o in ops
                    ],
                }
                for n, ops in enumerate(txs)
            ]
        }
    op_id = 0
    batch = []
    for n, ops in enumerate(txs):
        for o in ops:
            op_id += 1
            entry = {"op_id": op_id, "op": o["op"], "type": o["table"], "id": o["id"], "tx_id": n}
            if "data" in o:
                entry["data"] = o["data"]
            batch.append(entry)
    return {"batch": batch}


# ---- the database --------------------------------------------------------------------------------


@dataclass
class Db:
    path: Path
    rt: Runtime
    per_operation: Runtime

    def clear(self) -> None:
        with sqlite3.connect(self.path) as conn:
            for table in reversed(TABLES):
                conn.execute(f"DELETE FROM {table}")

    def rows(self) -> dict[str, dict[str, Row]]:
        out: dict[str, dict[str, Row]] = {}
        with sqlite3.connect(self.path) as conn:
            conn.row_factory = sqlite3.Row
            for table in TABLES:
                rows = conn.execute(f"SELECT * FROM {table}").fetchall()
                out[table] = {r["id"]: {k: v for k, v in dict(r).items() if k != "id"} for r in rows}
        return out


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    folder = tmp_path_factory.mktemp("model")
    url = reset_database("sqlite", schema_scripts("sqlite")[:1], folder)  # the errors table only
    path = Path(url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        for ddl in DDL:
            conn.execute(ddl)
    config = folder / "upload.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    rt = install_runtime(url, config)
    per_operation = install_runtime(url, config, fast_path=False)
    yield Db(path, rt, per_operation)
    rt.db.discard()
    per_operation.db.discard()
    set_runtime(None)


_examples: list[int] = []


@pytest.fixture(scope="module", autouse=True)
def _record_counts(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    record(pytestconfig, "model: random valid batches vs the PUT/PATCH/DELETE model", len(_examples))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(txs=transactions, shape=st.sampled_from(["A", "B"]))
def test_batches_match_the_model(db: Db, txs: list[list[dict[str, Any]]], shape: str) -> None:
    _examples.append(1)
    # Given empty tables and an empty model
    model = Model()
    expected = [model.apply(tx) for tx in txs]
    body = body_for(shape, txs)
    outcomes = []
    for runtime in (db.rt, db.per_operation):
        db.clear()
        set_runtime(runtime)
        # When the batch is uploaded by the caller, planned and one statement per operation
        response = call(body, "U1")
        assert response.status == 200, response.body
        outcomes.append((_results(response.body["results"]), db.rows()))
    # Then both paths agree exactly, and each result and every row equal the model's
    assert outcomes[0] == outcomes[1], json.dumps(body)
    got, rows = outcomes[0]
    for result, want in zip(got, expected, strict=True):
        if want.get("index", 0) is None:
            result = {**result, "index": None}
        assert result == want, json.dumps(body)
    assert rows == model.tables
    for result in expected:
        note_event(
            f"transaction {result['status']} {result.get('code', '')}"
            + (" with warnings" if result.get("warnings") else "")
        )


def _results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    got = []
    for result in results:
        if result["status"] == "fatal_error":
            failed = result["failed_operation"]
            got.append({"status": "fatal_error", "code": failed["error_code"], "index": failed["operation_index"]})
        else:
            got.append({"status": result["status"], "warnings": result.get("warnings", [])})
    return got
