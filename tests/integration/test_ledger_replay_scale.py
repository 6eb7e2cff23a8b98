"""A replay of a large request is answered from the ledger in time linear in its transactions.

Seen through ``serve`` on PostgreSQL: a resend of 20,000 one-operation transactions with ``client_id``
took 136 s (2.9 s the first time), well past the 28 s deadline, so a device whose response was lost
could never get an answer. The measure here is the number of identity comparisons, not time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from powersync_upload import ledger
from tests.support import call, demo_sqlite

TRANSACTIONS = 2000


def _upload() -> dict[str, object]:
    batch = [
        {"op_id": i + 1, "tx_id": i + 1, "op": "PUT", "type": "lists", "id": f"l{i}", "data": {"name": f"list {i}"}}
        for i in range(TRANSACTIONS)
    ]
    return {"client_id": "device-1", "batch": batch}


def test_a_large_replay_compares_each_identity_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a request of 2000 transactions with client_id, applied once
    with demo_sqlite(tmp_path):
        first = call(_upload())
        assert [r["status"] for r in first.body["results"]] == ["success"] * TRANSACTIONS
        # When the same request is sent again (its response was lost), counting identity comparisons
        compared = [0]
        equal = ledger.Identity.__eq__

        def counting(self: ledger.Identity, other: object) -> bool:
            compared[0] += 1
            return equal(self, other)

        monkeypatch.setattr(ledger.Identity, "__eq__", counting)
        replay = call(_upload())
    # Then every transaction is answered from the ledger, each found without scanning all the others
    assert [r.get("warnings") for r in replay.body["results"]] == [[{"code": "ALREADY_APPLIED"}]] * TRANSACTIONS
    assert compared[0] <= 4 * TRANSACTIONS
