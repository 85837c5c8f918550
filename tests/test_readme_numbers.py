"""The README's measured tables are what benchmarks/readme_tables.py makes from the committed
results files, and every document the README or the code cites is in the repository."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed
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


def test_the_readme_tables_are_what_the_script_makes_from_the_committed_results():
    from benchmarks.readme_tables import TABLES, render_readme

    text = (ROOT / "README.md").read_text()
    for name in TABLES:
        assert f"<!-- table:{name} -->" in text, f"the README lost its {name} table"
    assert render_readme(text) == text, "run: python -m benchmarks.readme_tables write"


def test_a_changed_result_changes_the_table(tmp_path):
    import json
    import shutil

    from benchmarks.readme_tables import RESULTS, render_readme

    shutil.copytree(RESULTS, tmp_path / "results")
    threads = tmp_path / "results" / "threads.json"
    data = json.loads(threads.read_text())
    data["figures"]["small"]["threads"]["1"]["step_ms"] += 100.0  # a new measurement
    threads.write_text(json.dumps(data))
    text = (ROOT / "README.md").read_text()
    assert render_readme(text, tmp_path / "results") != text
