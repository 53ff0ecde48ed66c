"""The architecture document's layout section names every module of the package, and only
modules that exist: it is how a newcomer finds their way, so it must not drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_layout_section_matches_the_tree() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(failover/[\w/]+\.py)`", layout))
    present = {str(path.relative_to(ROOT)) for path in (ROOT / "failover").rglob("*.py")}
    assert sorted(present - named) == [], "modules the layout section does not name"
    assert sorted(named - present) == [], "modules the layout section names but do not exist"
    packages = set(re.findall(r"`(failover/(?:[\w]+/)*)`", layout))
    present_packages = {str(path.parent.relative_to(ROOT)) + "/"
                        for path in (ROOT / "failover").rglob("__init__.py")}
    assert packages == present_packages
