"""SQLite dialect: declared types of the shared fixtures, and classification of real sqlite3 errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.dialects import PutRow, sqlite
from powersync_upload.errors import ErrorCode, FatalOpError, RetryableError
from powersync_upload.schema import FLOAT32_MAX, INT_RANGES, Column, Kind
from tests.support import classified_as

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "cases" / "fixtures"
U1 = "11111111-1111-1111-1111-111111111111"
GROCERIES = "a0000000-0000-0000-0000-000000000001"


def fixture_db(name: str) -> sqlite3.Connection:
    """An in-memory database built from fixtures/<name>.sqlite.sql, foreign keys on."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript((FIXTURES / f"{name}.sqlite.sql").read_text(encoding="utf-8"))
    return conn


def declared_columns(conn: sqlite3.Connection, table: str) -> dict[str, Column]:
    """column_from_declared for every PRAGMA table_xinfo row of ``table``."""
    rows = conn.execute(f"PRAGMA table_xinfo({table})").fetchall()
    return {row[1]: sqlite.column_from_declared(row[1], row[2], bool(row[3]), row[4], row[6]) for row in rows}


@pytest.fixture
def todo() -> Iterator[sqlite3.Connection]:
    conn = fixture_db("todo")
    yield conn
    conn.close()


# ---- declared types ------------------------------------------------------------------------------


def test_types_fixture_declared_types() -> None:
    # Given the "types" fixture's kinds table
    conn = fixture_db("types")

    # When its declared types are read
    columns = declared_columns(conn, "kinds")
    conn.close()

    # Then each column gets the kind, limits and precision its declared type names
    summary = {
        name: (
            c.kind,
            c.int_range,
            c.max_length,
            c.precision,
            c.scale,
            c.fraction_digits if c.kind in (Kind.TIME, Kind.TIMESTAMP) else None,
        )
        for name, c in columns.items()
    }
    assert summary == {
        "id": (Kind.TEXT, None, None, None, None, None),
        "owner_id": (Kind.TEXT, None, None, None, None, None),
        "big": (Kind.INTEGER, INT_RANGES["bigint"], None, None, None, None),
        "small": (Kind.INTEGER, INT_RANGES["smallint"], None, None, None, None),
        "flt": (Kind.FLOAT, None, None, None, None, None),
        "day": (Kind.DATE, None, None, None, None, None),
        "at_time": (Kind.TIME, None, None, None, None, 3),
        "at_zone": (Kind.TIMESTAMP, None, None, None, None, 3),
        "price": (Kind.DECIMAL, None, None, 19, 4, None),
        "code": (Kind.TEXT, None, 10, None, None, None),
        "created_at": (Kind.TIMESTAMP, None, None, None, None, 3),
    }
    assert columns["flt"].float_max is None  # SQLite REAL/DOUBLE is 64-bit
    assert (columns["created_at"].nullable, columns["created_at"].has_default) == (False, True)
    assert (columns["big"].nullable, columns["big"].has_default) == (True, False)


def test_todo_fixture_declared_types(todo: sqlite3.Connection) -> None:
    # Given the "todo" fixture's lists and todos tables
    # When their declared types are read
    lists = declared_columns(todo, "lists")
    todos = declared_columns(todo, "todos")

    # Then each column gets the kind and limits its declared type names
    assert {n: c.kind for n, c in lists.items()} == {
        "id": Kind.TEXT,
        "owner_id": Kind.TEXT,
        "name": Kind.TEXT,
        "created_at": Kind.TIMESTAMP,
    }
    assert (lists["name"].max_length, lists["name"].length_unit, lists["name"].nullable) == (100, "chars", False)
    assert {n: c.kind for n, c in todos.items()} == {
        "id": Kind.TEXT,
        "list_id": Kind.TEXT,
        "owner_id": Kind.TEXT,
        "description": Kind.TEXT,
        "completed": Kind.BOOLEAN,
        "completed_at": Kind.TIMESTAMP,
        "priority": Kind.INTEGER,
        "amount": Kind.DECIMAL,
        "tags": Kind.JSON,
    }
    assert todos["priority"].int_range == INT_RANGES["bigint"]  # SQLite INTEGER is 64-bit
    assert (todos["amount"].precision, todos["amount"].scale) == (10, 2)
    assert (todos["completed"].nullable, todos["completed"].has_default) == (False, True)
    assert todos["description"].max_length == 100


def test_introspect_reads_the_same_columns_and_none_for_a_missing_table(todo: sqlite3.Connection) -> None:
    # Given the todo fixture / When the dialect introspects a table and a missing one
    schema = sqlite.introspect(todo, "todos")

    # Then it returns the declared columns, and None for the missing table
    assert schema is not None
    assert schema.columns == declared_columns(todo, "todos")
    assert sqlite.introspect(todo, "nope") is None


