"""The fault proxy on a real PostgreSQL server: a reset inside a transaction rolls it back, a close
right after COMMIT leaves the client without an answer while the server committed."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from bench.proxy import NO_FAULTS, Proxy, Rates
from tests.chaos.campaign import _proxied, _target
from tests.support import reset_database


@pytest.fixture
def table(tmp_path: Path) -> str:
    script = tmp_path / "t.sql"
    script.write_text("CREATE TABLE t (id integer PRIMARY KEY);", encoding="utf-8")
    return reset_database("postgresql", [script], tmp_path)


def _rows(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM t ORDER BY id").fetchall()]


def _insert_through(proxy: Proxy, url: str, row: int) -> None:
    with psycopg.connect(_proxied(url, proxy.port), connect_timeout=5) as conn:
        conn.execute("INSERT INTO t (id) VALUES (%s)", (row,))
        conn.commit()


def test_a_reset_inside_a_transaction_fails_the_client_and_commits_nothing(table: str) -> None:
    # Given a proxy that resets every connection at its first statement inside a transaction
    host, port = _target(table)
    with Proxy(host, port, seed=1, rates=Rates(0, 0, reset=1.0, commit_close=0), handshake_chunks=1) as proxy:
        # When a client inserts a row through it
        with pytest.raises(psycopg.OperationalError):
            _insert_through(proxy, table, 1)
        injected = proxy.injected()
    # Then the client saw a connection error, the row is not there, and the fault was counted
    assert _rows(table) == []
    assert injected["reset"] == 1


def test_a_close_right_after_commit_leaves_the_outcome_unknown_to_the_client_but_committed(table: str) -> None:
    # Given a proxy that resets the client's side of every connection right after forwarding COMMIT
    host, port = _target(table)
    rates = Rates(0, 0, reset=0, commit_close=1.0)
    with Proxy(host, port, seed=1, rates=rates, handshake_chunks=1) as proxy:
        # When a client inserts a row through it and commits
        with pytest.raises(psycopg.OperationalError):
            _insert_through(proxy, table, 2)
        # Then the server committed the row (within a few seconds: it reads the COMMIT on its own time)
        deadline = time.monotonic() + 5
        while _rows(table) != [2] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _rows(table) == [2]
        assert proxy.injected()["commit_close"] == 1


def test_without_faults_the_proxy_forwards_every_statement(table: str) -> None:
    # Given a proxy with every fault rate at zero
    host, port = _target(table)
    with Proxy(host, port, seed=1, rates=NO_FAULTS) as proxy:
        # When a client inserts three rows through it
        for row in (1, 2, 3):
            _insert_through(proxy, table, row)
        injected = proxy.injected()
    # Then all three are committed and no fault was counted
    assert _rows(table) == [1, 2, 3]
    assert set(injected.values()) == {0}
