"""Limits (issue 5): each breach is answered with the contract's codes, never a 500, and the next
transaction is still applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from powersync_upload.config import Limits
from powersync_upload.handler import Runtime, set_runtime
from powersync_upload.local import schema_scripts
from tests.support import ROOT, available_dialects, call, install_runtime, reset_database, stored_row

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000001"
OTHER = "a0000000-0000-4000-8000-000000000002"


@pytest.fixture(params=[d for d in available_dialects() if d in ("sqlite", "postgresql")])
def small_limits(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    url = reset_database(request.param, schema_scripts(request.param), tmp_path)
    rt = install_runtime(url, CONFIG)
    limits = Limits(max_operations_per_transaction=3, max_columns_per_operation=2, max_text_chars=20, max_json_chars=10)
    rt.config = rt.config.model_copy(update={"limits": limits})
    yield url, rt
    rt.db.discard()
    set_runtime(None)


def _good(tx: int) -> dict[str, object]:
    return {"op": "PUT", "type": "lists", "id": OTHER, "tx_id": tx, "data": {"name": "ok"}}


@pytest.mark.parametrize(
    ("entries", "column"),
    [
        ([{"op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "data": {"name": "x" * 21}}], "name"),
        ([{"op": "PATCH", "type": "todos", "id": LIST, "tx_id": 1, "data": {"tags": list(range(10))}}], "tags"),
        ([{"op": "PATCH", "type": "lists", "id": LIST, "tx_id": 1, "data": {"a": 1, "b": 2, "c": 3}}], None),
        (
            [
                {"op": "DELETE", "type": "lists", "id": f"a0000000-0000-4000-8000-00000000001{i}", "tx_id": 1}
                for i in range(4)
            ],
            None,
        ),
    ],
    ids=["text", "json", "columns", "operations"],
)
def test_a_breached_limit_rejects_only_its_transaction(
    small_limits: tuple[str, Runtime], entries: list[dict[str, object]], column: str | None
) -> None:
    url, _ = small_limits
    # When a transaction breaks a limit and the next one does not
    response = call({"batch": [*entries, _good(2)]})
    # Then the first is INVALID_DATA (too_long), the second is applied
    assert response.status == 200
    first, second = response.body["results"]
    assert first["failed_operation"]["error_code"] == "INVALID_DATA"
    assert first["failed_operation"]["details"]["reason"] == "too_long"
    if column:
        assert first["failed_operation"]["details"]["column"] == column
    assert second["status"] == "success"
    assert stored_row(url, "lists", OTHER) is not None
