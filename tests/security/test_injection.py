"""Injection corpus (issue 5): SQL metacharacters, driver placeholders, comments, stacked statements,
unicode look-alikes, NUL bytes, lone surrogates and very long strings, placed in table names, column
names, row ids and values (and ``client_id``, ``old`` and ``metadata``), on every dialect here.

Nothing may execute: every answer is 200 (none of these is an envelope problem), never a 5xx; the seed
rows and an unconfigured table are unchanged; a legal value or id is stored verbatim and read back
equal; an illegal one (NUL, lone surrogate, too long) is rejected for its own transaction and leaves
nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from powersync_upload.handler import lambda_handler, set_runtime
from powersync_upload.local import LocalContext, schema_scripts
from tests.support import (
    ROOT,
    USERS,
    RowReader,
    authorization,
    available_dialects,
    event,
    install_runtime,
    reset_database,
)

L1 = "a0000000-0000-4000-8000-0000000000a1"  # U1's list
L2 = "a0000000-0000-4000-8000-0000000000a2"  # U2's list
T2 = "b0000000-0000-4000-8000-0000000000b2"  # U2's todo in L2
LONG = 100_000
CORPUS: list[str] = [
    "'",
    "''",
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "'; DROP TABLE lists; --",
    '"; DROP TABLE lists; --',
    "]; DROP TABLE lists; --",
    "`; DROP TABLE lists; --",
    "lists]",
    "[lists]",
    "`lists`",
    '"lists"',
    "lists; DELETE FROM notes",
    "x'); DELETE FROM notes; --",
    "1; DELETE FROM unlisted",
    "%s",
    "%s%s%s%s",
    "%(x)s",
    "%(name)s %(id)s",
    "%",
    "%%",
    "{0}{}",
    "$1",
    "?",
    ":name",
    "@p1",
    "-- comment",
    "/* comment */",
    "*/ DROP TABLE lists; /*",
    "\\",
    "\\'; DROP TABLE lists; --",
    "\\x27",
    "0x27",
    "CHAR(39)",
    "N'x'",
    "E'\\x27'",
    "$$; DROP TABLE lists; $$",
    "'; WAITFOR DELAY '0:0:5'; --",
    "' || pg_sleep(5) || '",
    "' AND SLEEP(5) AND '",
    "\uff4c\uff49\uff53\uff54\uff53",  # "lists" in fullwidth letters
    "l\u0456sts",  # "lists" with a Cyrillic i
    "\u02bc OR 1=1 --",  # modifier letter apostrophe
    "\uff07; DROP TABLE lists; --",  # fullwidth apostrophe
    "\u2018 OR \u20191\u2019=\u20191",  # curly quotes
    "\u202e;DROP TABLE lists",  # right-to-left override
    "a\u200bb",  # zero-width space
    "\ufeff'",  # byte order mark
    "😀'; --",
    "NULL",
    "null",
    "true",
    "1e400",
    "NaN",
    " leading and trailing spaces ",
    "tab\tnew\nline\rcr",
    "a\x00b",  # NUL: no database stores it in text
    "\x00'; DROP TABLE lists; --",
    "\ud800",  # lone surrogates, sent as raw JSON escapes
    "a\udfffb",
    "\udbff'; DROP TABLE lists; --",
    "x" * LONG,
    "'" * 10_000,
]
SHIPPED_CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
"""The demo configuration users start from; the tests add the ``notes`` table (text key, no owner) to it."""


def _config_with_notes() -> str:
    """The shipped ``upload.yaml`` with ``notes: {}`` added to its tables."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    config["tables"]["notes"] = {}
    return yaml.safe_dump(config)


