"""A configured ``key`` that does not identify one row, against real databases (DESIGN.md section 4).

``tables.<name>.key`` must be the table's primary key or the only column of a unique index or
constraint. Any other column is a configuration problem found at first introspection: logged once,
naming the table and the column and how to fix it, counted (``ConfigurationProblems``), and that
table's operations answered ``SCHEMA_MISMATCH`` for their own transaction, with nothing written
(before, PostgreSQL and SQLite refused the ``ON CONFLICT`` target: ``UNCLASSIFIED_ERROR``). A unique
column that is not the primary key is a valid key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.handler import set_runtime
from powersync_upload.local import schema_scripts
from tests.support import RowReader, available_dialects, call, install_runtime, reset_database, stored_count

CONFIG = """
tables:
  by_tag:         # a plain column
    table: notes
    key: tag
  by_code:        # a partial unique index (SQLite, PostgreSQL); a plain column on MariaDB
    table: notes
    key: code
  by_uid:         # a unique column that is not the primary key: a valid key
    table: notes
    key: uid
  pairs: {}       # id is one column of a composite primary key
"""

SCHEMAS = {
    "sqlite": """
CREATE TABLE notes (pk INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, tag TEXT, code TEXT, title TEXT);
CREATE UNIQUE INDEX notes_code ON notes (code) WHERE code IS NOT NULL;
CREATE TABLE pairs (tenant TEXT NOT NULL, id TEXT NOT NULL, title TEXT, PRIMARY KEY (tenant, id));
""",
    "postgresql": """
CREATE TABLE notes (pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, uid text NOT NULL UNIQUE, tag text,
  code text, title text);
CREATE UNIQUE INDEX notes_code ON notes (code) WHERE code IS NOT NULL;
CREATE TABLE pairs (tenant text NOT NULL, id text NOT NULL, title text, PRIMARY KEY (tenant, id));
CREATE TABLE indexed (id text PRIMARY KEY, a text, b text, c text UNIQUE DEFERRABLE INITIALLY DEFERRED, d text);
CREATE UNIQUE INDEX indexed_a ON indexed (a) INCLUDE (b);
CREATE UNIQUE INDEX indexed_b ON indexed (lower(b));
CREATE UNIQUE INDEX indexed_d ON indexed (d, lower(b));
""",
    "mysql": """
CREATE TABLE notes (pk bigint AUTO_INCREMENT PRIMARY KEY, uid varchar(64) NOT NULL UNIQUE, tag varchar(64),
  code varchar(64), title text);
CREATE TABLE pairs (tenant varchar(64) NOT NULL, id varchar(64) NOT NULL, title text, PRIMARY KEY (tenant, id));
CREATE TABLE indexed (id varchar(64) PRIMARY KEY, a varchar(64) UNIQUE, b varchar(64), c varchar(64), d text,
  UNIQUE (b, c), UNIQUE (d(10)));
""",
}
INDEXED = {
    "sqlite": None,
    "postgresql": {"id", "a"},  # INCLUDE (b) is no key column; c is deferrable; d is beside an expression
    "mysql": {"id", "a", "d"},  # a unique prefix of d makes d unique too
}
"""Per dialect, the columns of ``indexed`` that identify a row alone (SQLite: its unit tests)."""


@pytest.fixture(params=[d for d in available_dialects() if d in SCHEMAS])
def keyed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of the dialect with the product's tables, ``notes`` and ``pairs``, behind the
    handler with :data:`CONFIG`; yields its URL."""
    dialect = str(request.param)
    script = tmp_path / "schema.sql"
    script.write_text(SCHEMAS[dialect], encoding="utf-8")
    migrations = [p for p in schema_scripts(dialect) if "migrations" in p.parts]
    url = reset_database(dialect, [*migrations, script], tmp_path)
    config = tmp_path / "upload.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    rt = install_runtime(url, config)
    yield url
    rt.db.discard()
    set_runtime(None)


def _entry(op_id: int, op: str, table: str, row: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"op_id": op_id, "op": op, "type": table, "id": row, "tx_id": op_id}
    if data is not None:
        entry["data"] = data
    return entry


def _configuration_problems(printed: str) -> list[float]:
    """The ``ConfigurationProblems`` values of the EMF documents printed (a value may be a list)."""
    documents = [json.loads(line) for line in printed.splitlines() if '"_aws"' in line]
    values = [d["ConfigurationProblems"] for d in documents if "ConfigurationProblems" in d]
    return [float(v) for value in values for v in (value if isinstance(value, list) else [value])]