@pytest.mark.parametrize(
    ("declared", "kind"),
    [
        ("", Kind.OTHER),
        ("BLOB", Kind.OTHER),
        ("UUID", Kind.UUID),
        ("TIMESTAMP", Kind.TIMESTAMP),
        ("NVARCHAR(50)", Kind.TEXT),
        ("CLOB", Kind.TEXT),
        ("NUMERIC", Kind.DECIMAL),
        ("REAL", Kind.FLOAT),
        ("UNSIGNED BIG INT", Kind.INTEGER),
    ],
)
def test_other_declared_types(declared: str, kind: Kind) -> None:
    # Given a declared type / When read / Then SQLite's affinity rules refined by common names
    assert sqlite.column_from_declared("c", declared, False, None, 0).kind is kind


def test_float4_is_32_bit_and_tinyint_is_8_bit() -> None:
    # Given FLOAT4 and TINYINT / When read / Then their narrower limits apply
    assert sqlite.column_from_declared("f", "FLOAT4", False, None, 0).float_max == FLOAT32_MAX
    assert sqlite.column_from_declared("t", "TINYINT", False, None, 0).int_range == INT_RANGES["tinyint"]


@pytest.mark.parametrize(("hidden", "writable"), [(0, True), (1, True), (2, False), (3, False)])
def test_generated_columns_are_not_writable(hidden: int, writable: bool) -> None:
    # Given a table_xinfo "hidden" flag (2 virtual, 3 stored generated) / When read / Then writability
    assert sqlite.column_from_declared("c", "INTEGER", False, None, hidden).writable is writable


def test_generated_column_from_a_real_table_is_not_writable() -> None:
    # Given a table with a generated column
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2))")

    # When introspected
    schema = sqlite.introspect(conn, "t")
    conn.close()

    # Then only the generated column is read-only
    assert schema is not None
    assert {n: c.writable for n, c in schema.columns.items()} == {"id": True, "a": True, "b": False}


def test_introspection_knows_the_primary_key_and_which_unique_indexes_hold_for_every_row() -> None:
    # Given tables keyed in each way SQLite allows: a rowid INTEGER PRIMARY KEY, a text primary key, a
    # composite one; unique constraints and indexes, one partial and one on an expression
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        """
        CREATE TABLE r (pk INTEGER PRIMARY KEY, uid TEXT UNIQUE, a TEXT, b TEXT, UNIQUE (a, b));
        CREATE UNIQUE INDEX r_b ON r (b) WHERE b IS NOT NULL;
        CREATE UNIQUE INDEX r_a ON r (a, lower(b));
        CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER);
        CREATE TABLE c (tenant TEXT, id TEXT, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
        """
    )

    # When introspected
    r, t, c = (sqlite.introspect(conn, name) for name in ("r", "t", "c"))
    conn.close()

    # Then each primary key is known, and only a whole-table unique column identifies rows alone
    assert r is not None and t is not None and c is not None
    assert (r.primary_key, t.primary_key, c.primary_key) == (("pk",), ("id",), ("tenant", "id"))
    assert set(r.unique) == {("uid",), ("a", "b"), ("b",), ("a",)}
    assert set(r.loose_unique) == {("b",), ("a",)}
    assert {name for name in r.columns if r.identifies_rows(name)} == {"pk", "uid"}
    assert t.identifies_rows("id") and not c.identifies_rows("id")
    # and the rowid (assigned on insert) counts as a default, so a PUT keyed by uid keeps it
    assert r.columns["pk"].has_default and not t.columns["id"].has_default


# ---- classification of real errors ---------------------------------------------------------------


