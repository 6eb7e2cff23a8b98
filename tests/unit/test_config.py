"""Configuration (DESIGN.md section 4): the upload YAML file and the environment fail fast, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from powersync_upload.config import (
    ConfigError,
    TableConfig,
    key_problems,
    load_upload_config,
    schema_problems,
)
from powersync_upload.schema import INT_RANGES, Column, Kind, TableSchema
from powersync_upload.settings import Settings, log_level

VALID = """\
on_fatal_error: stop
max_transactions: 20
tables:
  lists:
    table: dbo.lists
    owner: owner_id
  todos:
    owner: owner_id
    parents: {list_id: lists}
    columns: [description, completed]
    rename: {done: completed}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "upload.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_is_read_with_its_values_and_defaults(tmp_path: Path) -> None:
    # Given a valid configuration file
    path = write(tmp_path, VALID)

    # When it is loaded
    config = load_upload_config(path)

    # Then every key is read, defaults fill the rest, and server names resolve
    assert config.on_fatal_error == "stop"
    assert config.max_transactions == 20
    assert config.tables["todos"].parents == {"list_id": "lists"}
    assert config.tables["todos"].columns == ["description", "completed"]
    assert config.tables["todos"].rename == {"done": "completed"}
    assert config.tables["todos"].key == "id"
    assert config.server_table("lists") == "dbo.lists"
    assert config.server_table("todos") == "todos"


def test_minimal_file_uses_the_documented_defaults(tmp_path: Path) -> None:
    # Given a file listing one table and nothing else
    path = write(tmp_path, "tables:\n  notes: {}\n")

    # When it is loaded
    config = load_upload_config(path)

    # Then on_fatal_error is continue and the cap is 50; the table has no owner
    assert config.on_fatal_error == "continue"
    assert config.max_transactions == 50
    assert config.tables["notes"].owner is None


def test_parent_naming_an_unconfigured_table_names_the_key(tmp_path: Path) -> None:
    # Given todos.parents.list_id pointing at a table that is not configured
    path = write(tmp_path, "tables:\n  todos:\n    parents: {list_id: lists}\n")

    # When / Then loading fails with a message naming the key and the missing table
    with pytest.raises(ConfigError, match=r"tables\.todos\.parents\.list_id") as caught:
        load_upload_config(path)
    assert "'lists'" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("tables:\n  todos:\n    ownr: owner_id\n", "tables.todos.ownr"),
        ("on_fatal_eror: stop\ntables:\n  todos: {}\n", "on_fatal_eror"),
    ],
    ids=["table-level", "top-level"],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    # Given a file with a misspelt key
    path = write(tmp_path, text)

    # When / Then loading fails naming that key
    with pytest.raises(ConfigError) as caught:
        load_upload_config(path)
    assert key in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("on_fatal_error: abort\ntables:\n  t: {}\n", "on_fatal_error"),
        ("max_transactions: 0\ntables:\n  t: {}\n", "max_transactions"),
        ("tables: {}\n", "tables"),
        ("on_fatal_error: stop\n", "tables"),
    ],
    ids=["bad-choice", "cap-zero", "no-tables", "missing-tables"],
)
def test_invalid_value_is_named(tmp_path: Path, text: str, key: str) -> None:
    # Given a file with a wrong value (or without tables)
    path = write(tmp_path, text)

    # When / Then loading fails naming the key
    with pytest.raises(ConfigError) as caught:
        load_upload_config(path)
    assert key in str(caught.value)


@pytest.mark.parametrize("text", ["tables: [unclosed\n", "tables:\n  a: b\n c: d\n"], ids=["flow", "indent"])
def test_file_that_is_not_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    # Given a file that is not YAML
    path = write(tmp_path, text)

    # When / Then loading fails saying so
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_upload_config(path)


