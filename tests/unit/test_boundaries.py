"""Module boundaries (STYLE.md section 1, DESIGN.md section 5), read from each module's imports with ``ast``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "functions" / "upload" / "powersync_upload"
DRIVERS = {"psycopg", "pymssql", "pymysql", "sqlite3", "_mssql"}
PURE = ("plan", "ledger", "conflicts", "contract", "convert", "errors", "schema")
NOT_FOR_PURE = {"database", "dialects", "writes", "engine", "handler", "time", "random"}
KNOWN = {("schema", "time"): "SchemaCache's default clock is time.monotonic (the cache belongs beside database)"}
"""Breaches that exist today, each with its reason; a new one fails the test."""


def _modules() -> dict[str, Path]:
    """Module name relative to the package (``dialects.mssql``) -> file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__") or "__init__"
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports: top-level names for outside packages (``psycopg``, ``time``; and
    ``aws_lambda_powertools.event_handler``), package-relative names for our own (``ledger``,
    ``dialects._sql``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            found.add(target or "__init__")
            if not node.module:
                found.update(".".join([*base, alias.name]) for alias in node.names)
            continue
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            if module.startswith("powersync_upload."):
                found.add(module.removeprefix("powersync_upload."))
            found.add(module.split(".")[0])
            if module.startswith("aws_lambda_powertools.event_handler"):
                found.add("aws_lambda_powertools.event_handler")
    return found


MODULES = _modules()


def test_only_dialects_import_a_database_driver() -> None:
    # Given every module of the package and its imports
    # When the driver imports are collected
    importers = {name for name, path in MODULES.items() if _imports(name, path) & DRIVERS}

    # Then only dialect modules import one (local.py opens the demo SQLite file: the named exception)
    assert {n for n in importers if not n.startswith("dialects")} <= {"local"}


def test_only_the_handler_imports_the_powertools_event_handler() -> None:
    # Given every module / When the resolver imports are collected / Then only the handler has one
    importers = {n for n, p in MODULES.items() if "aws_lambda_powertools.event_handler" in _imports(n, p)}
    assert importers == {"handler"}


@pytest.mark.parametrize("module", [m for m in PURE if m in MODULES])
def test_pure_cores_import_no_io_clock_or_randomness(module: str) -> None:
    # Given a pure core module
    imports = {n.split(".")[0] for n in _imports(module, MODULES[module])}

    # When its imports are compared with the I/O shell, the clock and the RNG
    breaches = {name for name in imports & NOT_FOR_PURE if (module, name) not in KNOWN}

    # Then it imports none of them
    assert breaches == set(), f"{module} imports {sorted(breaches)}"


def test_only_the_engine_imports_plan_ledger_and_conflicts_together() -> None:
    # Given every module / When those importing all three cores are found
    together = {n for n, p in MODULES.items() if {"plan", "ledger", "conflicts"} <= _imports(n, p)}

    # Then that is the engine at most
    assert together <= {"engine"}


def test_the_import_reader_sees_relative_and_absolute_imports() -> None:
    # Given the fallback policy and a dialect, whose imports are known
    fallback = _imports("fallback", MODULES["fallback"])
    postgresql = _imports("dialects.postgresql", MODULES["dialects.postgresql"])

    # When / Then relative imports resolve to package modules and drivers to their top-level name
    assert {"attempt", "session", "time", "random"} <= fallback
    assert {"psycopg", "errors", "schema", "dialects"} <= postgresql


LAYERS = (
    ("errors",),
    ("schema", "contract", "plan", "events"),
    ("convert", "grouping"),
    ("config", "ledger"),
    ("conflicts", "settings"),
    ("dialects", "dialects._sql", "dialects.mssql", "dialects.mysql", "dialects.postgresql", "dialects.sqlite", "auth"),
    ("database",),
    ("prepare", "errors_table"),
    ("writes", "session", "steps"),
    ("conflict_checks", "replays"),
    ("attempt", "outcome"),
    ("fallback",),
    ("engine",),
    ("observability",),
    ("handler",),
    ("snapstart", "openapi"),
    ("local",),
)
"""The module graph, bottom up (the README's architecture section draws it): a module imports only
modules of lower layers, never one beside or above it."""
LAYER = {module: number for number, modules in enumerate(LAYERS) for module in modules}
LAYER.update({name: LAYER["dialects"] for name in MODULES if name.startswith("dialects.")})  # a new dialect file


def test_every_module_has_its_place_in_the_layers() -> None:
    # Given every module of the package / When compared with the layers / Then each one is placed
    assert set(MODULES) - {"__init__"} == set(LAYER)


@pytest.mark.parametrize("module", sorted(LAYER))
def test_no_module_imports_one_beside_or_above_it(module: str) -> None:
    # Given a module and its imports from the package
    own = {n for n in _imports(module, MODULES[module]) if n in LAYER}

    # When each is compared with the module's layer (a dialect may use the Protocol and _sql)
    allowed_beside = {"dialects", "dialects._sql"} if module.startswith("dialects.") else set()
    upward = {n for n in own - allowed_beside if LAYER[n] >= LAYER[module] and n != module}

    # Then none is beside or above it
    assert upward == set(), f"{module} imports {sorted(upward)}"


def test_only_the_handler_imports_the_engine() -> None:
    # Given every module / When those importing the engine are found / Then that is the HTTP edge alone
    importers = {n for n, p in MODULES.items() if "engine" in _imports(n, p)}
    assert importers == {"handler"}


def test_the_readme_draws_the_same_layers() -> None:
    # Given the README's "Who imports whom" table
    readme = (PACKAGE.parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+?) \| .+ \|$", readme, re.M)
    drawn = {name: int(layer) for layer, names in rows for name in re.findall(r"`([\w.]+)`", names)}

    # When compared with the layers this test holds / Then every module is drawn where it is
    assert drawn == {name: LAYER[name] for name in drawn}
    assert {n for n in LAYER if not n.startswith("dialects.")} <= set(drawn)
