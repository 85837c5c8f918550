"""The modality analysis library: ranking, uncertainty, profiles, the cache and its lock."""

import json
import math
import threading

import pytest

from pdmp_cli import analysis
from pdmp_cli.analysis import build_profile, rank, ranking_uncertain, noise_threshold
from pdmp_cli.errors import PdmpError
from pdmp_cli.profile import Profile
from pdmp_cli.specs import AnalyzeSpec, dataset_defaults, resolve_spec

@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _spec(manifest, tmp_path, default_out=True, **kw) -> AnalyzeSpec:
    # the probe off unless a test asks for it: these tests count the unimodal models' steps
    base = {"dataset": str(manifest), "device": "cpu", "probe_epochs": 0}
    if default_out:
        base["out"] = str(tmp_path / "out" / "p.json")
    return resolve_spec(AnalyzeSpec, dataset_defaults(str(manifest), AnalyzeSpec), base, kw)


def _run(spec, force=False):
    before = analysis.training_steps.value
    outcomes = analysis.run(spec, progress=False, force=force)
    return outcomes, analysis.training_steps.value - before


# --- pure functions ------------------------------------------------------------------------
def test_rank_is_best_first_and_ties_keep_modality_order():
    assert rank({"audio": 0.5, "visual": 0.7, "depth": 0.6}) == ["visual", "depth", "audio"]
    assert rank({"audio": 0.5, "visual": 0.5}, ["visual", "audio"]) == ["visual", "audio"]
    assert rank({"audio": 0.5, "visual": 0.5}, ["audio", "visual"]) == ["audio", "visual"]


def test_noise_threshold_is_two_binomial_standard_errors_of_the_difference():
    expected = 2 * math.sqrt(0.59 * 0.41 / 480 + 0.55 * 0.45 / 480)
    assert noise_threshold(0.59, 0.55, 480) == pytest.approx(expected)
    assert noise_threshold(0.59, 0.55, 480) == pytest.approx(0.063862, abs=1e-6)


@pytest.mark.parametrize(
    "acc, n, uncertain",
    [
        ({"audio": 0.53, "visual": 0.775}, 480, False),  # 0.245 apart, 2 SE = 0.059
        ({"audio": 0.59, "visual": 0.55}, 480, True),  # 0.04 apart, 2 SE = 0.064
        ({"audio": 0.59, "visual": 0.55}, 4800, False),  # same gap, 10x the samples: 2 SE = 0.020
        ({"audio": 0.4, "visual": 0.4}, 30, True),  # a tie
        ({"audio": 1.0, "visual": 1.0}, 30, True),  # a tie with zero variance
        ({"audio": 1.0, "visual": 0.0}, 30, False),
        ({"a": 0.9, "b": 0.5, "c": 0.49}, 100, False),  # only the top two count
    ],
)
def test_ranking_uncertain(acc, n, uncertain):
    assert ranking_uncertain(acc, n) is uncertain


CURVES = {  # the shape measured on the synthetic preset: audio fast and capped, visual slow and high
    "audio": [0.59, 0.59, 0.58, 0.56, 0.53],
    "visual": [0.17, 0.22, 0.62, 0.74, 0.775],
}


def _profile(**kw):
    args = dict(
        dataset="synthetic", identity="abc", modalities=["audio", "visual"], curves=CURVES, eval_size=480,
        early_epochs=2, subset=1.0, seed=0, settings={"epochs": 5}, command="pdmp analyze -d synthetic",
    )  # fmt: skip
    args.update(kw)
    return build_profile(**args)


def test_build_profile_reads_early_and_late_accuracy_and_ranks():
    p, warnings = _profile()
    assert p.results["audio"].early_accuracy == 0.59 and p.results["visual"].early_accuracy == 0.22
    assert p.results["audio"].late_accuracy == 0.53 and p.results["visual"].late_accuracy == 0.775
    assert p.results["visual"].curve == CURVES["visual"] and p.results["visual"].eval_size == 480
    assert p.early_ranking == ["audio", "visual"] and p.late_ranking == ["visual", "audio"]
    assert (p.performance_dominant, p.optimization_dominant) == ("visual", "audio")
    assert p.optimization_criterion == "unimodal-early"
    assert p.uncertain == {"early_ranking": False, "late_ranking": False, "late_trend": False}
    assert warnings == [] and p.notes == []
    assert p.provenance.source == "measured" and p.provenance.command == "pdmp analyze -d synthetic"


