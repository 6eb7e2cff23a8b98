"""Prints how many examples each property test (and schemathesis) generated."""

from __future__ import annotations

import pytest

from tests.property.counts import GENERATED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    totals = config.stash.get(GENERATED, {})
    if not totals:
        return
    terminalreporter.section("generated examples")
    for name, count in sorted(totals.items()):
        terminalreporter.write_line(f"{name}: {count}")
