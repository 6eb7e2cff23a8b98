"""Prints the figures of every fault campaign that ran (devices, faults, retries, lost, ...)."""

from __future__ import annotations

import pytest

from tests.chaos.campaign import REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not REPORTS:
        return
    terminalreporter.section("fault campaigns")
    for text in REPORTS:
        for line in text.splitlines():
            terminalreporter.write_line(line)
