"""The end-of-run dialect summary (tests/conftest.py): what ran where, and why the rest did not."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.conftest import dialect_summary


def test_sql_server_not_run_is_said_with_the_reason(tmp_path: Path) -> None:
    # Given integration tests that ran on SQLite and PostgreSQL, MSSQL_URL unset, and shared cases present
    outcomes = {
        ("integration", "sqlite"): Counter(passed=3),
        ("integration", "postgresql"): Counter(passed=2, failed=1),
    }

    # When the summary is built
    lines = dialect_summary(outcomes, None, tmp_path)

    # Then each dialect that ran shows its counts, and SQL Server is named as not run, with why
    assert lines[0] == (
        "integration: SQLite: 3 passed; PostgreSQL: 1 failed, 2 passed; "
        "MariaDB/MySQL: not run (not selected); SQL Server: not run (MSSQL_URL unset)"
    )


def test_missing_shared_cases_directory_is_reported_not_raised(tmp_path: Path) -> None:
    # Given no shared cases directory / When the summary is built / Then it says so in one line
    missing = tmp_path / "cases"
    assert dialect_summary({}, "mssql://sa:pw@db/x", missing)[1] == f"conformance: not run, no cases at {missing}"


def test_sql_server_that_ran_is_counted_like_the_others(tmp_path: Path) -> None:
    # Given conformance cases that ran on SQL Server (MSSQL_URL set)
    outcomes = {("conformance", "mssql"): Counter(passed=52)}

    # When the summary is built / Then SQL Server's line carries its counts
    assert "SQL Server: 52 passed" in dialect_summary(outcomes, "mssql://sa:pw@db/x", tmp_path)[1]