@pytest.mark.parametrize("text", ["- lists\n- todos\n", "just text\n", ""], ids=["list", "scalar", "empty"])
def test_yaml_that_is_not_a_mapping_is_a_config_error(tmp_path: Path, text: str) -> None:
    # Given YAML whose top level is not a mapping
    path = write(tmp_path, text)

    # When / Then loading fails asking for a mapping with tables
    with pytest.raises(ConfigError, match="mapping"):
        load_upload_config(path)


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    # Given a path where no file exists
    path = tmp_path / "nowhere.yaml"

    # When / Then loading fails naming the path
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_upload_config(path)
    assert str(path) in str(caught.value)


# ---- conflicts, deltas, rules, ledger_days (DESIGN.md sections 3 and 4) -------------------------------

SHOP = """\
ledger_days: 3
tables:
  items:
    owner: owner_id
    conflicts: {detect: previous_values, on_conflict: skip}
    deltas: [quantity]
    rules:
      frozen_when: {status: [shipped]}
      transitions: {status: {pending: [packed, cancelled], packed: [shipped]}, level: {1: [2]}}
  notes:
    conflicts: {detect: version, version_column: version}
"""


def test_conflict_delta_and_rule_keys_are_read_with_their_defaults(tmp_path: Path) -> None:
    # Given a file using every conflict-handling key of DESIGN section 4
    path = write(tmp_path, SHOP)

    # When it is loaded
    config = load_upload_config(path)

    # Then each key is read; a table without them detects nothing and rejects on conflict
    items, notes = config.tables["items"], config.tables["notes"]
    assert config.ledger_days == 3
    assert (items.conflicts.detect, items.conflicts.on_conflict) == ("previous_values", "skip")
    assert items.deltas == ["quantity"]
    assert items.rules.frozen_when == {"status": ["shipped"]}
    assert items.rules.transitions["level"] == {"1": [2]}
    assert (notes.conflicts.detect, notes.conflicts.version_column, notes.conflicts.on_conflict) == (
        "version",
        "version",
        "reject",
    )
    assert load_upload_config(write(tmp_path, "tables:\n  t: {}\n")).ledger_days == 7
    assert load_upload_config(write(tmp_path, "tables:\n  t: {}\n")).tables["t"].conflicts.detect == "none"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("conflicts: {detect: versions}", "tables.t.conflicts.detect"),
        ("conflicts: {detect: version, on_conflict: ignore, version_column: v}", "tables.t.conflicts.on_conflict"),
        ("conflicts: {detect: version}", "tables.t.conflicts.version_column: required"),
        ("conflicts: {version_column: v}", "tables.t.conflicts.version_column: only used with detect: version"),
        ("conflicts: {detect: none, strategy: x}", "tables.t.conflicts.strategy"),
        ("rules: {frozen: {status: [a]}}", "tables.t.rules.frozen"),
        ("rules: {frozen_when: {status: []}}", "tables.t.rules.frozen_when.status: lists no values"),
        ("deltas: [qty, qty]", "tables.t.deltas: 'qty' is listed twice"),
        ("deltas: [id]", "tables.t.deltas: 'id' is the table's key"),
        ("{owner: owner_id, deltas: [owner_id]}", "tables.t.deltas: 'owner_id' is the table's owner column"),
        (
            "{conflicts: {detect: version, version_column: v}, deltas: [v]}",
            "tables.t.deltas: 'v' is conflicts.version_column",
        ),
        ("{columns: [name], deltas: [qty]}", "tables.t.deltas: 'qty' is not in tables.t.columns"),
        ("conflicts: {missing_previous: skip}", "tables.t.conflicts.missing_previous"),
        ("conflicts: {missing_previous: apply}", "tables.t.conflicts.missing_previous: only used with detect"),
    ],
    ids=[
        "detect-choice",
        "on-conflict-choice",
        "version-without-column",
        "column-without-version",
        "unknown-conflicts-key",
        "unknown-rules-key",
        "frozen-without-values",
        "delta-twice",
        "delta-on-key",
        "delta-on-owner",
        "delta-on-version",
        "delta-not-writable",
        "missing-previous-choice",
        "missing-previous-without-checks",
    ],
)
def test_conflict_configuration_errors_name_the_full_key(tmp_path: Path, table: str, key: str) -> None:
    # Given a table whose conflict, delta or rule keys are wrong
    body = table if table.startswith("{") else "{" + table + "}"
    path = write(tmp_path, f"tables:\n  t: {body}\n")

    # When / Then loading fails at cold start with a message naming the full key
    with pytest.raises(ConfigError) as caught:
        load_upload_config(path)
    assert key in str(caught.value)