def test_early_epochs_chooses_where_early_is_read():
    p, _ = _profile(early_epochs=3)  # epoch 3: audio 0.58 vs visual 0.62
    assert p.results["visual"].early_accuracy == 0.62
    assert p.early_ranking == ["visual", "audio"] and p.optimization_dominant == "visual"
    assert p.uncertain["early_ranking"] is True  # 0.04 apart at n=480


def test_close_rankings_are_marked_uncertain_with_a_fix_in_the_warning():
    curves = {"audio": [0.50, 0.60], "visual": [0.10, 0.58]}
    p, warnings = _profile(curves=curves, early_epochs=1)
    assert p.uncertain == {"early_ranking": False, "late_ranking": True, "late_trend": False}
    assert len(warnings) == 1
    assert warnings[0] == (
        "the performance (late) ranking is uncertain at subset 1: audio 0.600 vs visual 0.580 differ by 0.020, "
        "less than 2 standard errors (0.063, n=480); use a larger --subset or more --epochs"
    )
    assert warnings[0] in p.notes


def test_the_probe_decides_the_optimization_dominant_modality_and_says_so():
    probe = {"fusion": "concat", "epochs": 2, "branch_accuracy": {"audio": 0.3, "visual": 0.6}}
    p, warnings = _profile(probe=probe)
    assert p.optimization_criterion == "multimodal-probe"
    assert p.optimization_dominant == "visual" and p.probe["ranking"] == ["visual", "audio"]
    assert p.early_ranking == ["audio", "visual"]  # still recorded
    assert p.uncertain["probe_ranking"] is False and p.uncertain["criteria_disagree"] is True
    said = [w for w in warnings if "the two m_o criteria disagree" in w]
    assert said == [
        "the two m_o criteria disagree at subset 1: the multimodal probe's branches rank visual first (after 2 "
        "epochs), early unimodal accuracy audio (epoch 2); the probe decided (Alg. 1, line 2), so gamma_r follows "
        "visual: try both with `pdmp tune`, or pass --probe-epochs 0 for the other"
    ]
    assert said[0] in p.notes
    agree, warnings = _profile(probe={**probe, "branch_accuracy": {"audio": 0.6, "visual": 0.3}})
    assert agree.uncertain["criteria_disagree"] is False and not any("criteria" in w for w in warnings)


def test_curves_of_different_length_are_refused():
    with pytest.raises(ValueError):
        _profile(curves={"audio": [0.5, 0.6], "visual": [0.5]}, early_epochs=1)


