"""Configuration: the upload YAML file (DESIGN.md section 4) as pydantic models (the environment is ``settings``).

Read once per container (cold start) and validated there, so a broken file stops start-up with a
message that names the key to fix instead of failing the first upload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .convert import InvalidValue, convert
from .schema import Column, Kind, TableSchema

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "upload.yaml"
CONFLICTS_TABLE = "powersync_upload_conflicts"
"""The conflicts table (DESIGN.md section 3): clients may PATCH ``resolved`` on their own rows without
configuration (:meth:`UploadConfig._conflicts_table_is_writable`)."""


class ConfigError(Exception):
    """The configuration file or the environment is invalid; the message says what to fix."""


RuleValue = str | int | float | bool
"""A value in ``rules``, as YAML gives it; converted like a client value for its column at first
introspection (:func:`schema_problems`)."""


class ConflictsConfig(BaseModel):
    """``tables.<name>.conflicts`` (DESIGN.md section 3, "Conflicts").

    Attributes:
        detect: ``none`` (last write wins per column), ``previous_values`` (a PATCH's ``old`` must
            still match the server) or ``version`` (a server-incremented ``version_column``).
        on_conflict: ``reject`` the whole transaction (``CONFLICT``, fatal) or ``skip`` only the
            conflicting operation (``CONFLICT_SKIPPED`` warning; the rest commits).
        version_column: with ``detect: version``, the server column holding the row's version
            (compared, never written by the client; every update sets it to ``version + 1``).
        missing_previous: what to do with an entry that carries no previous values at all (the
            reference connectors of the SDKs send none) on a change whose check or delta needs them:
            ``reject`` it (``INVALID_DATA`` ``needs_previous_value``, with a message saying the
            connector sent none and how to fix it: no silent lost update) or ``apply`` it unchecked
            (last write wins, a delta column takes the value sent) with the warning
            ``CONFLICT_UNCHECKED``. Unset: ``reject`` where the write cannot be computed without
            them (a delta, a version check), and for ``detect: previous_values`` the PATCH is applied
            unchecked with the warning ``CONFLICT_UNCHECKED`` (DESIGN section 3: "a PATCH without
            ``old`` is not checked"; the warning makes it seen); set ``reject`` to refuse those too.
    """

    model_config = ConfigDict(extra="forbid")

    detect: Literal["none", "previous_values", "version"] = "none"
    on_conflict: Literal["reject", "skip"] = "reject"
    version_column: str | None = None
    missing_previous: Literal["reject", "apply"] | None = None


class RulesConfig(BaseModel):
    """``tables.<name>.rules``: business rules checked against the row as the transaction has left it.

    Attributes:
        frozen_when: column -> values; a row whose current value is listed refuses every change
            (PATCH, DELETE, PUT of the existing row).
        transitions: column -> {from value: [allowed to values]}; a change not listed is refused; a
            current value that is not a ``from`` key allows no change, a NULL one allows any.
    """

    model_config = ConfigDict(extra="forbid")

    frozen_when: dict[str, list[RuleValue]] = Field(default_factory=dict)
    transitions: dict[str, dict[str, list[RuleValue]]] = Field(default_factory=dict)

    @field_validator("transitions", mode="before")
    @classmethod
    def _from_keys_as_text(cls, value: object) -> object:
        # YAML reads `1: [2]` with an integer key; keys are kept as text and converted with the rest.
        if isinstance(value, dict):
            return {
                column: {str(k): v for k, v in moves.items()} if isinstance(moves, dict) else moves
                for column, moves in value.items()
            }
        return value


class TableConfig(BaseModel):
    """One client table that clients may write.

    Attributes:
        table: server table, optionally schema-qualified (``dbo.lists``); default: the client name.
        key: server column holding the CrudEntry ``id``.
        owner: server column that must equal the JWT ``sub``; ``None`` makes the table writable by
            every authenticated user.
        parents: server column -> client table name of the referenced table; a written value must
            reference an existing row owned by the caller (when that table has an owner).
        columns: optional allow-list of client column names (key, owner and parents always allowed).
        rename: client column name -> server column name.
        conflicts: conflict detection, see :class:`ConflictsConfig`.
        deltas: client columns whose PATCH applies ``new - old`` to the current value.
        rules: see :class:`RulesConfig`.
    """

    model_config = ConfigDict(extra="forbid")

    table: str | None = None
    key: str = "id"
    owner: str | None = None
    parents: dict[str, str] = Field(default_factory=dict)
    columns: list[str] | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    conflicts: ConflictsConfig = Field(default_factory=ConflictsConfig)
    deltas: list[str] = Field(default_factory=list)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    _patch_only: bool = PrivateAttr(default=False)

    @property
    def patch_only(self) -> bool:
        """Whether PUT and DELETE are ``UNAUTHORIZED`` (the conflicts table when the file does not
        configure it: the app may only PATCH ``resolved`` on its own rows)."""
        return self._patch_only

    @property
    def reads_rows(self) -> bool:
        """Whether a write needs the current row first (conflict detection, deltas or rules)."""
        return self.conflicts.detect != "none" or bool(self.deltas or self.rules.frozen_when or self.rules.transitions)

    def server_column(self, client_column: str) -> str:
        """The server column a client column name writes (``rename`` applied)."""
        return self.rename.get(client_column, client_column)

    def problems(self, name: str) -> list[str]:
        """Checks that need only the YAML, each message naming the full key (``tables.<name>....``)."""
        where = f"tables.{name}"
        return [
            *self._version_problems(where),
            *self._delta_problems(where),
            *self._rule_problems(where),
            *self._rename_problems(where),
        ]

    def _rename_problems(self, where: str) -> list[str]:
        """Two client names that write one server column (two ``rename`` sources with one target, or
        two names of the ``columns`` allow-list, when set): an operation sending both would keep one
        value silently."""
        names = list(self.rename) if self.columns is None else list(dict.fromkeys(self.columns))
        writers: dict[str, list[str]] = {}
        for name in names:
            writers.setdefault(self.server_column(name).casefold(), []).append(name)
        return [
            f"{where}.rename: {' and '.join(repr(n) for n in found)} write the same server column "
            f"'{self.server_column(found[0])}'"
            for found in writers.values()
            if len(found) > 1
        ]

    def _version_problems(self, where: str) -> list[str]:
        detect, version = self.conflicts.detect, self.conflicts.version_column
        if detect == "version" and not version:
            return [f"{where}.conflicts.version_column: required when detect is 'version'"]
        if detect != "version" and version:
            return [f"{where}.conflicts.version_column: only used with detect: version (detect is '{detect}')"]
        if self.conflicts.missing_previous == "apply" and detect == "none" and not self.deltas:
            uses = "detect: previous_values or version, or with deltas"
            return [f"{where}.conflicts.missing_previous: only used with {uses}"]
        return []

    def _delta_problems(self, where: str) -> list[str]:
        found = []
        version = self.conflicts.version_column
        protected = {c.casefold(): label for c, label in self._protected().items()}
        seen: set[str] = set()
        for column in self.deltas:
            if column in seen:
                found.append(f"{where}.deltas: '{column}' is listed twice")
            seen.add(column)
            label = protected.get(self.server_column(column).casefold())
            if label is not None:
                found.append(f"{where}.deltas: '{column}' is the table's {label}, which cannot be a delta")
            elif version and self.server_column(column).casefold() == version.casefold():
                found.append(f"{where}.deltas: '{column}' is conflicts.version_column, which the server increments")
            elif self.columns is not None and column not in self.columns:
                found.append(f"{where}.deltas: '{column}' is not in {where}.columns, so clients cannot write it")
        return found

    def _rule_problems(self, where: str) -> list[str]:
        rules = (("frozen_when", self.rules.frozen_when), ("transitions", self.rules.transitions))
        return [
            f"{where}.rules.{kind}.{column}: lists no values"
            for kind, by_column in rules
            for column, values in by_column.items()
            if not values
        ]

    def _protected(self) -> dict[str, str]:
        out = {self.key: "key"}
        if self.owner:
            out[self.owner] = "owner column"
        out.update(dict.fromkeys(self.parents, "parent column"))
        return out


class Limits(BaseModel):
    """Size limits on what one client may send; each breach is answered with the contract's codes.

    Attributes:
        max_operations_per_transaction: a longer transaction is a ``fatal_error`` (``INVALID_DATA``,
            reason ``too_long``): it can never be applied, and it must not block the upload queue.
        max_columns_per_operation: more keys in one operation's data: ``INVALID_DATA`` (``too_long``).
        max_text_chars: longest text value, in characters: ``INVALID_DATA`` (``too_long``).
        max_json_chars: longest array or object value, as JSON text: ``INVALID_DATA`` (``too_long``).
    (A body over ``MAX_BODY_BYTES`` is answered per transaction, ``TOO_LARGE``; shape A transactions
    past ``max_transactions`` are ``not_attempted``, and a request over both it and the reference
    write API's 50 is a 400.)
    """

    model_config = ConfigDict(extra="forbid")

    max_operations_per_transaction: int = Field(default=10_000, ge=1)
    max_columns_per_operation: int = Field(default=500, ge=1)
    max_text_chars: int = Field(default=1_000_000, ge=1)
    max_json_chars: int = Field(default=1_000_000, ge=1)


class UploadConfig(BaseModel):
    """The whole upload configuration file (DESIGN.md section 4).

    Attributes:
        on_fatal_error: after a fatal transaction, ``continue`` with the next one or ``stop`` (shape A).
        max_transactions: shape A cap per request: transactions past it are ``not_attempted``; a
            request over both it and the reference write API's 50 is a 400.
        errors_table: server table where every fatal result is also recorded; ``null`` disables it.
        limits: see :class:`Limits`.
        tables: client table name -> :class:`TableConfig`.
        ledger_days: how long (days) a decided transaction of a request naming ``client_id`` is
            remembered in ``powersync_upload_ledger``: a replay within it is answered from the ledger
            instead of being applied again (DESIGN.md section 3, "Replays").
    """

    model_config = ConfigDict(extra="forbid")

    on_fatal_error: Literal["continue", "stop"] = "continue"
    max_transactions: int = Field(default=50, ge=1, le=10_000)
    errors_table: str | None = "powersync_upload_errors"
    limits: Limits = Field(default_factory=Limits)
    ledger_days: int = Field(default=7, ge=1, le=3650)
    tables: dict[str, TableConfig]

    @field_validator("tables")
    @classmethod
    def _at_least_one(cls, tables: dict[str, TableConfig]) -> dict[str, TableConfig]:
        if not tables:
            raise ValueError("list at least one client table under 'tables'")
        return tables

    @model_validator(mode="after")
    def _parents_are_configured(self) -> UploadConfig:
        for name, table in self.tables.items():
            for column, parent in table.parents.items():
                if parent not in self.tables:
                    raise ValueError(f"tables.{name}.parents.{column} names '{parent}', which is not under 'tables'")
        problems = [problem for name, table in self.tables.items() for problem in table.problems(name)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _conflicts_table_is_writable(self) -> UploadConfig:
        """The app marks a conflict resolved by a PATCH of ``resolved`` on its own row (DESIGN.md
        section 3): the conflicts table is writable that far (a PATCH only) unless the file configures
        it itself."""
        if CONFLICTS_TABLE not in self.tables:
            table = TableConfig(owner="user_id", columns=["resolved"])
            table._patch_only = True
            self.tables[CONFLICTS_TABLE] = table
        return self

    def server_table(self, client_table: str) -> str:
        """The server table name for a configured client table."""
        return self.tables[client_table].table or client_table


_NUMERIC = (Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT)


SERVER_VERSION_TYPES = ("timestamp", "rowversion")
"""Column types whose value the server changes on every write by anyone (SQL Server ``rowversion``,
whose catalog name is ``timestamp``): a ``version_column`` of this type is compared (as the text the
dialect reads it as, ``0x`` and 16 upper-case hex digits) and never written."""


def server_versioned(column: Column) -> bool:
    """Whether ``column`` is a read-only, server-maintained row version (:data:`SERVER_VERSION_TYPES`)."""
    return column.type_name.lower() in SERVER_VERSION_TYPES and not column.writable


def schema_problems(name: str, table: TableConfig, schema: TableSchema) -> list[str]:
    """The checks of ``tables.<name>`` that need the introspected table (DESIGN.md section 4): a delta
    or version column that is missing or not numeric, a rule on an unknown column, a rule value the
    column cannot hold. Run once at first introspection; a table with problems is then answered
    ``SCHEMA_MISMATCH``.

    Returns:
        one message per problem, each naming the full key; empty when the table fits.
    """
    found = []
    where = f"tables.{name}"
    wanted: list[tuple[str, str, tuple[Kind, ...]]] = [(f"{where}.deltas", c, _NUMERIC) for c in table.deltas]
    if table.conflicts.detect == "version" and table.conflicts.version_column:
        wanted.append((f"{where}.conflicts.version_column", table.conflicts.version_column, (Kind.INTEGER,)))
    for key, client, kinds in wanted:
        column = schema.column(table.server_column(client))
        if column is None:
            found.append(f"{key}: '{client}' is not a column of {schema.name}")
        elif column.kind not in kinds and not (key.endswith(".version_column") and server_versioned(column)):
            found.append(f"{key}: '{client}' is {column.kind.value} in {schema.name}; it must be numeric")
    rules: list[tuple[str, str, list[Any]]] = [
        (f"{where}.rules.frozen_when.{c}", c, list(values)) for c, values in table.rules.frozen_when.items()
    ]
    for client, moves in table.rules.transitions.items():
        values = [v for source, targets in moves.items() for v in (source, *targets)]
        rules.append((f"{where}.rules.transitions.{client}", client, values))
    for key, client, values in rules:
        column = schema.column(table.server_column(client))
        if column is None:
            found.append(f"{key}: '{client}' is not a column of {schema.name}")
            continue
        for value in values:
            try:
                convert(value, column)
            except InvalidValue as exc:
                found.append(f"{key}: a value does not fit column '{client}' ({exc.reason.value})")
                break
    return found


def key_problems(name: str, table: TableConfig, schema: TableSchema) -> list[str]:
    """The check of ``tables.<name>.key`` that needs the introspected table (DESIGN.md section 4): the
    key must name a column that identifies one row (:meth:`TableSchema.identifies_rows`: the whole
    primary key, or the only column of a unique index or constraint that holds for every row). Any
    other column could match several rows: PostgreSQL and SQLite refuse its ``ON CONFLICT`` target,
    MariaDB/MySQL would insert a second row with the same id, and an update or delete would change
    every row with that id. Run at first introspection of every configured table; a table with a
    problem is then answered ``SCHEMA_MISMATCH``.

    Returns:
        one message naming the key, the table and the column, and how to fix it; empty when it fits.
    """
    where = f"tables.{name}.key"
    column = schema.column(table.key)
    if column is None:
        return [f"{where}: '{table.key}' is not a column of {schema.name}"]
    if schema.identifies_rows(column.name):
        return []
    return [
        f"{where}: column '{column.name}' of {schema.name} is neither its primary key nor the only column "
        f"of a unique index or constraint (a composite, partial or filtered one does not count), so one id "
        f"could name several rows; make '{column.name}' the primary key or give it a unique index of its "
        f"own (CREATE UNIQUE INDEX ... ON {schema.name} ({column.name})), or set {where} to a column that has one"
    ]


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid upload configuration"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  - {where}: {error['msg']}")
    return "\n".join(lines)


def duplicate_keys(node: yaml.Node | None, where: str = "") -> list[str]:
    """Every mapping key given twice in a composed YAML document, as ``path.key (lines a and b)``:
    YAML loaders keep the last one silently, and a second ``lists:`` block would drop the first
    one's ``owner``."""
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            path = f"{where}.{name}" if where else name
            if name in seen:
                found.append(f"{path} is given twice (lines {seen[name]} and {key.start_mark.line + 1})")
            seen.setdefault(name, key.start_mark.line + 1)
            found.extend(duplicate_keys(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.extend(duplicate_keys(item, f"{where}[{index}]"))
    return found


def load_upload_config(path: Path) -> UploadConfig:
    """Read and validate the YAML configuration file.

    Raises:
        ConfigError: the file is missing, is not YAML, or does not match :class:`UploadConfig`;
            the message names the file and each key to fix.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = path.read_text(encoding="utf-8")
        twice = duplicate_keys(yaml.compose(text, Loader=loader))
        raw = yaml.load(text, Loader=loader)  # noqa: S506
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the upload configuration ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if twice:
        raise ConfigError(f"{path}: invalid upload configuration\n" + "\n".join(f"  - {t}" for t in twice))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the upload configuration must be a mapping with a 'tables' key")
    try:
        return UploadConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from exc
