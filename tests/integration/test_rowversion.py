"""SQL Server's rowversion as a table's version column, on a real T-SQL engine (MSSQL_URL; collected
only when it is set, ``tests/conftest.py``): the version the client saw is the ``0x`` hex text it
synced; the matching version wins and the server moves it, a stale one is a CONFLICT. (Its stale and
missing cases are also a conformance case: ``tests/conformance/cases/101-rowversion-version-column.json``.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from powersync_upload.handler import set_runtime
from tests.support import ROOT, RowReader, call, install_runtime, reset_database

CASES = ROOT / "tests" / "conformance" / "cases" / "fixtures"
NOTE = "d0000000-0000-0000-0000-000000000001"


@pytest.fixture
def notes(tmp_path: Path) -> Iterator[RowReader]:
    """The ``rowversion`` fixture (notes with a rowversion version column) behind the handler."""
    migrations = sorted((ROOT / "db" / "migrations" / "mssql").glob("*.sql"))
    url = reset_database("mssql", [*migrations, CASES / "rowversion.mssql.sql"], tmp_path)
    rt = install_runtime(url, CASES / "rowversion.upload.yaml")
    reader = RowReader(url)
    yield reader
    reader.close()
    rt.db.discard()
    set_runtime(None)


def _version(reader: RowReader) -> str:
    row = reader.row("notes", "id", NOTE, None)
    assert row is not None
    return "0x" + bytes(row["version"]).hex().upper()


def _babelfish(reader: RowReader) -> bool:
    from powersync_upload.dialects import mssql

    return mssql.is_babelfish(reader.conn)


def test_the_version_the_client_synced_wins_and_the_server_moves_it(
    notes: RowReader, request: pytest.FixtureRequest
) -> None:
    if _babelfish(notes):
        # Babelfish ignores lock hints, so the dialect's locking read locks with a no-op UPDATE of the
        # row first, which gives the row a new rowversion before it is compared: there a matching
        # version never matches (README "Babelfish"). Strict: this fails loudly once it passes.
        reason = "Babelfish: the row lock's no-op UPDATE moves the rowversion"
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    # Given the note's rowversion as the sync rules send it: 0x and 16 upper-case hex digits
    seen = _version(notes)

    # When the client updates the note with the version it saw
    body = {"batch": [{"op_id": 1, "op": "PATCH", "type": "notes", "id": NOTE, "tx_id": 1,
                       "data": {"body": "mine", "version": seen}}]}  # fmt: skip
    response = call(body)

    # Then it is applied and the server gave the row a new version
    assert response.status == 200
    assert response.body["results"] == [{"status": "success"}]
    row = notes.row("notes", "id", NOTE, None)
    assert row is not None and row["body"] == "mine"
    assert _version(notes) != seen

    # And the same version sent again is stale: a CONFLICT, nothing written
    body["batch"][0].update(op_id=2, tx_id=2, data={"body": "stale", "version": seen})
    result = call(body).body["results"][0]
    assert (result["status"], result["failed_operation"]["error_code"]) == ("fatal_error", "CONFLICT")
    row = notes.row("notes", "id", NOTE, None)
    assert row is not None and row["body"] == "mine"
