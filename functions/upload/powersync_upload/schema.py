"""The server's tables as the engine needs them: columns with dialect-neutral types, cached per container.

Dialects introspect their catalog into :class:`TableSchema`; :class:`SchemaCache` keeps the result for
the life of the container and refreshes a table at most once a minute when an upload names a column
it does not know (DESIGN.md section 3, "Schema changes"), so a migration needs no redeploy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

REFRESH_INTERVAL_S = 60.0


class Kind(StrEnum):
    """What a column holds, independent of the dialect; it picks the conversion rule in ``convert``."""

    TEXT = "text"
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    UUID = "uuid"
    TIMESTAMP = "timestamp"  # no zone: stored as UTC
    TIMESTAMPTZ = "timestamptz"  # with zone or offset
    DATE = "date"
    TIME = "time"
    JSON = "json"
    OTHER = "other"  # passed to the driver as text; the database converts or rejects it


LengthUnit = Literal["chars", "utf16", "bytes"]


@dataclass(frozen=True)
class Column:
    """One server column.

    Attributes:
        name: the server column name, exactly as the catalog spells it.
        kind: the conversion rule.
        type_name: the catalog's type name (for logs and dialect adaptation).
        nullable: whether NULL is allowed.
        has_default: whether the column has a database default (PUT keeps its value on update).
        writable: False for identity, computed and generated columns.
        max_length: maximum length of text in ``length_unit`` units, ``None`` when unbounded.
        length_unit: ``chars`` (code points), ``utf16`` (UTF-16 code units, SQL Server ``nvarchar``)
            or ``bytes`` (bytes in ``encoding``, UTF-8 when it is ``None``).
        encoding: the character set a text column stores, as a Python codec name (``cp1252`` for
            SQL Server code page 1252 and MySQL ``latin1``), :data:`BMP_ONLY` for MySQL ``utf8mb3``,
            or ``None`` when the column can hold any text (``nvarchar``, UTF-8 collations,
            ``utf8mb4``). Text outside it is INVALID_DATA ``encoding``, never stored as ``?``.
        collation: the column's collation when a dialect must name it in SQL text (SQL Server
            ``varchar`` whose collation is not the database default), else empty.
        pads_spaces: the column compares text ignoring trailing spaces (MariaDB/MySQL PAD SPACE
            collations, SQL Server always, PostgreSQL ``char(n)``): as a key, ``"x "`` would be row ``"x"``.
        ignores_case: the column compares text case-insensitively (``_ci`` collations): as a key,
            ``"X"`` would be row ``"x"``. Both come from introspection (DESIGN.md section 3, "One device
            id, one row"); :func:`~powersync_upload.convert.check_key` refuses such ids.
        int_range: inclusive (min, max) for integer kinds.
        precision, scale: for decimals, total and fractional digits.
        fraction_digits: fractional-second digits kept by time and timestamp kinds.
        float_max: largest finite magnitude for floating kinds (``real`` is 32-bit).
    """

    name: str
    kind: Kind
    type_name: str = ""
    nullable: bool = True
    has_default: bool = False
    writable: bool = True
    max_length: int | None = None
    length_unit: LengthUnit = "chars"
    int_range: tuple[int, int] | None = None
    precision: int | None = None
    scale: int | None = None
    fraction_digits: int = 6
    float_max: float | None = None
    encoding: str | None = None
    collation: str = ""
    pads_spaces: bool = False
    ignores_case: bool = False


BMP_ONLY = "bmp"
""":attr:`Column.encoding` of a character set that holds every character of the Basic Multilingual
Plane but none above it (MySQL ``utf8mb3``/``ucs2``): no emoji, no supplementary CJK."""


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key of the table, as the catalog declares it.

    Attributes:
        columns: the referencing columns.
        parent: the referenced table as the catalog names it (``name`` or ``schema.name``).
        parent_columns: the referenced columns.
        on_delete: ``restrict`` (NO ACTION, RESTRICT) or ``cascade`` (CASCADE, SET NULL, SET DEFAULT:
            a parent delete changes child rows).
    """

    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: Literal["restrict", "cascade"] = "restrict"


@dataclass(frozen=True)
class TableSchema:
    """One server table: its name, its columns by name, its foreign keys and its unique indexes.

    Attributes:
        unique: column sets of unique indexes and constraints other than the primary key (an
            expression member is left out of its set).
        primary_key: the primary key's columns in key order; empty when the table has none.
        loose_unique: the members of ``unique`` that do not make their columns unique in every row:
            partial (SQLite, PostgreSQL) or filtered (SQL Server) indexes, indexes with an expression
            member, and PostgreSQL's deferrable constraints (``ON CONFLICT`` cannot use them).
    """

    name: str
    columns: dict[str, Column]
    foreign_keys: tuple[ForeignKey, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    primary_key: tuple[str, ...] = ()
    loose_unique: tuple[tuple[str, ...], ...] = ()

    def identifies_rows(self, column: str) -> bool:
        """Whether ``column`` (the catalog's spelling) alone holds a different value in every row: it
        is the whole primary key, or the only column of a unique index or constraint that is not
        loose (:attr:`loose_unique`). A column of a composite key or index does not."""
        alone = (column,)
        return self.primary_key == alone or self.unique.count(alone) > self.loose_unique.count(alone)

    def column(self, name: str) -> Column | None:
        """The column called ``name``; falls back to a case-insensitive match when exactly one fits."""
        found = self.columns.get(name)
        if found is not None:
            return found
        folded = [c for n, c in self.columns.items() if n.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None


def on_delete_rule(action: str) -> Literal["restrict", "cascade"]:
    """A catalog's delete action (``NO ACTION``, ``RESTRICT``, ``CASCADE``, ``SET NULL``, ``SET_NULL``,
    PostgreSQL's one-letter codes ``a r c n d``...) as the planner needs it."""
    folded = action.strip().upper().replace("_", " ")
    return "restrict" if folded in ("NO ACTION", "RESTRICT", "A", "R", "") else "cascade"


INT_RANGES: dict[str, tuple[int, int]] = {
    "tinyint_unsigned": (0, 255),
    "tinyint": (-(2**7), 2**7 - 1),
    "smallint": (-(2**15), 2**15 - 1),
    "mediumint": (-(2**23), 2**23 - 1),
    "int": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
"""Inclusive integer ranges by storage size (SQL Server ``tinyint`` is unsigned: ``tinyint_unsigned``)."""

FLOAT32_MAX = 3.4028234663852886e38


@dataclass
class SchemaCache:
    """Introspected tables, kept for the life of the container.

    Attributes:
        clock: monotonic seconds, replaceable in tests.
    """

    clock: Callable[[], float] = time.monotonic
    _tables: dict[str, TableSchema | None] = field(default_factory=dict)
    _loaded_at: dict[str, float] = field(default_factory=dict)

    def get(self, server_table: str, load: Callable[[str], TableSchema | None]) -> TableSchema | None:
        """The cached table, loading it through ``load`` on first use."""
        if server_table not in self._tables:
            self._store(server_table, load(server_table))
        return self._tables[server_table]

    def refresh(self, server_table: str, load: Callable[[str], TableSchema | None]) -> bool:
        """Load the table again unless that happened less than a minute ago.

        Returns:
            True when the table was reloaded.
        """
        last = self._loaded_at.get(server_table)
        if last is not None and self.clock() - last < REFRESH_INTERVAL_S:
            return False
        self._store(server_table, load(server_table))
        return True

    def _store(self, server_table: str, table: TableSchema | None) -> None:
        self._tables[server_table] = table
        self._loaded_at[server_table] = self.clock()
