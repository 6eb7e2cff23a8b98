"""Tables whose names need quoting, and configured tables the database cannot name, through the handler.

A new user's app has tables named like SQL keywords or in mixed case (``"Order"``), and configurations
that name a schema the database lacks; the README promises parents before children within a client
transaction, and ``SCHEMA_MISMATCH`` for a configured table the database lacks.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support import available_dialects, call, demo_sqlite, install_runtime, reset_database

CONFIG = """
tables:
  orders:
    table: Order
  kids: {}
  elsewhere:
    table: nosuchschema.items
"""

SCHEMAS = {
    "sqlite": """
CREATE TABLE "Order" (id TEXT PRIMARY KEY, "order" INTEGER);
CREATE TABLE kids (id TEXT PRIMARY KEY, "order" TEXT REFERENCES "Order"(id), note TEXT);
""",
    "postgresql": """
CREATE TABLE "Order" (id text PRIMARY KEY, "order" integer);
CREATE TABLE kids (id text PRIMARY KEY, "order" text REFERENCES "Order"(id), note text);
""",
    "mysql": """
CREATE TABLE `Order` (id varchar(64) PRIMARY KEY, `order` int);
CREATE TABLE kids (id varchar(64) PRIMARY KEY, `order` varchar(64), note text,
  FOREIGN KEY (`order`) REFERENCES `Order`(id));
""",
}


@pytest.fixture(params=[d for d in available_dialects() if d in SCHEMAS])
def quoted_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    dialect = str(request.param)
    script = tmp_path / "schema.sql"
    script.write_text(SCHEMAS[dialect], encoding="utf-8")
    config = tmp_path / "upload.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    url = reset_database(dialect, [script], tmp_path)
    rt = install_runtime(url, config)
    request.addfinalizer(rt.db.discard)
    return dialect


def test_a_child_queued_before_its_parent_in_a_mixed_case_table_is_applied(quoted_db: str) -> None:
    # Given a parent table "Order" (mixed case, so its name needs quoting) and kids referencing it
    # When one transaction inserts a kid before the order it references
    body = {
        "batch": [
            {"op_id": 1, "op": "PUT", "type": "kids", "id": "k1", "tx_id": 1, "data": {"order": "o1", "note": "n"}},
            {"op_id": 2, "op": "PUT", "type": "orders", "id": "o1", "tx_id": 1, "data": {"order": 1}},
        ]
    }
    response = call(body)
    # Then the parent is written first, as the README promises, and the transaction commits
    assert response.status == 200
    assert response.body["results"] == [{"status": "success"}]


def test_a_configured_table_in_a_schema_the_database_lacks_is_schema_mismatch(quoted_db: str) -> None:
    # Given a configured table whose schema does not exist in the database
    # When a client writes to it
    response = call({"batch": [{"op_id": 1, "op": "PUT", "type": "elsewhere", "id": "x", "tx_id": 1, "data": {}}]})
    # Then it is rejected for its own transaction (the queue moves on), not a 503 retried for ever
    assert response.status == 200
    failed = response.body["results"][0]["failed_operation"]
    assert failed["error_code"] == "SCHEMA_MISMATCH"


def test_a_fatal_database_error_while_reading_a_schema_rejects_the_transaction_not_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the demo database, whose driver refuses to read a table's schema with an error the dialect
    # classes as fatal (here SQLite's "no such table", as when a table is dropped under a warm container)
    with demo_sqlite(tmp_path) as (_, rt):

        def refuse(conn: object, table: str) -> None:
            raise sqlite3.OperationalError(f"no such table: {table}")

        monkeypatch.setattr(rt.db.dialect, "introspect", refuse)
        # When a client writes to that table
        response = call({"batch": [{"op_id": 1, "op": "PUT", "type": "lists", "id": "x", "tx_id": 1, "data": {}}]})
    # Then that transaction is rejected with the error's code (the queue moves on), not a 503 for ever
    assert response.status == 200
    assert response.body["results"][0]["failed_operation"]["error_code"] == "SCHEMA_MISMATCH"


CONFLICT_ID = "c0000000-0000-4000-8000-0000000000c1"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"op": "DELETE"}, "UNAUTHORIZED"),
        ({"op": "PUT", "data": {"resolved": 1}}, "UNAUTHORIZED"),
        ({"op": "PATCH", "data": {"resolved": 1}}, None),
    ],
    ids=["delete", "put", "patch-resolved"],
)
def test_the_conflicts_table_takes_only_a_patch_of_resolved_without_configuration(
    tmp_path: Path, entry: dict[str, object], expected: str | None
) -> None:
    # Given the demo database with one conflict row of U1 and the shipped configuration (which does not
    # configure the conflicts table)
    with demo_sqlite(tmp_path) as (url, _):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "INSERT INTO powersync_upload_conflicts (id, user_id, table_name, row_id, reason, created_at)"
                " VALUES (?, ?, 'items', 'r1', 'stale', '2026-12-01T00:00:00.000')",
                (CONFLICT_ID, "11111111-1111-1111-1111-111111111111"),
            )
        # When U1's app uploads an operation on its own conflict row
        op = {"op_id": 1, "tx_id": 1, "type": "powersync_upload_conflicts", "id": CONFLICT_ID, **entry}
        response = call({"batch": [op]})
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT resolved FROM powersync_upload_conflicts").fetchall()
    # Then, as the README says, only a PATCH of resolved is accepted; anything else is UNAUTHORIZED and
    # the conflict row stays
    result = response.body["results"][0]
    if expected is None:
        assert result == {"status": "success"}
        assert rows == [(1,)]
    else:
        assert result["failed_operation"]["error_code"] == expected
        assert rows == [(0,)]
