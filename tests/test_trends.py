"""Rankings that know when they are unsure: still-rising curves (fixture curves), --epochs auto
(early stopping on validation), --seeds (per-seed cache, ranking frequency), the Table VI
agreement with the largest subset, and the issue's synthetic check (slow)."""

from __future__ import annotations

import pytest
from scipy import stats
from conftest import analysis_outcome as _outcome

from pdmp_cli import analysis
from pdmp_cli.analysis import EarlyStopping, build_profile, curve_trend, stop_epoch, subset_study_rows
from pdmp_cli.specs import AnalyzeSpec, dataset_defaults, resolve_spec

RISING = [0.15, 0.15, 0.16, 0.23, 0.18, 0.30, 0.22, 0.25, 0.29, 0.32, 0.34, 0.35, 0.34, 0.39, 0.41, 0.40, 0.42, 0.41, 0.44, 0.45]
FLAT = [0.43, 0.63, 0.63, 0.62, 0.63, 0.60, 0.61, 0.60, 0.62, 0.61, 0.60, 0.62, 0.61, 0.60, 0.62, 0.61, 0.60, 0.62, 0.61, 0.61]


def test_a_still_rising_curve_is_detected_and_a_flat_one_is_not():
    rising, rise, p = curve_trend(RISING, 120)  # the second half: epochs 11-20
    fit = stats.linregress(range(10), RISING[10:], alternative="greater")
    assert rising is True and p == pytest.approx(fit.pvalue) and p < 0.05
    assert rise == pytest.approx(fit.slope * 9)
    assert rise == pytest.approx(9 * 1.025 / 82.5)  # least squares by hand: S_xy / S_xx = 1.025 / 82.5 per epoch
    assert rise > (0.395 * 0.605 / 120) ** 0.5  # more than one SE of an accuracy at the mean level (0.045)
    assert curve_trend(FLAT, 120)[0] is False  # audio-like: fast, then flat with noise
    assert curve_trend([0.5] * 6, 120) == (False, 0.0, 1.0)
    assert curve_trend([0.1, 0.2, 0.3], 120) == (None, None, None)  # too short to tell


def test_climbing_back_after_a_dip_is_not_rising():
    # measured: audio on all of synthetic, 20 epochs: 0.633 from epoch 1, a dip to 0.5, back to 0.633
    audio = [0.633, 0.633, 0.633, 0.633, 0.625, 0.625, 0.567, 0.558, 0.5, 0.575,
             0.567, 0.583, 0.625, 0.6, 0.625, 0.625, 0.617, 0.633, 0.633, 0.625]  # fmt: skip
    rising, rise, p = curve_trend(audio, 120)
    assert p < 0.05 and rise > 0.044 and rising is False  # significant and large, but no new best


def test_a_significant_but_tiny_slope_on_a_plateau_is_not_rising():
    # measured: visual at subset 0.4, epochs 21-40 (it stays at ~0.38 through epoch 50)
    plateau = [0.383, 0.375, 0.383, 0.383, 0.383, 0.375, 0.375, 0.392, 0.383, 0.383,
               0.383, 0.383, 0.383, 0.383, 0.375, 0.383, 0.375, 0.4, 0.392, 0.4]  # fmt: skip
    rising, rise, p = curve_trend(plateau, 120)
    assert p < 0.05 and rise < 0.02 and rising is False  # significant, but under one SE (0.044)
    assert curve_trend(plateau, 120_000)[0] is True  # the same slope on a huge split is beyond its noise


def _profile(curves, **kw):
    args = dict(dataset="synthetic", identity="x", modalities=["audio", "visual"], curves=curves, eval_size=120,
                early_epochs=2, subset=0.4, seed=0, settings={})  # fmt: skip
    return build_profile(**{**args, **kw})


def test_a_rising_modality_below_the_first_is_named_in_a_warning():
    p, warnings = _profile({"audio": FLAT, "visual": RISING})
    assert p.late_ranking == ["audio", "visual"] and p.uncertain["late_trend"] is True
    assert p.results["visual"].still_rising is True and p.results["audio"].still_rising is False
    (w,) = [w for w in warnings if "could still flip" in w]
    assert w.startswith("the performance (late) ranking could still flip at subset 0.4: visual (ranked 2, 0.450 vs audio 0.610)")
    assert "train longer" in w and w in p.notes


def test_flat_curves_or_a_rising_leader_raise_no_flip_warning():
    p, warnings = _profile({"audio": FLAT, "visual": [x - 0.3 for x in FLAT]})
    assert p.uncertain["late_trend"] is False and not any("could still flip" in w for w in warnings)
    p, warnings = _profile({"audio": [x - 0.3 for x in FLAT], "visual": [x + 0.3 for x in RISING]})  # visual leads
    assert p.results["visual"].still_rising is True and p.uncertain["late_trend"] is False


