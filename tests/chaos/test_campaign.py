"""The short fault campaign of ``make test``: devices, workers and the fault proxy on every dialect.

``CHAOS_SHORT_S`` sets its load time per dialect (20 s by default; the queues drain after it).
``make chaos`` runs long ones (:mod:`tests.chaos.campaign`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.proxy import NO_FAULTS
from tests.chaos.campaign import Options, Outcome, Verdict, check, run
from tests.chaos.devices import COUNTERS, NOTES, VERSIONED
from tests.support import RowReader, available_dialects

SHORT_S = float(os.environ.get("CHAOS_SHORT_S", "20"))
SEEDS = {"sqlite": 101, "postgresql": 102, "mysql": 103, "mssql": 104}


@pytest.mark.parametrize("dialect", available_dialects())
def test_under_load_and_faults_no_transaction_is_lost_duplicated_or_half_applied(dialect: str, tmp_path: Path) -> None:
    # Given 6 devices with random transactions, 2 workers (SQLite: 1) behind the fault proxy, a fixed seed
    options = Options(dialect, seed=SEEDS[dialect], duration_s=SHORT_S, devices=6, workers=2)

    # When the devices send for SHORT_S seconds and then drain their queues
    outcome = run(options, tmp_path)

    # Then the database equals the model: nothing lost, duplicated, half applied or unexplained, no 500
    figures = outcome.figures
    assert outcome.verdict.problems == [], outcome.report()
    assert (figures["lost"], figures["duplicated"], figures["half_applied"], figures["http_500"]) == (0, 0, 0, 0)
    # and the run was not a quiet one: transactions committed and were rejected, faults were injected
    # and resends were answered from the ledger
    assert figures["committed"] > 0 and figures["fatal"] > 0, outcome.report()
    assert figures["faults"]["lost_response"] + figures["faults"].get("proxy_commit_close", 0) > 0, outcome.report()
    assert figures["already_applied"] > 0, outcome.report()


def test_the_checker_reports_a_duplicated_delta_and_a_lost_journal_row(tmp_path: Path) -> None:
    # Given a short fault-free campaign on SQLite that the checker finds clean
    outcome = run(Options("sqlite", seed=7, duration_s=2, devices=2, workers=1, rates=NO_FAULTS), tmp_path)
    assert outcome.verdict.problems == [], outcome.report()
    committed = next(s.tx for d in outcome.devices for s in d.done if s.answers[-1]["status"] == "success")

    # When a counter gains one delta too many and a committed transaction's journal row disappears
    verdict = _tampered(
        outcome,
        f"UPDATE chaos_counters SET total = total + 1 WHERE id = '{COUNTERS[0]}'",
        f"DELETE FROM chaos_journal WHERE id = '{committed.journal_id}'",
    )

    # Then the checker counts one duplicated and one lost transaction, naming both
    assert (verdict.figures["duplicated"], verdict.figures["lost"]) == (1, 1), verdict.problems
    assert any(COUNTERS[0] in p for p in verdict.problems)
    assert any(committed.journal_id in p for p in verdict.problems)


def test_the_checker_reports_a_version_bumped_twice_and_a_note_in_another_state(tmp_path: Path) -> None:
    # Given a short fault-free campaign on SQLite that the checker finds clean
    outcome = run(Options("sqlite", seed=8, duration_s=2, devices=2, workers=1, rates=NO_FAULTS), tmp_path)
    assert outcome.verdict.problems == [], outcome.report()

    # When a versioned row gains a version no committed PATCH explains and a note changes behind the model
    verdict = _tampered(
        outcome,
        f"UPDATE chaos_versioned SET version = version + 1 WHERE id = '{VERSIONED[0]}'",
        f"UPDATE chaos_notes SET title = 'edited behind the model' WHERE id = '{NOTES[0]}'",
    )

    # Then the checker names both rows
    assert any(VERSIONED[0] in p and p.startswith("duplicated") for p in verdict.problems), verdict.problems
    assert any(NOTES[0] in p and p.startswith("lost") for p in verdict.problems), verdict.problems


def _tampered(outcome: Outcome, *statements: str) -> Verdict:
    """The checker's verdict after ``statements`` changed the campaign's database behind its back."""
    reader = RowReader(outcome.url)
    try:
        for statement in statements:
            reader.execute(statement)
    finally:
        reader.close()
    return check(outcome.url, outcome.devices)
