"""Every case in ``../shared/cases`` on every dialect it names that runs here.

Cases are data (format: ``../shared/cases/README.md``); a new file there is a new test, with no code
change. Each case runs in a freshly loaded database (the product's migrations, then the fixture),
through the real Lambda handler, once with the fast path (the default) and once one statement per
operation. A ``sql`` step runs directly on the database between requests, committed before the next
step. ``SHARED_CASES`` points the loader at another folder: ``make test-next`` runs ``cases/next``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.handler import set_runtime
from tests.support import (
    FIXTURES,
    ROOT,
    SHARED_CASES,
    RowReader,
    available_dialects,
    call,
    install_runtime,
    reset_database,
)

LOCAL_CASES = Path(__file__).resolve().parent / "cases"
"""This repository's own cases, same format, with their fixtures in ``cases/fixtures``; they run beside
the shared ones (a shared case of the same fixture name takes its fixture from ``../shared``)."""


def _cases() -> list[Any]:
    params: list[Any] = []
    if not SHARED_CASES.is_dir():
        return params  # the run's dialect summary says "conformance: not run, no cases at ..."
    files = sorted(SHARED_CASES.glob("[0-9]*.json"))
    assert files, f"no shared cases found in {SHARED_CASES}"
    if "SHARED_CASES" not in os.environ:  # `make test-next` runs cases/next alone
        files += sorted(LOCAL_CASES.glob("[0-9]*.json"))
    for path in files:
        case = json.loads(path.read_text(encoding="utf-8"))
        for dialect in available_dialects():
            if dialect in case["dialects"]:
                for mode in ("fast", "per-op"):
                    params.append(pytest.param(path, dialect, mode, id=f"{path.stem}[{dialect}-{mode}]"))
    return params


def _check_result(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    failed = actual.get("failed_operation") or {}
    for key, want in expected.items():
        got = failed.get(key) if key in ("error_code", "operation_index", "details") else actual.get(key)
        if key == "warning_codes":
            got = [warning.get("code") for warning in actual.get("warnings") or []]
            assert got == want, f"{where}: warning codes {got!r} != {want!r} (result {actual})"
        elif key == "error_code" and isinstance(want, list):
            assert got in want, f"{where}: {key} {got!r} not in {want!r} (result {actual})"
        elif key == "details":
            for detail, value in want.items():
                assert (got or {}).get(detail) == value, f"{where}: details.{detail} {got!r} != {value!r}"
        else:
            assert got == want, f"{where}: {key} {got!r} != {want!r} (result {actual})"


@pytest.mark.parametrize(("case_path", "dialect", "mode"), _cases())
def test_shared_case(case_path: Path, dialect: str, mode: str, tmp_path: Path) -> None:
    # Given the product's migrations and the case's fixture loaded into a fresh database of this dialect
    case = json.loads(case_path.read_text(encoding="utf-8"))
    fixture = case["fixture"]
    migrations = sorted((ROOT / "db" / "migrations" / dialect).glob("*.sql"))
    local = case_path.parent / "fixtures"
    fixtures = local if (local / f"{fixture}.upload.yaml").is_file() else FIXTURES
    url = reset_database(dialect, [*migrations, fixtures / f"{fixture}.{dialect}.sql"], tmp_path)
    rt = install_runtime(url, fixtures / f"{fixture}.upload.yaml", fast_path=mode == "fast")
    reader = RowReader(url)
    try:
        # When each step is sent through the handler
        for number, step in enumerate(case["steps"]):
            if "sql" in step or "sql_by_dialect" in step:
                # (a change someone else made between requests: another device, an admin)
                reader.execute(step.get("sql_by_dialect", {}).get(dialect, step.get("sql")))
                continue
            for attempt in range(step.get("repeat", 1)):
                where = f"{case_path.name} step {number} attempt {attempt}"
                response = call(step.get("body"), step["user"], raw=step.get("raw"))
                # Then the HTTP status and the per-transaction results are the expected ones
                expect = step["expect"]
                assert response.status == expect["http"], f"{where}: HTTP {response.status}: {response.body}"
                results = expect.get("results_by_dialect", {}).get(dialect, expect.get("results"))
                if results is not None:
                    got = response.body["results"]
                    assert len(got) == len(results), f"{where}: {len(got)} results, expected {len(results)}: {got}"
                    for index, (actual, wanted) in enumerate(zip(got, results, strict=False)):
                        _check_result(actual, wanted, f"{where} result {index}")
        # And the rows end as the case says
        for table, rows in case.get("rows", {}).items():
            if table == "count":
                continue
            key = "id"
            for row_id, expected in rows.items():
                actual = reader.row(table, key, row_id, expected)
                if expected is None:
                    assert actual is None, f"{table}[{row_id}] should not exist, found {actual}"
                    continue
                assert actual is not None, f"{table}[{row_id}] missing"
                for column, value in expected.items():
                    assert actual[column] == value, f"{table}[{row_id}].{column}: {actual[column]!r} != {value!r}"
        for table, count in case.get("rows", {}).get("count", {}).items():
            assert reader.count(table) == count, f"count({table})"
    finally:
        reader.close()
        rt.db.discard()
        set_runtime(None)
