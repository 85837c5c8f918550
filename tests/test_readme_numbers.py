"""The measured tables of the README and docs/ are what benchmarks/readme_tables.py makes from the
committed results files, and every document the README, the docs pages or the code cite is in the
repository."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed
OUTPUTS = {"report.md", "table.md"}  # files the README's commands write, not documents it cites


def test_every_cited_document_is_in_the_repository():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(docs) >= 10  # the README and its docs pages (analysis, training, tuning, ...)
    texts = [*docs, *sorted((ROOT / "pdmp_cli").rglob("*.py"))]
    missing = set()
    for path in texts:
        for name in re.findall(r"[A-Za-z0-9_./-]+\.md\b", path.read_text()):
            if Path(name).name in OUTPUTS:
                continue
            # a name from the repository's root (`docs/baselines.md`), or, in a docs page, a link
            # relative to it (`baselines.md`, `../README.md`)
            if not (ROOT / name.lstrip("/")).is_file() and not (path.parent / name).is_file():
                missing.add(f"{path.relative_to(ROOT)} cites {name}")
    assert not missing, sorted(missing)  # was: BASELINES.md and BRIEF.md, which are not in the repository


def _holder(name: str) -> Path:
    """The one document (README.md or docs/*.md) that holds the table ``name``."""
    from benchmarks.readme_tables import documents

    holders = [p for p in documents() if f"<!-- table:{name} -->" in p.read_text()]
    assert len(holders) == 1, f"the {name} table is in {[str(p.relative_to(ROOT)) for p in holders]}, not in one document"
    return holders[0]


def test_the_readme_tables_are_what_the_script_makes_from_the_committed_results():
    from benchmarks.readme_tables import TABLES, documents, render_readme

    assert {_holder(name).name for name in TABLES} == {"demo.md", "scaling.md", "tuning.md"}
    for path in documents():
        text = path.read_text()
        assert render_readme(text) == text, f"{path.relative_to(ROOT)}: run: python -m benchmarks.readme_tables write"


def test_the_check_finds_a_drifted_table_in_a_docs_page(tmp_path):
    """`check` and `write` cover docs/ pages: a table that differs there is found and rewritten."""
    from benchmarks.readme_tables import documents, main, render_readme, stale

    (tmp_path / "docs").mkdir()
    for path in documents():
        (tmp_path / path.relative_to(ROOT)).write_text(path.read_text())
    page = tmp_path / "docs" / "scaling.md"
    good = page.read_text()
    marker = "<!-- table:threads -->\n"
    assert good.count(marker) == 1
    page.write_text(good.replace(marker, marker + "| small | an old row |\n"))  # the table drifted
    assert stale(tmp_path) == [page]
    assert render_readme(page.read_text()) == good
    assert main(["check"]) == 0  # the repository's own documents are current


def test_a_changed_result_changes_the_table(tmp_path):
    import json
    import shutil

    from benchmarks.readme_tables import RESULTS, render_readme

    shutil.copytree(RESULTS, tmp_path / "results")
    threads = tmp_path / "results" / "threads.json"
    data = json.loads(threads.read_text())
    data["figures"]["small"]["threads"]["1"]["step_ms"] += 100.0  # a new measurement
    threads.write_text(json.dumps(data))
    text = _holder("threads").read_text()
    assert render_readme(text, tmp_path / "results") != text