@pytest.mark.parametrize("days", ["0", "-1", "ten"])
def test_ledger_days_must_be_a_positive_number_of_days(tmp_path: Path, days: str) -> None:
    # Given a ledger window that is not a positive whole number of days
    path = write(tmp_path, f"ledger_days: {days}\ntables:\n  t: {{}}\n")

    # When / Then loading fails naming ledger_days
    with pytest.raises(ConfigError, match="ledger_days"):
        load_upload_config(path)


def test_the_conflicts_table_is_writable_without_configuration_resolved_only(tmp_path: Path) -> None:
    # Given a file that does not mention the conflicts table, and one that configures it itself
    implicit = load_upload_config(write(tmp_path, "tables:\n  t: {}\n"))
    own = load_upload_config(write(tmp_path, "tables:\n  powersync_upload_conflicts: {owner: user_id}\n"))

    # When / Then the first lets users write only `resolved` on their own rows; the second keeps its own
    table = implicit.tables["powersync_upload_conflicts"]
    assert (table.owner, table.columns, table.reads_rows) == ("user_id", ["resolved"], False)
    assert own.tables["powersync_upload_conflicts"].columns is None


def _items_schema() -> TableSchema:
    columns = [
        Column("id", Kind.UUID),
        Column("name", Kind.TEXT, max_length=10),
        Column("status", Kind.TEXT, max_length=7),
        Column("quantity", Kind.INTEGER, int_range=INT_RANGES["int"]),
        Column("version", Kind.INTEGER, int_range=INT_RANGES["int"]),
    ]
    return TableSchema("items", {c.name: c for c in columns})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"deltas": ["name"]}, "tables.items.deltas: 'name' is text in items; it must be numeric"),
        ({"deltas": ["stock"]}, "tables.items.deltas: 'stock' is not a column of items"),
        (
            {"conflicts": {"detect": "version", "version_column": "name"}},
            "tables.items.conflicts.version_column: 'name' is text in items; it must be numeric",
        ),
        ({"rules": {"frozen_when": {"colour": ["red"]}}}, "tables.items.rules.frozen_when.colour: 'colour' is not a"),
        (
            {"rules": {"transitions": {"status": {"pending": ["cancelled"]}}}},
            "tables.items.rules.transitions.status: a value does not fit column 'status' (too_long)",
        ),
        ({"rules": {"frozen_when": {"quantity": ["many"]}}}, "tables.items.rules.frozen_when.quantity: a value"),
    ],
    ids=[
        "delta-not-numeric",
        "delta-missing",
        "version-not-integer",
        "rule-unknown-column",
        "rule-value-too-long",
        "rule-value-wrong-type",
    ],
)
def test_schema_checks_name_the_key_and_the_column(table: dict[str, object], message: str) -> None:
    # Given a table configuration that is valid YAML but does not fit the introspected table
    config = TableConfig.model_validate(table)

    # When it is checked against the schema (first introspection)
    problems = schema_problems("items", config, _items_schema())

    # Then the one problem names the full key and the column
    assert len(problems) == 1
    assert problems[0].startswith(message)


def test_a_fitting_table_has_no_schema_problems() -> None:
    # Given deltas, a version column and rules that all fit the table (a renamed column included)
    config = TableConfig.model_validate(
        {
            "rename": {"qty": "quantity"},
            "deltas": ["qty"],
            "conflicts": {"detect": "version", "version_column": "version"},
            "rules": {"frozen_when": {"status": ["shipped"]}, "transitions": {"quantity": {"1": [2, "3"]}}},
        }
    )

    # When / Then the schema check finds nothing
    assert schema_problems("items", config, _items_schema()) == []


