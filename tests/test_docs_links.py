"""Every relative link in the repository's Markdown resolves inside the repository (a
reader who clones it finds what the docs point at)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCS = sorted(
    path
    for path in ROOT.rglob("*.md")
    if not any(part.startswith(".") or part == "node_modules" for part in path.parts)
    and "results" not in path.parts
    and "reports" not in path.parts
)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # another site, or a heading of this page
        path = target.split("#", 1)[0]
        if not (doc.parent / path).resolve().exists():
            broken.append(target)
    assert broken == [], f"{doc.relative_to(ROOT)}: {broken}"


def test_there_are_docs_to_check() -> None:
    assert len(DOCS) >= 5
