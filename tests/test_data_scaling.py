"""The data-scaling check of `pdmp analyze` (issue 23): the nested half of one --subset s < 1, each
modality's gain per doubling of the data, and a warning naming a modality that may overtake the leader."""

import math

import pytest
from typer.testing import CliRunner

from pdmp_cli import analysis
from pdmp_cli.analysis import data_scaling
from pdmp_cli.runtime import stratified_subset
from pdmp_cli.specs import AnalyzeSpec, dataset_defaults, resolve_spec


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# --- the rule, on fixture curves' late accuracies ----------------------------------------------------
def test_a_modality_gaining_fast_enough_to_reach_the_leader_is_named():
    # measured on `synthetic` seed 0: subset 0.2 -> 0.4, audio 0.633 -> 0.608, visual 0.233 -> 0.383
    rec, warnings = data_scaling({"audio": 0.608, "visual": 0.383}, {"audio": 0.633, "visual": 0.233}, 0.4, 120)
    d = math.log2(2.5)  # 1.3219 doublings from 40 % to all of it
    assert rec["doublings_to_full"] == pytest.approx(1.321928, abs=1e-6)
    assert rec["gain_per_doubling"] == pytest.approx({"audio": -0.025, "visual": 0.150})
    # projected: visual 0.383 + 1.3219 * 0.150 = 0.581289, audio 0.608 - 1.3219 * 0.025 = 0.574952
    assert rec["projected_full"] == pytest.approx({"audio": 0.608 - d * 0.025, "visual": 0.383 + d * 0.15})
    assert rec["projected_full"]["visual"] == pytest.approx(0.581289, abs=1e-6)
    assert rec["may_flip"] == ["visual"] and rec["half_subset"] == 0.2
    # SE of the projected gap: var = ((1+d)^2 p(1-p) + d^2 q(1-q)) / n for each, added
    var = sum(((1 + d) ** 2 * p * (1 - p) + d**2 * q * (1 - q)) / 120 for p, q in ((0.608, 0.633), (0.383, 0.233)))
    assert warnings == [
        "the performance (late) ranking may flip with more data: visual gains +0.150 per doubling of the training "
        "data (subset 0.2 -> 0.4: 0.233 -> 0.383), audio -0.025 (0.633 -> 0.608); along that trend visual reaches "
        f"0.581 by the full training set (1.32 doublings) against audio's 0.575, within 2 standard errors "
        f"({2 * math.sqrt(var):.3f}); confirm with `--subset 0.4,0.8`"
    ]


def test_no_warning_when_the_challenger_gains_no_faster_than_the_leader():
    # synthetic-ave-like: audio far ahead and still gaining; visual gains less
    rec, warnings = data_scaling({"audio": 0.90, "visual": 0.22}, {"audio": 0.86, "visual": 0.20}, 0.4, 120)
    assert rec["may_flip"] == [] and warnings == []
    # equal gains never close the gap, whatever the noise
    rec, _ = data_scaling({"audio": 0.6, "visual": 0.5}, {"audio": 0.5, "visual": 0.4}, 0.2, 10)
    assert rec["may_flip"] == []


def test_the_evaluation_size_decides_whether_a_projected_gap_is_within_uncertainty():
    # s 0.5 (one doubling): visual gains 0.05 more per doubling, projected gap 0.95 - 0.55 = 0.35 wide
    late, half = {"audio": 0.9, "visual": 0.5}, {"audio": 0.9, "visual": 0.45}
    # n 10000: var = (4*0.09 + 0.09)/n + (4*0.25 + 0.2475)/n -> 2 SE = 0.026 < 0.35: no warning
    assert data_scaling(late, half, 0.5, 10000)[0]["may_flip"] == []
    # n 20: 2 SE = 2 sqrt((0.45 + 1.2475) / 20) = 0.583 > 0.35: it may flip
    assert data_scaling(late, half, 0.5, 20)[0]["may_flip"] == ["visual"]
    assert data_scaling(late, half, 0.5, 20, z=1.0)[0]["may_flip"] == []  # 1 SE = 0.291 < 0.35


def test_the_half_subset_is_nested_in_the_subset():
    labels = [i % 3 for i in range(100)]
    for s in (0.2, 0.4, 0.5, 0.9):
        assert set(stratified_subset(labels, s / 2, 7)) <= set(stratified_subset(labels, s, 7))


