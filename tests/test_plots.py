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


@pytest.fixture(scope="module")
def tuned_runs(tmp_path_factory):
    """Two real tiny runs as pdmp tune trains them (evaluate_test=False): every epoch's test
    accuracy is None; fused and branch accuracies, w and shares are on validation."""
    from conftest import TINY_SYNTHETIC, make_profile

    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import run

    root = tmp_path_factory.mktemp("tuned")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDMP_CACHE_DIR", str(root / "cache"))
        (root / "tiny.toml").write_text(TINY_SYNTHETIC)
        profile = make_profile().save(root / "tiny-profile.json")
        for g in (5.0, 10.0):
            spec = TrainSpec(
                profile=str(profile), dataset=str(root / "tiny.toml"), encoder="small", epochs=2, batch_size=16,
                lr=0.01, gamma_p=g, run_dir=str(root / "runs" / f"pdmp-g{g:g}"),
            )  # fmt: skip
            run(spec, evaluate_test=False, quiet=True)
    return root / "runs"


def _texts(monkeypatch) -> dict[str, list]:
    """File name -> (y label, legend texts) of each axis of each figure saved."""
    seen = {}
    real = plots._save

    def save(fig, path):
        seen[Path(path).name] = [(ax.get_ylabel(), [t.get_text() for t in ax.get_legend().get_texts()]) for ax in fig.axes]
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return seen


def test_runs_without_test_accuracy_plot_validation_and_say_what_they_skip(tuned_runs, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    assert all(m.test_accuracy is None and m.val_accuracy is not None for r in report.build([tuned_runs]).records for m in r.metrics)
    seen = _texts(monkeypatch)
    out = tmp_path / "plots"
    r = CliRunner().invoke(app, ["report", str(tuned_runs), "--plot", str(out)])
    assert r.exit_code == 0 and r.exception is None, r.output
    names = ["compare-tiny-concat.png", "run-pdmp-g10.png", "run-pdmp-g5.png"]  # no sweep: no test accuracy to draw
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert f"wrote {out / name}" in r.output
        assert png_size(out / name) == plots.RUN_SIZE
    assert seen["run-pdmp-g5.png"] == [
        ("validation accuracy %", ["fused (validation)", "audio branch", "visual branch"]),
        ("w on validation (log scale)", ["w", "w = 1 (balanced)"]),
    ]
    assert seen["compare-tiny-concat.png"] == [
        ("validation accuracy %", ["pdmp γp 5 (concat)", "pdmp γp 10 (concat)"]),
        ("w on validation (log scale)", ["pdmp γp 5 (concat)", "pdmp γp 10 (concat)", "w = 1 (balanced)"]),
    ]
    note = "note: sweep-tiny.png not drawn: no line has a test accuracy (trained without the test split, as pdmp tune's runs are)"
    assert note in r.output.replace("\n", " ")


def test_test_and_validation_never_share_an_axis(tuned_runs, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(tuned_runs, root)
    make_run(root, "vanilla-test", method="vanilla", dataset="tiny", accs=[0.4, 0.6], vals=[0.5, 0.5])
    rep = report.build([root])
    seen, notes = _texts(monkeypatch), []
    written = plots.write_plots(rep, tmp_path / "plots", notes=notes)
    assert sorted(p.name for p in written) == [
        "compare-tiny-concat.png", "run-pdmp-g10.png", "run-pdmp-g5.png", "run-vanilla-test.png", "sweep-tiny.png",
    ]  # fmt: skip
    assert seen["compare-tiny-concat.png"][0] == ("test accuracy %", ["vanilla (concat)"])
    assert seen["sweep-tiny.png"][0] == ("test accuracy % (best validation epoch)", ["vanilla (concat)"])
    why = "no test accuracy (trained without the test split, as pdmp tune's runs are)"
    assert notes == [
        f"compare-tiny-concat.png: pdmp γp 5 (concat) left out: {why}",
        f"compare-tiny-concat.png: pdmp γp 10 (concat) left out: {why}",
        f"sweep-tiny.png: pdmp (concat) left out: {why}",
    ]
    # a run resumed with the test split after epochs without it: each epoch's fused line names its split
    rec = next(r for r in rep.records if r.path.name == "vanilla-test")
    rec.metrics[0] = rec.metrics[0].model_copy(update={"test_accuracy": None, "test_macro_f1": None})
    plots.plot_run(rec, tmp_path / "mixed.png")
    assert seen["mixed.png"][0] == (
        "accuracy % (validation where no test)", ["fused (test)", "fused (validation)", "audio branch", "visual branch"],
    )  # fmt: skip
    rec.metrics[0] = rec.metrics[0].model_copy(update={"val_accuracy": None})
    rec.metrics[1] = rec.metrics[1].model_copy(update={"test_accuracy": None, "val_accuracy": None})
    with pytest.raises(plots.NothingToPlot, match="no epoch has a test or a validation accuracy"):
        plots.plot_run(rec, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
