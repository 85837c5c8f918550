"""The README's measured tables are what benchmarks/readme_tables.py makes from the committed
results files, and every document the README or the code cites is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = {"report.md", "table.md"}  # files the README's commands write, not documents it cites


def test_every_cited_document_is_in_the_repository():
    texts = [ROOT / "README.md", *sorted((ROOT / "pdmp_cli").rglob("*.py"))]
    missing = set()
    for path in texts:
        for name in re.findall(r"[A-Za-z0-9_./-]+\.md\b", path.read_text()):
            if Path(name).name in OUTPUTS:
                continue
            if not (ROOT / name.lstrip("/")).is_file():
                missing.add(f"{path.relative_to(ROOT)} cites {name}")
    assert not missing, sorted(missing)  # was: BASELINES.md and BRIEF.md, which are not in the repository
