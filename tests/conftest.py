"""Test-wide settings and the end-of-run dialect summary.

EMF metrics are off (they print to stdout for CloudWatch) unless a test turns them on; Powertools
reads the variable on every flush. At the end of every run, the summary says on which dialects the
integration and conformance suites ran and which were not run, and why (``SQL Server: not run
(MSSQL_URL unset)``, ``conformance: not run, no cases at <path>``): a green run must not suggest
that SQL Server was tested when it was not. The summary never changes the exit status.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

# Modules that test SQL Server alone are collected only when MSSQL_URL names one: the dialect summary
# then says "SQL Server: not run (MSSQL_URL unset)" instead of a skip.
collect_ignore = [] if os.environ.get("MSSQL_URL") else ["integration/test_rowversion.py"]

os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

DIALECT_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB/MySQL", "mssql": "SQL Server"}
SUITES = ("integration", "conformance")

_collected: dict[str, tuple[str, str]] = {}
"""nodeid -> (suite, dialect) of every selected test that runs on one dialect."""
_outcomes: dict[tuple[str, str], Counter[str]] = {}


def _suite(nodeid: str) -> str | None:
    for suite in SUITES:
        if nodeid.startswith(f"tests/{suite}/"):
            return suite
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember the dialect of each selected integration and conformance test (from its parameters)."""
    for item in session.items:
        suite = _suite(item.nodeid)
        callspec = getattr(item, "callspec", None)
        if suite is None or callspec is None:
            continue
        for value in callspec.params.values():
            if isinstance(value, str) and value in DIALECT_NAMES:
                _collected[item.nodeid] = (suite, value)
                _outcomes.setdefault((suite, value), Counter())
                break


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count one outcome per test: its call, or its setup when that did not pass."""
    where = _collected.get(report.nodeid)
    if where is not None and (report.when == "call" or (report.when == "setup" and not report.passed)):
        _outcomes[where][report.outcome] += 1


def dialect_summary(outcomes: dict[tuple[str, str], Counter[str]], mssql_url: str | None, cases: Path) -> list[str]:
    """The summary lines: per suite, each dialect with its outcome counts, or why it was not run."""
    lines = []
    for suite in SUITES:
        if suite == "conformance" and not cases.is_dir():
            lines.append(f"conformance: not run, no cases at {cases}")
            continue
        parts = []
        for dialect, title in DIALECT_NAMES.items():
            counts = outcomes.get((suite, dialect))
            if counts is not None:
                ran = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "selected, not finished"
                parts.append(f"{title}: {ran}")
            elif dialect == "mssql" and not mssql_url:
                parts.append(f"{title}: not run (MSSQL_URL unset)")
            else:
                parts.append(f"{title}: not run (not selected)")
        lines.append(f"{suite}: " + "; ".join(parts))
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print :func:`dialect_summary` at the end of the run."""
    from tests.support import MSSQL_URL, SHARED_CASES

    terminalreporter.write_sep("-", "dialects")
    for line in dialect_summary(_outcomes, MSSQL_URL, SHARED_CASES):
        terminalreporter.write_line(line)