@pytest.mark.parametrize(
    ("table", "column"),
    [("by_tag", "tag"), ("by_code", "code"), ("pairs", "id")],
    ids=["plain-column", "partial-unique", "composite-primary-key"],
)
def test_a_key_that_could_name_several_rows_is_schema_mismatch_logged_once_and_nothing_is_written(
    keyed: str,
    table: str,
    column: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a configured key that is neither the primary key nor alone in a unique index (metrics on)
    url = keyed
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capsys.readouterr()
    data = {"tenant": "t1", "uid": "u1", "title": "x"} if table == "pairs" else {"uid": "u1", "title": "x"}

    # When a valid note and a write to that table come in one transaction, then each kind of write alone
    with caplog.at_level(logging.ERROR):
        first = call(
            {"batch": [_entry(1, "PUT", "by_uid", "u0", {"title": "kept?"}), _entry(1, "PUT", table, "a", data)]}
        )
        first_metrics = _configuration_problems(capsys.readouterr().out)
        later = [
            call({"batch": [_entry(2, op, table, "a", body)]})
            for op, body in (("PATCH", {"title": "y"}), ("DELETE", None))
        ]
        later_metrics = _configuration_problems(capsys.readouterr().out)

    # Then each answer is a 200 whose transaction is fatal_error SCHEMA_MISMATCH naming the table and the key
    for response in (first, *later):
        assert response.status == 200
        (result,) = response.body["results"]
        assert result["status"] == "fatal_error"
        assert result["failed_operation"]["error_code"] == "SCHEMA_MISMATCH"
        assert result["failed_operation"]["details"]["table"] == table
        assert result["failed_operation"]["details"]["column"] == column
        # whose message says the configuration, not a missing column, is at fault
        assert "upload configuration does not fit it" in result["failed_operation"]["message"]
    # and nothing was written, not even the valid note of the same transaction
    assert stored_count(url, "notes") == 0
    assert stored_count(url, "pairs") == 0
    # and the problem was logged once, naming the full key, the column and the fix, and counted once
    logged = [r for r in caplog.records if r.getMessage() == "configuration does not fit the table"]
    assert len(logged) == 1
    (problem,) = logged[0].__dict__["problems"]
    assert problem.startswith(f"tables.{table}.key: column '{column}' of ")
    assert "CREATE UNIQUE INDEX" in problem
    assert first_metrics == [1.0] and later_metrics == []


def test_introspection_knows_the_primary_key_and_the_unique_columns(keyed: str) -> None:
    # Given the tables of every dialect (and, on PostgreSQL and MariaDB, one with more kinds of index)
    reader = RowReader(keyed)
    dialect = reader.db.dialect
    try:
        # When they are introspected
        notes, pairs, indexed = (dialect.introspect(reader.conn, t) for t in ("notes", "pairs", "indexed"))
    finally:
        reader.close()

    # Then each primary key is known, and a column identifies a row only by itself and in every row
    assert notes is not None and pairs is not None
    assert (notes.primary_key, pairs.primary_key) == (("pk",), ("tenant", "id"))
    assert {c for c in notes.columns if notes.identifies_rows(c)} == {"pk", "uid"}
    assert {c for c in pairs.columns if pairs.identifies_rows(c)} == set()
    expected = INDEXED[dialect.name]
    assert (indexed is None) is (expected is None)
    if indexed is not None:
        assert {c for c in indexed.columns if indexed.identifies_rows(c)} == expected


def test_a_unique_column_that_is_not_the_primary_key_is_a_valid_key(keyed: str) -> None:
    # Given by_uid, keyed by notes.uid (UNIQUE; the primary key is the server's own pk)
    url = keyed

    # When a device creates, edits, replaces and deletes notes by uid
    batches = [
        [
            _entry(1, "PUT", "by_uid", "u1", {"title": "one", "tag": "t"}),
            _entry(1, "PUT", "by_uid", "u2", {"tag": "t"}),
        ],
        [_entry(2, "PATCH", "by_uid", "u1", {"title": "edited"})],
        [_entry(3, "PUT", "by_uid", "u2", {"title": "replaced"})],
        [_entry(4, "DELETE", "by_uid", "u1")],
    ]
    responses = [call({"batch": batch}) for batch in batches]

    # Then every transaction commits, and the rows are found by uid as written
    assert [r.body["results"] for r in responses] == [[{"status": "success"}]] * 4
    reader = RowReader(url)
    try:
        assert reader.row("notes", "uid", "u1", None) is None
        remaining = reader.row("notes", "uid", "u2", None)
    finally:
        reader.close()
    assert remaining is not None
    assert (remaining["title"], remaining["tag"]) == ("replaced", None)
    assert stored_count(url, "notes") == 1
