"""Plots: valid PNG files of the expected pixel size, for runs, comparisons, sweeps and profiles."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_run, png_size
from conftest import measured_profile as _measured_profile

from pdmp_cli import plots, report

@pytest.fixture
def rep(tmp_path):
    root = tmp_path / "runs"
    for g, seed in ((1.0, 0), (5.0, 0), (5.0, 1)):
        make_run(root, f"pdmp-g{g:g}-s{seed}", accs=[0.3, 0.5 + g / 100 + seed / 100], gamma_p=g, seed=seed)
    make_run(root, "vanilla-s0", method="vanilla", accs=[0.3, 0.55])
    make_run(root, "film-s0", fusion="film", accs=[0.3, 0.55])
    make_run(root, "ave-tri", dataset="ave3", accs=[0.2, 0.4], modalities=("audio", "visual", "text"))  # w is None
    prof = _measured_profile(tmp_path / "profiles" / "synthetic.json")
    return report.build([root], profiles=[prof])


def test_each_plot_has_its_size(rep, tmp_path):
    rec = next(r for r in rep.records if r.path.name == "pdmp-g5-s0")
    assert png_size(plots.plot_run(rec, tmp_path / "run.png")) == plots.RUN_SIZE
    tri = next(r for r in rep.records if r.path.name == "ave-tri")
    assert png_size(plots.plot_run(tri, tmp_path / "tri.png")) == plots.RUN_SIZE  # shares instead of w
    rows = [w for w in rep.rows if w.dataset == "synthetic" and w.fusion == "concat"]
    assert png_size(plots.plot_comparison(rows, tmp_path / "cmp.png")) == plots.RUN_SIZE
    assert png_size(plots.plot_sweep(rows, tmp_path / "sweep.png")) == plots.SWEEP_SIZE
    assert png_size(plots.plot_profile(rep.profiles[0], tmp_path / "prof.png")) == plots.PROFILE_SIZE
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_write_plots_writes_what_applies(rep, tmp_path):
    out = tmp_path / "plots"
    written = plots.write_plots(rep, out)
    names = sorted(p.name for p in written)
    runs = sorted(f"run-{r.path.name}.png" for r in rep.records)
    assert names == sorted(
        [*runs, "compare-synthetic-concat.png", "sweep-synthetic.png", "profile-synthetic.png"]
    )  # film and ave3 have one configuration each: no comparison; only synthetic sweeps γp
    assert sorted(p.name for p in out.iterdir()) == names
    for p in written:
        want = {"sweep": plots.SWEEP_SIZE, "profile": plots.PROFILE_SIZE}.get(p.name.split("-")[0], plots.RUN_SIZE)
        assert png_size(p) == want


def test_runs_without_epochs_and_reference_profiles_draw_nothing(tmp_path):
    d = make_run(tmp_path / "runs", "empty", accs=[0.5], status="running", epochs_planned=5)
    (d / "metrics.jsonl").write_text("")
    rep = report.build([tmp_path / "runs"], profiles=[Path(__file__).parents[1] / "profiles" / "cremad.paper.json"])
    assert plots.write_plots(rep, tmp_path / "plots") == []


def test_safe_names():
    assert plots.safe_name("runs/a b:c") == "runs_a_b_c"
    assert plots.safe_name("///") == "plot"


def test_axis_labels_name_the_split_and_the_headline(rep, tmp_path, monkeypatch):
    from types import SimpleNamespace

    labels = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: labels.append(fig.axes[0].get_ylabel()) or real(fig, path))
    p = rep.profiles[0].profile
    plots.plot_profile(SimpleNamespace(profile=p), tmp_path / "v1.png")  # no validation record: ranked on test
    on_val = p.model_copy(update={"validation": {"selection": "validation", "source": "carved", "val_size": 120}})
    plots.plot_profile(SimpleNamespace(profile=on_val), tmp_path / "val.png")
    rows = [w for w in rep.rows if w.dataset == "synthetic" and w.fusion == "concat"]
    plots.plot_sweep(rows, tmp_path / "sweep.png")
    assert labels == ["test accuracy %", "validation accuracy %", "test accuracy % (best validation epoch)"]