# --- the analysis ------------------------------------------------------------------------------------
def _spec(manifest, tmp_path, **kw):
    base = {"dataset": str(manifest), "device": "cpu", "out": str(tmp_path / "p.json"), "probe_epochs": 0}
    return resolve_spec(AnalyzeSpec, dataset_defaults(str(manifest), AnalyzeSpec), base, kw)


def _steps(spec):
    before = analysis.training_steps.value
    outcomes = analysis.run(spec, progress=False)
    return outcomes, analysis.training_steps.value - before


def test_one_subset_below_one_also_trains_the_nested_half_cached_like_the_rest(tiny_manifest, tmp_path):
    [o], steps = _steps(_spec(tiny_manifest, tmp_path, subset=0.5))
    # 54 train clips: 27 at 0.5 (2 batches of 16), 12 at 0.25 (1 batch); 2 epochs, 2 modalities
    assert steps == 2 * 2 * (2 + 1)
    sc = o.profile.data_scaling
    assert sc["half_subset"] == 0.25 and sc["doublings_to_full"] == 1.0
    for m, r in o.profile.results.items():
        assert sc["gain_per_doubling"][m] == pytest.approx(r.late_accuracy - sc["half_late_accuracy"][m])
    assert o.profile.uncertain["data_scaling"] == bool(sc["may_flip"])
    [again], steps = _steps(_spec(tiny_manifest, tmp_path, subset=0.5))
    assert steps == 0 and again.cached and again.profile.data_scaling == sc
    # the half is the subset-0.25 measurement itself: the same cache entry
    [quarter], steps = _steps(_spec(tiny_manifest, tmp_path, subset=0.25, scaling=False, out=str(tmp_path / "q.json")))
    assert steps == 0 and {m: r.late_accuracy for m, r in quarter.profile.results.items()} == sc["half_late_accuracy"]


def test_no_half_for_the_whole_split_a_subset_list_or_no_scaling(tiny_manifest, tmp_path):
    for i, kw in enumerate(({"subset": 1.0}, {"subset": "0.5,1.0"}, {"subset": 0.5, "scaling": False})):
        outcomes, _ = _steps(_spec(tiny_manifest, tmp_path, out=str(tmp_path / f"p{i}.json"), **kw))
        assert all(o.profile.data_scaling is None and "data_scaling" not in o.profile.uncertain for o in outcomes), kw


# --- the checks, measured on the presets (slow: ~20-40 s each on 2 cores) --------------------
runner = CliRunner()


def _analyze(*args):
    from pdmp_cli.cli.app import app

    r = runner.invoke(app, ["analyze", *args, "--probe-epochs", "0", "--out", "p.json"], terminal_width=400)
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())


@pytest.mark.slow
def test_synthetic_at_subset_04_warns_that_visual_may_overtake_audio():
    out = _analyze("--dataset", "synthetic", "--subset", "0.4")
    assert "performance-dominant audio" in out
    assert "the performance (late) ranking may flip with more data: visual gains +" in out
    assert "confirm with `--subset 0.4,0.8`" in out


@pytest.mark.slow
@pytest.mark.parametrize("args", [("--dataset", "synthetic", "--subset", "1.0"), ("--dataset", "synthetic-ave", "--subset", "0.4")])
def test_no_data_scaling_warning_where_the_ranking_holds(args):
    out = _analyze(*args)
    assert "may flip with more data" not in out


def test_profile_show_prints_the_data_scaling_table(tmp_path):
    from pdmp_cli.analysis import build_profile
    from pdmp_cli.cli.app import app

    p, _ = build_profile(
        dataset="synthetic", identity="abc", modalities=["audio", "visual"], early_epochs=1, subset=0.4, seed=0,
        curves={"audio": [0.6, 0.608], "visual": [0.2, 0.383]}, eval_size=120, settings={},
        half_curves={0: {"audio": [0.6, 0.633], "visual": [0.2, 0.233]}},
    )  # fmt: skip
    assert p.data_scaling["may_flip"] == ["visual"] and p.uncertain["data_scaling"] is True
    p.save(tmp_path / "m.json")
    out = runner.invoke(app, ["profile", "show", str(tmp_path / "m.json")], terminal_width=200).output
    assert "│ visual   │ 0.233 │ 0.383 │            +0.150 │          0.581 │ yes          │" in out, out
    assert "│ audio    │ 0.633 │ 0.608 │            -0.025 │          0.575 │ -            │" in out
    assert "may flip with more data" in out