def test_early_stopping_stops_at_the_right_epoch():
    curve = [0.10, 0.30, 0.50, 0.50, 0.49, 0.50, 0.48, 0.60]  # best 0.50 at epoch 3; equal is no better
    assert stop_epoch(curve, patience=3, cap=100) == 6  # epochs 4, 5, 6 without a new best
    assert stop_epoch(curve, patience=5, cap=100) == 8  # never stops: the whole curve
    assert stop_epoch(curve, patience=3, cap=4) == 4  # the cap
    assert stop_epoch([0.5, 0.4, 0.4, 0.4], patience=1, cap=100, min_epochs=3) == 3  # never before early_epochs
    s = EarlyStopping(patience=2, cap=10)
    assert [s.update(a) for a in (0.2, 0.3, 0.25, 0.3)] == [False, False, False, True] and s.best_epoch == 2


def test_auto_profile_reads_the_best_epoch_and_curves_may_differ_in_length():
    curves = {"audio": [0.5, 0.6, 0.55, 0.55], "visual": [0.2, 0.3, 0.4, 0.45, 0.44, 0.44]}
    p, _ = _profile(curves, auto=True, cap=50)
    assert (p.results["audio"].late_accuracy, p.results["visual"].late_accuracy) == (0.6, 0.45)
    assert (p.results["audio"].stopped_epoch, p.results["visual"].stopped_epoch) == (4, 6)
    assert p.results["visual"].still_rising is False  # stopped by patience before the cap: converged
    with pytest.raises(ValueError, match="same length"):
        _profile(curves)  # fixed epochs: equal lengths


def test_seeds_average_and_count_rankings():
    runs = {0: {"audio": [0.6, 0.6], "visual": [0.2, 0.7]}, 1: {"audio": [0.6, 0.6], "visual": [0.2, 0.5]},
            2: {"audio": [0.6, 0.6], "visual": [0.2, 0.8]}}  # fmt: skip
    p, warnings = _profile(runs[0], seed_curves=runs, early_epochs=1)
    assert p.results["visual"].late_accuracy == pytest.approx(2 / 3) and p.seeds == [0, 1, 2]
    assert p.ranking_frequency == {"late": {"visual > audio": 2, "audio > visual": 1}, "early": {"audio > visual": 3}}
    assert p.uncertain["late_seeds"] is True
    assert "differs between seeds at subset 0.4: visual > audio on 2 of 3, audio > visual on 1 of 3" in " ".join(warnings)


def test_table_vi_rows_say_whether_they_agree_with_the_largest_subset():
    outs = [
        _outcome(0.2, {"audio": [0.6, 0.55], "visual": [0.2, 0.53]}),
        _outcome(0.6, {"audio": [0.6, 0.55], "visual": [0.2, 0.70]}),
        _outcome(1.0, {"audio": [0.6, 0.55], "visual": [0.2, 0.80]}),
    ]
    assert [r["agrees"] for r in subset_study_rows(outs)] == [False, True, True]


def _spec(manifest, tmp_path, **kw):
    # the probe off: these tests are about the unimodal curves (and count their steps)
    base = {"dataset": str(manifest), "device": "cpu", "out": str(tmp_path / "p.json"), "probe_epochs": 0}
    return resolve_spec(AnalyzeSpec, dataset_defaults(str(manifest), AnalyzeSpec), base, kw)


def test_epochs_auto_trains_until_validation_stops_improving(tiny_manifest, tmp_path):
    spec = _spec(tiny_manifest, tmp_path, epochs="auto", patience=1, max_epochs=4, early_epochs=1)
    [o] = analysis.run(spec, progress=False)
    for m, r in o.profile.results.items():
        assert len(r.curve) == r.stopped_epoch == stop_epoch(r.curve, 1, 4, 1)  # stopped where the rule says
        assert r.late_accuracy == max(r.curve)


def test_seeds_are_measured_and_cached_one_by_one(tiny_manifest, tmp_path):
    before = analysis.training_steps.value
    analysis.run(_spec(tiny_manifest, tmp_path, epochs=1, early_epochs=1), progress=False)  # seed 0
    [o] = analysis.run(_spec(tiny_manifest, tmp_path, epochs=1, early_epochs=1, seeds="0,1"), progress=False)
    assert analysis.training_steps.value - before == 2 * (4 * 2)  # seed 0 once, then only seed 1: 4 steps x 2 modalities
    assert o.profile.seeds == [0, 1] and sum(o.profile.ranking_frequency["late"].values()) == 2


@pytest.mark.slow
def test_synthetic_at_subset_04_warns_while_visual_is_still_learning(tmp_path):
    """The issue's check, measured (~50 s on 2 cores). At subset 0.4 visual climbs from 0.15 to
    ~0.39 by epoch ~14 and then stays there (measured to epoch 50): it has converged below audio
    (~0.6), the small-subset effect of the paper's Table VI, so at the preset's 20 epochs the
    ranking audio > visual is the measurement and no trend warning is right (the subset study's
    `agrees with 100%` column flags it instead). Stopped at epoch 12, mid-climb, the ranking is
    the same but visual is still rising: the command must say so, naming visual."""
    [o] = analysis.run(_spec("synthetic", tmp_path, subset=0.4, epochs=12), progress=False)
    p = o.profile
    assert p.late_ranking == ["audio", "visual"] and p.results["visual"].still_rising
    assert p.uncertain["late_trend"] is True
    assert any("could still flip at subset 0.4: visual (ranked 2" in w for w in o.warnings), o.warnings