NOTES = {
    "sqlite": "CREATE TABLE notes (id TEXT NOT NULL PRIMARY KEY, title VARCHAR(200) NULL, body TEXT NULL)",
    "postgresql": "CREATE TABLE notes (id text NOT NULL PRIMARY KEY, title varchar(200) NULL, body text NULL)",
    "mysql": (
        "CREATE TABLE notes (id varchar(191) COLLATE {bin} NOT NULL PRIMARY KEY, title varchar(200) NULL,"
        " body longtext NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    ),
}
UNLISTED = {
    "sqlite": "CREATE TABLE unlisted (id TEXT PRIMARY KEY, note TEXT)",
    "postgresql": "CREATE TABLE unlisted (id text PRIMARY KEY, note text)",
    "mysql": "CREATE TABLE unlisted (id varchar(50) PRIMARY KEY, note text) DEFAULT CHARSET=utf8mb4",
}
SEED_SQL = [
    ("INSERT INTO lists (id, owner_id, name) VALUES ({p}, {p}, {p})", (L1, USERS["U1"], "seed one")),
    ("INSERT INTO lists (id, owner_id, name) VALUES ({p}, {p}, {p})", (L2, USERS["U2"], "seed two")),
    (
        "INSERT INTO todos (id, list_id, owner_id, description) VALUES ({p}, {p}, {p}, {p})",
        (T2, L2, USERS["U2"], "seed todo"),
    ),
    ("INSERT INTO notes (id, title, body) VALUES ({p}, {p}, {p})", ("n1", "seed", "seed body")),
    ("INSERT INTO notes (id, title, body) VALUES ({p}, {p}, {p})", ("N1", "seed", "upper-case twin")),
    ("INSERT INTO unlisted (id, note) VALUES ({p}, {p})", ("u1", "'; DROP TABLE unlisted; --")),
]
REFUSAL_CODES = {"INVALID_DATA", "SCHEMA_MISMATCH", "UNAUTHORIZED", "UNCLASSIFIED_ERROR", "CONSTRAINT_VIOLATION"}


def legal(text: str) -> bool:
    """Text every database here can store: no NUL, no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def assert_no_problems(check: Callable[[int, str], Iterator[str]]) -> None:
    """Run ``check`` on every payload of :data:`CORPUS` (with its index) and fail listing every
    problem it reports, so one run shows them all."""
    problems = [problem for index, payload in enumerate(CORPUS) for problem in check(index, payload)]
    assert not problems, "\n".join(problems)


def short_name(text: str) -> str:
    shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} chars)"
    return ascii(shown)


def _run(url: str, dialect: str, statements: list[str], params: list[tuple[Any, ...]] | None = None) -> None:
    reader = RowReader(url)
    try:
        cursor = reader.conn.cursor()
        for index, sql in enumerate(statements):
            cursor.execute(sql, params[index] if params else ())
        reader.conn.commit()
    finally:
        reader.close()


class Db:
    """The database under test, read back through one kept connection with plain parameterized SQL."""

    def __init__(self, dialect: str, url: str) -> None:
        self.dialect = dialect
        self.url = url
        self.reader = RowReader(url)
        self.ph = self.reader.ph
        self.tables = self.contents()

    def close(self) -> None:
        self.reader.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cursor = self.reader.conn.cursor()
        try:
            cursor.execute(sql.replace("?", self.ph), params)
            return [tuple(r) for r in cursor.fetchall()]
        finally:
            self.reader.conn.rollback()

    def row(self, table: str, columns: str, row_id: str) -> tuple[Any, ...] | None:
        """The row's ``columns`` (a UUID key compared as the column compares), or None."""
        key = "CAST(id AS TEXT)" if self.dialect == "postgresql" and table != "notes" else "id"
        rows = self.query(f"SELECT {columns} FROM {table} WHERE {key} = ?", (row_id,))
        return rows[0] if rows else None

    def contents(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table but the errors table (which records each fatal result)."""
        return {t: self.query(f"SELECT * FROM {t} ORDER BY id") for t in ("lists", "todos", "notes", "unlisted")}

    def assert_intact(self, after: str) -> None:
        now = self.contents()
        for table, rows in self.tables.items():
            assert now[table] == rows, f"table {table} changed after {after}"


@pytest.fixture(params=[d for d in available_dialects() if d != "mssql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    dialect = request.param
    url = reset_database(dialect, schema_scripts(dialect), tmp_path)
    notes = NOTES[dialect]
    if dialect == "mysql":
        reader = RowReader(url)
        cursor = reader.conn.cursor()
        cursor.execute("SHOW COLLATION LIKE 'utf8mb4_nopad_bin'")
        notes = notes.format(bin="utf8mb4_nopad_bin" if cursor.fetchall() else "utf8mb4_0900_bin")
        reader.close()
    placeholder = "?" if dialect == "sqlite" else "%s"
    _run(url, dialect, [notes, UNLISTED[dialect]])
    _run(url, dialect, [sql.format(p=placeholder) for sql, _ in SEED_SQL], [params for _, params in SEED_SQL])
    config = tmp_path / "upload.yaml"
    config.write_text(_config_with_notes(), encoding="utf-8")
    rt = install_runtime(url, config)
    fixture = Db(dialect, url)
    assert [len(fixture.tables[t]) for t in ("lists", "todos", "notes", "unlisted")] == [2, 1, 2, 1]
    yield fixture
    fixture.close()
    rt.db.discard()
    set_runtime(None)


def send(entries: list[dict[str, Any]], payload: str, user: str = "U1") -> dict[str, Any]:
    """One shape-B request, one transaction per entry; the payload also rides in client_id, old and
    metadata. ``json.dumps`` writes NUL and lone surrogates as raw ``\\u`` escapes."""
    batch = [
        {"op_id": n, "tx_id": n, "old": {"x": payload}, "metadata": payload, **entry} for n, entry in enumerate(entries)
    ]
    text = json.dumps({"batch": batch, "client_id": payload})
    out = lambda_handler(event(text, authorization(user)), LocalContext())  # type: ignore[arg-type]
    status = int(out["statusCode"])
    assert status == 200, f"HTTP {status} for {short_name(payload)}: {out.get('body', '')[:300]}"
    body = json.loads(out["body"])
    assert len(body["results"]) == len(entries)
    return {"status": status, "body": body}


def results(answer: dict[str, Any]) -> list[tuple[str, str | None]]:
    assert answer["status"] == 200, answer
    return [
        (r["status"], r["failed_operation"]["error_code"] if r["status"] == "fatal_error" else None)
        for r in answer["body"]["results"]
    ]


def test_values_are_stored_verbatim_or_rejected(db: Db) -> None:
    def check(index: int, payload: str) -> Iterator[str]:
        note_id, list_id = f"v{index}", f"c0000000-0000-4000-8000-{index:012d}"
        # When the payload is a value in a text column, a varchar(100) and a varchar(200)
        answer = send(
            [
                {"op": "PUT", "type": "notes", "id": note_id, "data": {"body": payload}},
                {"op": "PUT", "type": "lists", "id": list_id, "data": {"name": payload}},
                {"op": "PATCH", "type": "notes", "id": note_id, "data": {"title": payload}},
            ],
            payload,
        )
        got = results(answer)
        # Then a legal value is stored as sent; an illegal or too long one is INVALID_DATA, nothing kept
        expect_body = legal(payload)
        expect_name = legal(payload) and len(payload) <= 100
        expect_title = legal(payload) and len(payload) <= 200
        expected = [
            ("success", None) if expect_body else ("fatal_error", "INVALID_DATA"),
            ("success", None) if expect_name else ("fatal_error", "INVALID_DATA"),
            ("success", None) if expect_title else ("fatal_error", "INVALID_DATA"),
        ]
        if got != expected:
            yield f"{short_name(payload)}: {got} != {expected}"
            return
        note, listed = db.row("notes", "body, title", note_id), db.row("lists", "name", list_id)
        if expect_body:
            assert note == (payload, payload if expect_title else None), short_name(payload)
        else:
            assert note is None, short_name(payload)
        assert listed == ((payload,) if expect_name else None), short_name(payload)
        # And deleting them again leaves the tables as they were
        results(
            send(
                [
                    {"op": "DELETE", "type": "notes", "id": note_id},
                    {"op": "DELETE", "type": "lists", "id": list_id},
                ],
                payload,
            )
        )
        db.assert_intact(f"value {short_name(payload)}")

    assert_no_problems(check)


def test_ids_are_stored_verbatim_or_rejected(db: Db) -> None:
    def check(index: int, payload: str) -> Iterator[str]:
        # When the payload is the id of a text-keyed row, of a UUID-keyed row, and of a todo
        answer = send(
            [
                {"op": "PUT", "type": "notes", "id": payload, "data": {"body": "by id", "id": payload}},
                {"op": "PATCH", "type": "lists", "id": payload, "data": {"name": "renamed"}},
                {"op": "DELETE", "type": "lists", "id": payload},
                {"op": "DELETE", "type": "todos", "id": payload},
                {"op": "PUT", "type": "todos", "id": payload, "data": {"list_id": payload, "description": "d"}},
            ],
            payload,
        )
        got = results(answer)
        stored = db.row("notes", "id, body", payload) if legal(payload) else None
        # Then the note is either stored under exactly that id, or rejected and absent
        if got[0] == ("success", None):
            if stored != (payload, "by id"):
                yield f"{short_name(payload)}: success but not stored verbatim"
        elif got[0][1] not in REFUSAL_CODES or stored is not None:
            yield f"{short_name(payload)}: {got[0]}, stored={stored is not None}"
        elif legal(payload) and len(payload) <= 191:
            yield f"{short_name(payload)}: a legal id was refused: {got[0]}"
        # and nothing else may have succeeded in a way that touches another row
        for status, code in got[1:]:
            if status == "fatal_error" and code not in REFUSAL_CODES | {"FOREIGN_KEY_VIOLATION"}:
                yield f"{short_name(payload)}: unexpected {code}"
        results(send([{"op": "DELETE", "type": "notes", "id": payload}], payload))
        assert not legal(payload) or db.row("notes", "id", payload) is None
        db.assert_intact(f"id {short_name(payload)}")

    assert_no_problems(check)


def test_table_names_never_reach_sql(db: Db) -> None:
    def check(index: int, payload: str) -> Iterator[str]:
        answer = send(
            [
                {"op": "PUT", "type": payload, "id": "t1", "data": {"body": "x"}},
                {"op": "DELETE", "type": payload, "id": "n1"},
                {"op": "PATCH", "type": payload, "id": L1, "data": {"name": "x"}},
            ],
            payload,
        )
        got = results(answer)
        if got != [("fatal_error", "SCHEMA_MISMATCH")] * 3:
            yield f"{short_name(payload)}: {got}"
        for result in answer["body"]["results"]:
            shown = result["failed_operation"]["details"].get("table", "")
            assert len(shown) <= 64 or (len(shown) == 65 and shown.endswith("…")), "names are cut to 64 characters"
        db.assert_intact(f"table name {short_name(payload)}")

    assert_no_problems(check)


def test_column_names_never_reach_sql(db: Db) -> None:
    def check(index: int, payload: str) -> Iterator[str]:
        answer = send(
            [
                {"op": "PUT", "type": "notes", "id": f"c{index}", "data": {payload: "x", "body": "b"}},
                {"op": "PATCH", "type": "notes", "id": "n1", "data": {payload: "x"}},
                {"op": "PUT", "type": "todos", "id": T2, "data": {payload: "x"}},
            ],
            payload,
        )
        # Then every one is refused for its own transaction (even lone surrogates in a key: not a 400)
        got = results(answer)
        if [code for _, code in got[:2]] != ["SCHEMA_MISMATCH"] * 2 or got[2][0] != "fatal_error":
            yield f"{short_name(payload)}: {got}"
        assert db.row("notes", "id", f"c{index}") is None
        db.assert_intact(f"column name {short_name(payload)}")

    assert_no_problems(check)


def test_errors_table_stores_hostile_client_ids_verbatim(db: Db) -> None:
    # The errors table is written with every fatal result: client_id and row_id are the client's text.
    payload = "'; DROP TABLE powersync_upload_errors; --"
    answer = send([{"op": "PUT", "type": "no_such_table", "id": payload, "data": {}}], payload)
    assert results(answer) == [("fatal_error", "SCHEMA_MISMATCH")]
    rows = db.query("SELECT client_id, row_id, table_name FROM powersync_upload_errors WHERE client_id = ?", (payload,))
    assert rows == [(payload, payload, "no_such_table")]
    db.assert_intact("a hostile client_id")