def raised(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        conn.execute(sql, params)
    return caught.value


def fatal(exc: BaseException) -> FatalOpError:
    return classified_as(FatalOpError, sqlite.classify(exc))


def test_not_null_names_the_column(todo: sqlite3.Connection) -> None:
    # Given an insert of a list without a name
    exc = raised(todo, "INSERT INTO lists (id, owner_id, name) VALUES ('L9', ?, NULL)", (U1,))

    # When classified
    result = fatal(exc)

    # Then NOT_NULL_VIOLATION naming the column, with SQLite's extended code
    assert result.code is ErrorCode.NOT_NULL_VIOLATION
    assert result.column == "name"
    assert result.number == 1299


def test_unique_index_violation(todo: sqlite3.Connection) -> None:
    # Given a second list with the same owner and name (unique index ux_lists_owner_name)
    exc = raised(todo, "INSERT INTO lists (id, owner_id, name) VALUES ('L9', ?, 'Groceries')", (U1,))

    # When / Then UNIQUE_VIOLATION (SQLITE_CONSTRAINT_UNIQUE)
    result = fatal(exc)
    assert (result.code, result.number) == (ErrorCode.UNIQUE_VIOLATION, 2067)


def test_primary_key_violation_is_unique(todo: sqlite3.Connection) -> None:
    # Given a list whose id already exists
    exc = raised(todo, "INSERT INTO lists (id, owner_id, name) VALUES (?, ?, 'Other')", (GROCERIES, U1))

    # When / Then UNIQUE_VIOLATION (SQLITE_CONSTRAINT_PRIMARYKEY)
    result = fatal(exc)
    assert (result.code, result.number) == (ErrorCode.UNIQUE_VIOLATION, 1555)


def test_foreign_key_violation(todo: sqlite3.Connection) -> None:
    # Given foreign keys on and a todo pointing at a missing list
    exc = raised(todo, "INSERT INTO todos (id, list_id, owner_id) VALUES ('T9', 'missing', ?)", (U1,))

    # When / Then FOREIGN_KEY_VIOLATION
    result = fatal(exc)
    assert (result.code, result.number) == (ErrorCode.FOREIGN_KEY_VIOLATION, 787)


def test_deleting_a_referenced_row_is_a_foreign_key_violation(todo: sqlite3.Connection) -> None:
    # Given a list that todos reference / When it is deleted / Then FOREIGN_KEY_VIOLATION
    exc = raised(todo, "DELETE FROM lists WHERE id = ?", (GROCERIES,))
    assert fatal(exc).code is ErrorCode.FOREIGN_KEY_VIOLATION


def test_unnamed_check_violation(todo: sqlite3.Connection) -> None:
    # Given tags that fail the fixture's json_valid CHECK
    exc = raised(todo, "INSERT INTO todos (id, list_id, owner_id, tags) VALUES ('T9', ?, ?, '[a,')", (GROCERIES, U1))

    # When classified
    result = fatal(exc)

    # Then CHECK_VIOLATION; the check's expression is not taken for a constraint name
    assert (result.code, result.number) == (ErrorCode.CHECK_VIOLATION, 275)
    assert result.constraint is None


def test_named_check_violation_names_the_constraint() -> None:
    # Given a table with a named CHECK constraint
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, p INTEGER, CONSTRAINT ck_positive CHECK (p > 0))")

    # When a row breaks it
    result = fatal(raised(conn, "INSERT INTO t VALUES ('1', -1)"))
    conn.close()

    # Then CHECK_VIOLATION naming the constraint
    assert (result.code, result.constraint) == (ErrorCode.CHECK_VIOLATION, "ck_positive")


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO nope (id) VALUES ('1')",
        "INSERT INTO lists (id, nme) VALUES ('1', 'x')",
        "UPDATE lists SET nme = 'x'",
    ],
    ids=["table", "column-insert", "column-update"],
)
def test_unknown_table_or_column_is_schema_mismatch(todo: sqlite3.Connection, sql: str) -> None:
    # Given SQL naming a missing table or column / When classified / Then SCHEMA_MISMATCH
    assert fatal(raised(todo, sql)).code is ErrorCode.SCHEMA_MISMATCH


def test_busy_database_is_retried_in_process(tmp_path: Path) -> None:
    # Given a database file another connection holds the write lock on
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id TEXT)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, timeout=0, isolation_level=None)

    # When a second writer cannot get the lock
    exc = raised(waiter, "BEGIN IMMEDIATE")
    waiter.close()
    holder.close()

    # Then it is retryable, in process (SQLITE_BUSY)
    result = sqlite.classify(exc)
    assert isinstance(result, RetryableError)
    assert (result.kind, result.in_process) == ("busy", True)


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k")])
def test_non_sqlite_exception_is_not_classified(exc: BaseException) -> None:
    # Given an exception that does not come from sqlite3 / When classified / Then None
    assert sqlite.classify(exc) is None


# ---- upsert SQL on a real table ------------------------------------------------------------------


def test_upsert_updates_in_place_and_the_owner_guard_protects_other_users_rows(todo: sqlite3.Connection) -> None:
    # Given the todo fixture's lists table and U2's private list
    schema = sqlite.introspect(todo, "main.lists")
    assert schema is not None
    key, owner = schema.columns["id"], schema.columns["owner_id"]
    private = "a0000000-0000-0000-0000-000000000002"

    # When U1 upserts its own list and then tries to upsert U2's list
    mine = sqlite.upsert(
        todo, PutRow(schema, key, GROCERIES, {"owner_id": U1, "name": "Food"}, ["created_at"], (owner, U1))
    )
    theirs = sqlite.upsert(todo, PutRow(schema, key, private, {"owner_id": U1, "name": "Mine"}, [], (owner, U1)))

    # Then the own row is updated in place and the other user's row is untouched (0 rows written)
    assert (mine, theirs) == (1, 0)
    rows = dict(todo.execute("SELECT id, name FROM lists").fetchall())
    assert rows[GROCERIES] == "Food"
    assert rows[private] == "Private"
    assert todo.execute("SELECT count(*) FROM todos WHERE list_id = ?", (GROCERIES,)).fetchone() == (2,)


def test_a_database_file_replaced_under_an_open_connection_is_retryable_on_a_new_connection(tmp_path: Path) -> None:
    # Given a connection whose database file is then renamed away (as `make demo` recreates the file
    # that `make serve` has open)
    conn = sqlite3.connect(tmp_path / "a.sqlite", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER)")
    (tmp_path / "a.sqlite").rename(tmp_path / "b.sqlite")
    # When it writes
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    # Then the error (SQLITE_READONLY_DBMOVED) is a connection problem: answer 503, open the file again
    classified = sqlite.classify(caught.value)
    assert isinstance(classified, RetryableError)
    assert classified.kind == "connection"
