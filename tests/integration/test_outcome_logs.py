"""The request's closing log line is named by its outcome, so a search for "upload applied" finds
only requests that committed everything, and a 503 is never logged as applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from tests.support import ROOT, call, install_runtime, reset_database

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000001"
OTHER = "a0000000-0000-4000-8000-000000000002"


@pytest.fixture
def sqlite_rt(tmp_path: Path) -> Iterator[Runtime]:
    url = reset_database("sqlite", schema_scripts("sqlite"), tmp_path)
    rt = install_runtime(url, CONFIG)
    yield rt
    rt.db.discard()
    set_runtime(None)


def _closing_line(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The last "upload ..." record of the handler's logger, with its extra keys."""
    closing = [r for r in caplog.records if r.getMessage().startswith("upload ")]
    assert closing, [r.getMessage() for r in caplog.records]
    return {"message": closing[-1].getMessage(), **closing[-1].__dict__}


def _put(list_id: str, name: str | None, tx: int) -> dict[str, Any]:
    return {"op": "PUT", "type": "lists", "id": list_id, "tx_id": tx, "data": {"name": name}}


def test_a_committed_upload_is_logged_as_applied(sqlite_rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    # Given / When an upload that commits
    assert call({"batch": [_put(LIST, "a", 1)]}).status == 200
    # Then its closing line says so
    line = _closing_line(caplog)
    assert (line["message"], line["status"], line["committed"]) == ("upload applied", 200, 1)


def test_an_upload_whose_only_transaction_is_rejected_is_logged_as_rejected(
    sqlite_rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # Given / When an upload whose one transaction violates NOT NULL
    assert call({"batch": [_put(LIST, None, 1)]}).status == 200
    # Then its closing line names the rejection
    line = _closing_line(caplog)
    assert (line["message"], line["committed"], line["rejected"]) == ("upload rejected", 0, 1)


def test_an_upload_with_a_rejected_and_a_committed_transaction_is_logged_as_applied_with_rejections(
    sqlite_rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # Given / When one good and one rejected transaction
    assert call({"batch": [_put(LIST, "a", 1), _put(OTHER, None, 2)]}).status == 200
    # Then the closing line says both
    assert _closing_line(caplog)["message"] == "upload applied with rejections"


def test_a_503_is_logged_as_not_applied(caplog: pytest.LogCaptureFixture) -> None:
    # Given a database nothing listens on
    rt = install_runtime("postgresql://postgres@127.0.0.1:1/none", CONFIG, deadline_s=3)
    try:
        # When an upload arrives
        assert call({"batch": [_put(LIST, "a", 1)]}).status == 503
    finally:
        rt.db.discard()
        set_runtime(None)
    # Then its closing line says nothing was applied, and no line says "upload applied"
    line = _closing_line(caplog)
    assert (line["message"], line["status"]) == ("upload not applied, retry", 503)
    assert not [r for r in caplog.records if r.getMessage().startswith("upload applied")]