def test_a_rowversion_column_is_a_valid_version_column_but_not_a_delta() -> None:
    # Given a SQL Server rowversion column (catalog type name: timestamp; read-only)
    columns = {
        "id": Column("id", Kind.UUID, type_name="uniqueidentifier"),
        "version": Column("version", Kind.OTHER, type_name="timestamp", writable=False),
    }
    schema = TableSchema("dbo.notes", columns)
    versioned = TableConfig.model_validate({"conflicts": {"detect": "version", "version_column": "version"}})

    # When / Then it is accepted as the version column (the server changes it on every write)
    assert schema_problems("notes", versioned, schema) == []
    # and refused as a deltas column, which must be numeric
    assert schema_problems("notes", TableConfig.model_validate({"deltas": ["version"]}), schema) != []


def _keyed(primary_key: tuple[str, ...] = (), unique: tuple[tuple[str, ...], ...] = (), loose: int = 0) -> TableSchema:
    """A ``notes`` table with columns ``id``, ``tenant``, ``email`` and ``title``; the last ``loose``
    members of ``unique`` are partial or filtered."""
    columns = {name: Column(name, Kind.TEXT) for name in ("id", "tenant", "email", "title")}
    return TableSchema(
        "notes", columns, primary_key=primary_key, unique=unique, loose_unique=unique[-loose:] if loose else ()
    )


@pytest.mark.parametrize(
    ("key", "schema"),
    [
        ("id", _keyed(primary_key=("id",))),
        ("ID", _keyed(primary_key=("id",))),
        ("email", _keyed(primary_key=("id",), unique=(("email",),))),
        ("email", _keyed(unique=(("email",), ("email",)), loose=1)),
    ],
    ids=["primary-key", "primary-key-other-case", "unique-column", "unique-beside-a-partial-one"],
)
def test_a_key_that_identifies_one_row_has_no_problem(key: str, schema: TableSchema) -> None:
    # Given a key that is the primary key, or alone in a unique index that covers every row
    config = TableConfig.model_validate({"key": key})

    # When / Then the first introspection finds nothing to fix
    assert key_problems("notes", config, schema) == []


@pytest.mark.parametrize(
    ("key", "schema"),
    [
        ("title", _keyed(primary_key=("id",))),
        ("id", _keyed()),
        ("id", _keyed(primary_key=("tenant", "id"))),
        ("email", _keyed(primary_key=("id",), unique=(("email", "tenant"),))),
        ("email", _keyed(primary_key=("id",), unique=(("email",),), loose=1)),
    ],
    ids=[
        "plain-column",
        "no-key-at-all",
        "part-of-composite-primary-key",
        "part-of-composite-unique",
        "partial-unique",
    ],
)
def test_a_key_that_could_name_several_rows_is_a_problem_naming_table_column_and_fix(
    key: str, schema: TableSchema
) -> None:
    # Given a key column that does not alone hold a different value in every row
    config = TableConfig.model_validate({"key": key})

    # When it is checked at first introspection
    problems = key_problems("notes", config, schema)

    # Then one message names the full key, the table and the column, and says how to fix it
    assert len(problems) == 1
    assert problems[0].startswith(f"tables.notes.key: column '{key}' of notes is neither its primary key")
    assert f"CREATE UNIQUE INDEX ... ON notes ({key})" in problems[0]


def test_a_key_the_table_lacks_is_a_problem() -> None:
    # Given a key column the table does not have / When / Then the message names it
    problems = key_problems("notes", TableConfig.model_validate({"key": "uuid"}), _keyed(primary_key=("id",)))
    assert problems == ["tables.notes.key: 'uuid' is not a column of notes"]


# ---- environment ---------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting from the machine running the tests leaks in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_settings_from_env_reads_upper_case_names(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given the function's environment variables
    clean_env.setenv("DATABASE_URL", "mssql://u:p@db:1433/app")
    clean_env.setenv("AUTH_MODE", "handler")
    clean_env.setenv("DEADLINE_S", "12.5")
    clean_env.setenv("UPLOAD_CONFIG", str(tmp_path / "upload.yaml"))
    clean_env.setenv("JWT_LEEWAY_S", "")  # empty means unset

    # When settings are built
    settings = Settings.from_env()

    # Then the values are read and typed; unset ones keep their defaults
    assert settings.database_url == "mssql://u:p@db:1433/app"
    assert settings.auth_mode == "handler"
    assert settings.deadline_s == 12.5
    assert settings.upload_config == tmp_path / "upload.yaml"
    assert settings.jwt_leeway_s == 30
    assert settings.db_secret_id is None


