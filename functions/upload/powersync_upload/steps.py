"""What the planner needs of prepared writes: each one's ``Step`` and the request's ``Tables``.

Pure work on the introspected schema and the configuration (:mod:`powersync_upload.plan` is the
planner that reads these values); no row is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import UploadConfig
from .plan import OnDelete, RowRef, Step, Tables, identity
from .prepare import Prepared, Target
from .schema import Column, TableSchema


def plan_table(name: str) -> str:
    """A server table as the planner names it: without schema, case-folded, so that a foreign key's
    ``dbo.lists`` and a configured ``lists`` are the same table."""
    return name.rpartition(".")[2].casefold()


def _single_column_keys(schema: TableSchema) -> list[tuple[str, str]]:
    """(referencing column, parent table) of the single-column foreign keys."""
    return [(fk.columns[0], plan_table(fk.parent)) for fk in schema.foreign_keys if len(fk.columns) == 1]


def self_reference_column(schema: TableSchema) -> Column | None:
    """The column of a single-column foreign key from the table to itself, if there is one."""
    me = plan_table(schema.name)
    for column, parent in _single_column_keys(schema):
        if parent == me:
            return schema.column(column)
    return None


@dataclass(frozen=True)
class TableFacts:
    """What :func:`step_of` needs of a table, computed once per request: its planner name, its
    single-column foreign keys and the columns of its unique indexes (case-folded)."""

    name: str
    foreign_keys: tuple[tuple[str, str], ...]
    indexed: frozenset[str]

    @classmethod
    def of(cls, schema: TableSchema) -> TableFacts:
        """The facts of ``schema``."""
        indexed = frozenset(c.casefold() for columns in schema.unique for c in columns)
        return cls(plan_table(schema.name), tuple(_single_column_keys(schema)), indexed)


def step_of(tx: int, index: int, item: Prepared, facts: dict[str, TableFacts] | None = None) -> Step:
    """What the planner needs of a prepared write (see :class:`powersync_upload.plan.Step`).

    Args:
        facts: a per-request cache of :class:`TableFacts` by server table name.
    """
    schema = item.target.schema
    known = facts if facts is not None else {}
    table = known.get(schema.name)
    if table is None:
        table = known[schema.name] = TableFacts.of(schema)
    op = item.operation.op
    refs: list[RowRef] = []
    for ref in item.parents:
        refs.append((plan_table(ref.parent.schema.name), identity(ref.key_value)))
    values = item.values
    for column, parent in table.foreign_keys:
        value = values.get(column)
        if value is not None:
            refs.append((parent, identity(value)))
    sets_unique = False
    if table.indexed and op != "DELETE":
        sets_unique = op == "PUT" or any(name.casefold() in table.indexed for name in values)
    return Step(
        tx,
        index,
        table.name,
        op,
        identity(item.key_value),
        tuple(values) if op != "DELETE" else (),
        tuple(dict.fromkeys(refs)) if len(refs) > 1 else tuple(refs),
        sets_unique,
    )


def tables_of(targets: list[Target], config: UploadConfig) -> Tables:
    """Foreign keys (introspected, and the configured ``parents``) and unique indexes of the tables."""
    parents: dict[str, dict[str, OnDelete]] = {}
    unique: set[str] = set()
    for target in targets:
        name = plan_table(target.schema.name)
        rules = parents.setdefault(name, {})
        for fk in target.schema.foreign_keys:
            rule = fk.on_delete
            if rules.get(plan_table(fk.parent)) != "cascade":
                rules[plan_table(fk.parent)] = rule
        for parent_table in target.config.parents.values():
            rules.setdefault(plan_table(config.server_table(parent_table)), "restrict")
        if target.schema.unique:
            unique.add(name)
    return Tables(
        parents={child: tuple(rules.items()) for child, rules in parents.items()},
        unique=frozenset(unique),
    )
