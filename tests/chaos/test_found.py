"""Defects the fault campaign found, each pinned by a test of its own.

Seed 12 on MariaDB (``make chaos SEED=12 DURATION=300 DIALECT=mysql``, 20 devices, 4 workers): a reset of
a worker's fresh connection at its ``BEGIN`` (the ledger read opens the request's transaction) escaped
the handler as an exception; the worker kept the dead connection, still marked fresh, so every later
request failed the same way and was closed without an answer (37,460 times until the run ended).

Seed 7 on SQL Server (Babelfish 4.2; ``make chaos SEED=7 DURATION=30 DIALECT=mssql``, 20 devices, 4
workers), two defects, each pinned where its code lives:

* every request failed: a connection opened with 1 s left kept a 1 s query timeout for its life, and
  each new backend's first statements took longer, so each timeout started the next connection cold
  (``tests/unit/test_database_reconnect.py``, ``tests/unit/test_mssql_dialect.py``: the query timeout
  is the request deadline);
* device 8's tx 9 committed after its tx 10: the recording of tx 9's rejection failed after tx 10 had
  committed in the same request, so the 503 made the device send tx 9 again into a changed database
  (``tests/integration/test_ledger.py::test_nothing_after_a_rejection_commits_before_the_rejection_is_recorded``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.proxy import NO_FAULTS, Proxy
from powersync_upload.handler import set_runtime
from powersync_upload.local import schema_scripts
from tests.chaos.campaign import _proxied, _target
from tests.support import ROOT, RowReader, available_dialects, call, install_runtime, reset_database

CONFIG = ROOT / "functions" / "upload" / "upload.yaml"
LIST = "a0000000-0000-4000-8000-000000000001"
BODY = {
    "batch": [{"op": "PUT", "type": "lists", "id": LIST, "tx_id": 1, "op_id": 1, "data": {"name": "Groceries"}}],
    "client_id": "device-1",
}


@pytest.fixture(params=[d for d in available_dialects() if d in ("postgresql", "mysql")])
def behind_proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A handler whose first database connection is reset at its BEGIN (later ones pass untouched)."""
    dialect: str = request.param
    url = reset_database(dialect, schema_scripts(dialect), tmp_path)
    host, port = _target(url)
    with Proxy(host, port, rates=NO_FAULTS, handshake_chunks=0, resets={1: b"BEGIN"}) as proxy:
        rt = install_runtime(_proxied(url, proxy.port), CONFIG, deadline_s=10)
        yield url
        rt.db.discard()
        set_runtime(None)


def test_a_connection_lost_at_the_ledger_reads_begin_answers_503_and_the_next_request_reconnects(
    behind_proxy: str,
) -> None:
    # Given a request naming client_id whose fresh connection is reset at its BEGIN
    # When it is sent, and sent again
    first = call(BODY)
    second = call(BODY)

    # Then the first is a 503 (retryable, nothing applied), not an exception out of the handler
    assert first.status == 503
    assert first.body["results"][0]["status"] == "retryable_error"
    # and the resend gets a new connection and commits the row once
    assert second.status == 200
    assert second.body["results"] == [{"status": "success"}]
    reader = RowReader(behind_proxy)
    try:
        assert reader.count("lists") == 1
    finally:
        reader.close()