def test_settings_defaults_with_an_empty_environment(clean_env: pytest.MonkeyPatch) -> None:
    # Given no variables / When settings are built / Then the documented defaults apply
    settings = Settings.from_env()
    assert settings.auth_mode == "authorizer"
    assert settings.deadline_s == 28.0
    assert settings.database_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTH_MODE", "magic"), ("DEADLINE_S", "soon"), ("JWT_LEEWAY_S", "-1"), ("MAX_BODY_BYTES", "10")],
)
def test_bad_environment_value_names_the_variable(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    # Given one variable with an invalid value
    clean_env.setenv(name, value)

    # When / Then building settings fails naming the variable
    with pytest.raises(ConfigError, match=name):
        Settings.from_env()


def test_a_key_given_twice_anywhere_in_the_file_is_refused_naming_it(tmp_path: Path) -> None:
    # Given: a table listed twice and a rename key given twice
    path = tmp_path / "upload.yaml"
    path.write_text("tables:\n  lists:\n    owner: owner_id\n    rename: {a: b, a: c}\n  lists: {}\n", encoding="utf-8")
    # When / Then: loading fails naming both keys with their lines
    with pytest.raises(ConfigError) as caught:
        load_upload_config(path)
    assert "tables.lists.rename.a is given twice (lines 4 and 4)" in str(caught.value)
    assert "tables.lists is given twice (lines 2 and 5)" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "level"), [("trace", "DEBUG"), ("warn", "WARNING"), ("info", "INFO"), ("DEBUG", "DEBUG"), ("", None)]
)
def test_log_level_accepts_the_standard_names_and_trace(value: str, level: str | None) -> None:
    assert log_level({"POWERTOOLS_LOG_LEVEL": value}) == level


def test_an_unknown_log_level_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="POWERTOOLS_LOG_LEVEL: 'verbose' is not a log level"):
        log_level({"POWERTOOLS_LOG_LEVEL": "verbose"})


def test_an_hs256_secret_shorter_than_32_bytes_is_refused() -> None:
    # Given / When / Then: 31 bytes fail naming JWT_SECRET and the RFC; 32 bytes pass
    with pytest.raises(ValidationError, match="JWT_SECRET: an HS256 secret must be at least 32 bytes"):
        Settings(jwt_secret="x" * 31)
    assert Settings(jwt_secret="x" * 32).jwt_secret == "x" * 32


def test_a_jwks_file_that_is_not_a_jwks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text('{"not": "keys"}', encoding="utf-8")
    with pytest.raises(ValidationError, match=r"JWT_JWKS_FILE: .* is not a JWKS"):
        Settings(jwt_jwks_file=path)


@pytest.mark.parametrize(
    "table",
    ["{rename: {a: name, b: name}}", "{rename: {a: name}, columns: [a, name]}"],
    ids=["two-renames", "rename-and-allowed-name"],
)
def test_two_client_names_writing_one_server_column_name_the_rename_key(tmp_path: Path, table: str) -> None:
    # Given a table where two client column names would write the same server column
    path = write(tmp_path, f"tables:\n  t: {table}\n")

    # When / Then loading fails at cold start naming the key and the column, instead of one value
    # silently winning when an operation sends both
    with pytest.raises(ConfigError) as caught:
        load_upload_config(path)
    assert "tables.t.rename: 'a' and " in str(caught.value)
    assert "the same server column 'name'" in str(caught.value)


def test_a_rename_to_a_name_no_other_client_name_writes_is_accepted(tmp_path: Path) -> None:
    # Given renames that swap two columns and an allow-list naming only the client names
    path = write(tmp_path, "tables:\n  t: {rename: {a: b, b: a, c: d}, columns: [a, b, c, e]}\n")
    # When / Then it loads
    assert load_upload_config(path).tables["t"].server_column("c") == "d"
