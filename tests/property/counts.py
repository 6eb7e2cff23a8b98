"""Generated-example counts per property test, printed at the end of the run.

Property tests (and the schemathesis run in ``tests/integration/test_openapi.py``) call :func:`record`;
the ``pytest_terminal_summary`` hook in ``tests/property/conftest.py`` prints the totals, so the number
of generated cases each one ran is visible without ``-s``.
"""

from __future__ import annotations

import pytest

GENERATED = pytest.StashKey[dict[str, int]]()


def record(config: pytest.Config, name: str, count: int) -> None:
    """Add ``count`` generated examples to ``name``'s total."""
    totals = config.stash.setdefault(GENERATED, {})
    totals[name] = totals.get(name, 0) + count
