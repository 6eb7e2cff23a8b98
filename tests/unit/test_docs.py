"""The README stands alone for someone who cloned only this repository: every file it links exists
here, and neither it nor docs/ points at the design notes that live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHIPPED = [
    ROOT / "clients" / "typescript" / "README.md",
    ROOT / "clients" / "typescript" / "src" / "connector.ts",
    *sorted((ROOT / "db" / "migrations").glob("*/*.sql")),
]
"""Files that leave the repository (the connector's package, the migrations a deployment runs)."""


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_of_the_repository(page: Path) -> None:
    # Given the page's links that are not URLs or anchors
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")) if "://" not in t]
    targets = [t.split("#", 1)[0] for t in links if not t.startswith("#")]
    # Then each names a file or folder of this repository
    for target in targets:
        assert (page.parent / target).exists(), f"{page.name} links {target}, which is not in the repository"


@pytest.mark.parametrize("page", PAGES + SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_cites_the_design_notes_outside_the_repository(page: Path) -> None:
    # Given / When the page's text is read
    text = page.read_text(encoding="utf-8")
    # Then it never sends the reader to DESIGN.md (not in a clone): docs/contract.md holds the contract
    assert "DESIGN" not in text, f"{page.name} cites DESIGN.md; point at docs/contract.md instead"
