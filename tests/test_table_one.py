"""The paper's Table I from one command: `sweep --method all|paper` and the report's method order."""

from __future__ import annotations

import pytest
from conftest import FakeTrain, make_run
from conftest import profile_file as _profile

import pdmp_cli.train
from pdmp_cli import report, sweep
from pdmp_cli.methods import METHODS


def test_method_sets_in_the_papers_order():
    every = sweep.expand_methods(["all"])
    assert sorted(every) == METHODS.names()
    assert every[0] == "vanilla" and every[-1] == "pdmp"  # Table I: the concat baseline first, PDMP last
    paper = sweep.expand_methods(["paper"])
    assert paper == [n for n in every if METHODS.get(n).in_paper_table]
    assert "udi" not in paper and "lr-scale" not in paper  # not rows of Table I
    for a, b in [("vanilla", "ogm-ge"), ("ogm-ge", "mla"), ("mla", "dr"), ("dr", "pdmp")]:
        assert paper.index(a) < paper.index(b)
    # a set leaves out what cannot run on three modalities; a name given alone still goes through
    assert "ogm-ge" not in sweep.expand_methods(["all"], modalities=3)
    assert sweep.expand_methods(["ogm-ge", "paper"], modalities=3)[0] == "ogm-ge"
    assert sweep.expand_methods(["udi", "all"]).count("udi") == 1


def test_sweep_method_paper_trains_every_table_one_method_per_seed(monkeypatch, tmp_path, tiny_manifest):
    fake = FakeTrain()
    monkeypatch.setattr(pdmp_cli.train, "run", fake)
    base = sweep.base_spec(_profile(tmp_path / "p.json"), dataset=str(tiny_manifest), flags={"runs_root": str(tmp_path / "r")})
    res = sweep.run(base, methods=["paper"], seeds=[0, 1], quiet=True)
    paper = sweep.expand_methods(["paper"])
    assert [(s.method, s.seed) for s, _ in fake.calls] == [(m, seed) for m in paper for seed in (0, 1)]
    assert [w.method for w in res.report.rows] == paper  # report rows in the same order


def test_report_orders_by_the_method_classes_and_labels_approximations(tmp_path):
    for i, m in enumerate(["pdmp", "udi", "dr", "mla", "vanilla", "ogm-ge"]):
        for seed in (0, 1):
            make_run(tmp_path, f"{m}-{seed}", method=m, accs=[0.5, 0.6 + i / 100 + seed / 100], seed=seed)
    rep = report.build([tmp_path])
    assert [w.method for w in rep.rows] == ["vanilla", "ogm-ge", "mla", "dr", "udi", "pdmp"]
    text = report.render(rep, "markdown")
    assert "| udi (approximation) |" in text and "| mla |" in text
    # mean ± std over the two seeds; the best in bold
    assert "± 0.7" in text and "**" in text