def test_profile_round_trips_through_json(tmp_path):
    p, _ = _profile(probe={"fusion": "concat", "epochs": 1, "branch_accuracy": {"audio": 0.5, "visual": 0.4}})
    path = p.save(tmp_path / "x" / "p.json")
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 2 and raw["performance_dominant"] == "visual"
    assert Profile.load(path) == p
    assert [f.name for f in path.parent.iterdir()] == ["p.json"]  # no temp file left behind


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"schema_version": 7, "dataset": "x"}', "has schema_version 7, this pdmp reads 1 and 2"),
        ('["a", "list"]', "has schema_version None"),
        ('{"name": "some other tool"}', "has schema_version None"),
    ],
)
def test_corrupt_or_foreign_profiles_are_refused(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(PdmpError, match=message) as e:
        Profile.load(f)
    assert e.value.exit_code == 2


def test_an_inconsistent_profile_is_refused(tmp_path):
    p, _ = _profile()
    raw = p.model_dump(mode="json")
    raw["performance_dominant"] = "depth"
    (tmp_path / "p.json").write_text(json.dumps(raw))
    with pytest.raises(PdmpError, match="performance_dominant 'depth' is not one of the modalities"):
        Profile.load(tmp_path / "p.json")


# --- run(): training, cache, lock ------------------------------------------------------------
def test_analysis_trains_each_modality_and_a_cache_hit_trains_nothing(tiny_manifest, tmp_path):
    spec = _spec(tiny_manifest, tmp_path)
    [first], steps = _run(spec)
    # 60 training clips, batch 16 -> 4 steps per epoch; 2 epochs; 2 modalities
    assert steps == 4 * 2 * 2 and first.cached is False
    assert first.profile.settings["train_samples"] == 54  # 60 minus the 10 % validation split
    assert first.profile.validation["val_size"] == 6 and first.profile.results["audio"].eval_size == 6
    assert len(first.profile.results["audio"].curve) == 2
    assert first.path == tmp_path / "out" / "p.json"
    assert Profile.load(first.path) == first.profile
    saved = json.loads(first.spec_path.read_text())
    assert first.spec_path.name == "p.spec.json" and saved["lr"] == 0.01 and saved["subset"] == [1.0]

    [second], steps = _run(spec)
    assert steps == 0 and second.cached is True and second.cache_key == first.cache_key
    for m in ("audio", "visual"):
        assert second.profile.results[m] == first.profile.results[m]
    assert any("served from the analysis cache" in n for n in second.profile.notes)


def test_early_epochs_rereads_the_cache_and_no_cache_recomputes(tiny_manifest, tmp_path):
    [a], _ = _run(_spec(tiny_manifest, tmp_path, early_epochs=1))
    # early_epochs only says where the cached curves are read: no training
    [b], steps = _run(_spec(tiny_manifest, tmp_path, early_epochs=2))
    assert steps == 0 and b.cached is True
    assert b.profile.results["audio"].early_accuracy == a.profile.results["audio"].curve[1]
    assert b.profile.settings["early_epochs"] == 2
    # --no-cache trains again, and on CPU gives the very same curves
    [c], steps = _run(_spec(tiny_manifest, tmp_path, cache=False))
    assert steps == 16 and c.cached is False
    assert c.profile.results == a.profile.results


def test_a_changed_setting_or_changed_data_misses_the_cache(tiny_manifest, tmp_path):
    _run(_spec(tiny_manifest, tmp_path))
    for change in ({"lr": 0.02}, {"seed": 1}, {"epochs": 1}, {"batch_size": 32}, {"subset": 0.5}, {"encoder": "small"}):
        [o], steps = _run(_spec(tiny_manifest, tmp_path, **change), force=True)  # another setting, same --out
        if change == {"encoder": "small"}:  # the manifest default already: same key
            assert o.cached is True and steps == 0
        else:
            assert o.cached is False and steps > 0, change
    (tmp_path / "d").mkdir()
    other = tmp_path / "d" / "tiny.toml"  # same name, other content
    other.write_text(tiny_manifest.read_text().replace("seed = 0", "seed = 3"))
    [o], steps = _run(_spec(other, tmp_path), force=True)
    assert o.cached is False and steps == 16 and o.profile.dataset == "tiny"


def test_subset_list_writes_one_profile_per_subset(tiny_manifest, tmp_path):
    outcomes, steps = _run(_spec(tiny_manifest, tmp_path, subset="0.5,1.0", default_out=False))
    assert steps == (2 + 4) * 2 * 2  # 30 clips -> 2 steps/epoch, 60 clips -> 4
    assert [o.subset for o in outcomes] == [0.5, 1.0]
    assert [o.profile.settings["train_samples"] for o in outcomes] == [27, 54]  # of the 54 left by validation
    stem = f"tiny-{outcomes[0].profile.dataset_identity[:8]}"  # a manifest of one's own: name + data identity
    assert [str(o.path) for o in outcomes] == [f"profiles/{stem}.subset-0.5.json", f"profiles/{stem}.subset-1.json"]
    assert json.loads(outcomes[0].spec_path.read_text())["subset"] == [0.5]
    rows = analysis.subset_study_rows(outcomes)
    for row, o in zip(rows, outcomes):
        late = {m: o.profile.results[m].late_accuracy for m in ("audio", "visual")}
        assert row["late_accuracy"] == late
        assert row["difference"] == pytest.approx(max(late.values()) - min(late.values()))
        assert row["ranking"] == o.profile.late_ranking
        assert row["uncertain"] == o.profile.uncertain["late_ranking"]


def test_the_probe_trains_a_fused_model_and_is_cached_on_its_own(tiny_manifest, tmp_path):
    _run(_spec(tiny_manifest, tmp_path))
    [o], steps = _run(_spec(tiny_manifest, tmp_path, probe_epochs=1))
    assert steps == 4  # the unimodal curves come from the cache; the probe trains 1 epoch
    assert o.cached is False
    probe = o.profile.probe
    assert probe["fusion"] == "concat" and probe["epochs"] == 1 and len(probe["fused_curve"]) == 1
    assert sorted(probe["ranking"]) == ["audio", "visual"]
    assert probe["branch_accuracy"] == {m: c[-1] for m, c in probe["branch_curves"].items()}
    assert o.profile.optimization_criterion == "multimodal-probe"
    assert o.profile.optimization_dominant == probe["ranking"][0]
    [again], steps = _run(_spec(tiny_manifest, tmp_path, probe_epochs=1))
    assert steps == 0 and again.cached is True and again.profile.probe == probe


def test_plain_analyze_runs_the_probe_for_early_epochs_and_records_both_criteria(tiny_manifest, tmp_path):
    spec = resolve_spec(AnalyzeSpec, dataset_defaults(str(tiny_manifest), AnalyzeSpec),
                        {"dataset": str(tiny_manifest), "device": "cpu", "out": str(tmp_path / "p.json")})  # fmt: skip
    assert spec.probe_epochs == spec.early_epochs  # the default: the probe, as long as the early criterion reads
    [o], _ = _run(spec)
    p = o.profile
    assert p.optimization_criterion == "multimodal-probe" and p.probe["epochs"] == spec.early_epochs
    assert p.early_ranking and p.probe["ranking"]  # both criteria recorded
    assert p.uncertain["criteria_disagree"] == (p.early_ranking[0] != p.probe["ranking"][0])
    off = spec.model_copy(update={"probe_epochs": 0})
    [o], _ = _run(off)
    assert o.profile.probe is None and o.profile.optimization_criterion == "unimodal-early"


def test_two_concurrent_identical_measurements_train_once(tmp_path):
    started, release = threading.Event(), threading.Event()
    calls, results = [], {}

    def slow_measure():
        calls.append("A")
        started.set()
        assert release.wait(10)
        return {"curves": "from A"}

    def other_measure():
        calls.append("B")
        return {"curves": "from B"}

    a = threading.Thread(target=lambda: results.setdefault("A", analysis._cached("k1", slow_measure, True)))
    a.start()
    assert started.wait(10)
    # B finds no entry yet, blocks on A's lock (on_wait lets A finish), then reads A's result
    results["B"] = analysis._cached("k1", other_measure, True, on_wait=release.set)
    a.join(10)
    assert calls == ["A"]
    assert results == {"A": ({"curves": "from A"}, False), "B": ({"curves": "from A"}, True)}


def test_unknown_dataset_and_unwritable_output_fail_before_training(tiny_manifest, tmp_path):
    with pytest.raises(PdmpError, match="unknown dataset 'nope'"):
        analysis.run(AnalyzeSpec(dataset="nope", encoder="small"), progress=False)
    (tmp_path / "adir").mkdir()
    before = analysis.training_steps.value
    with pytest.raises(PdmpError, match="is a directory"):
        analysis.run(_spec(tiny_manifest, tmp_path, out=str(tmp_path / "adir")), progress=False)
    assert analysis.training_steps.value == before
