"""`pdmp analyze`: flags -> spec (run patched), printing, bad input, one real end-to-end run."""

import json
import re
import shlex
import sys

import pytest
from conftest import analysis_outcome as _outcome
from typer.testing import CliRunner

from pdmp_cli import analysis
from pdmp_cli.cli.app import app
from pdmp_cli.profile import Profile

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_run(spec, command="", progress=True, console=None, force=False):
        seen.append(spec)
        return [_outcome(s, {"audio": [0.6, 0.6], "visual": [0.2, 0.8]}) for s in spec.subset]

    monkeypatch.setattr(analysis, "run", fake_run)
    return seen


def test_defaults_come_from_the_dataset_manifest_and_the_paper(calls):
    result = runner.invoke(app, ["analyze", "--dataset", "synthetic"])
    assert result.exit_code == 0, result.output
    [s] = calls
    assert (s.dataset, s.subset, s.encoder, s.epochs, s.early_epochs, s.batch_size, s.lr) == (
        "synthetic", [1.0], "small", 20, 2, 64, 0.01,
    )  # fmt: skip
    # the probe (Alg. 1's m_o criterion) runs by default, as long as the early epochs
    assert (s.momentum, s.weight_decay, s.cache, s.probe_epochs, s.device) == (0.9, 1e-4, True, 2, "auto")


def test_every_flag_reaches_the_spec(calls):
    args = [
        "analyze", "--dataset", "synthetic", "--subset", "0.2,0.4", "--epochs", "3", "--early-epochs", "1",
        "--seed", "5", "--encoder", "resnet18", "--batch-size", "32", "--lr", "0.05", "--probe-epochs", "2",
        "--out", "x.json", "--device", "cpu", "--no-cache",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    [s] = calls
    assert s.subset == [0.2, 0.4] and (s.epochs, s.early_epochs, s.seed) == (3, 1, 5)
    assert (s.encoder, s.batch_size, s.lr, s.probe_epochs) == ("resnet18", 32, 0.05, 2)
    assert (s.out, s.device, s.cache) == ("x.json", "cpu", False)
    args = ["analyze", "--dataset", "synthetic", "--epochs", "auto", "--patience", "3", "--max-epochs", "40",
            "--seeds", "0,1,2", "--val-fraction", "0.2"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    s = calls[-1]
    assert (s.epochs, s.patience, s.max_epochs, s.seeds, s.val_fraction, s.select_on_test) == ("auto", 3, 40, [0, 1, 2], 0.2, False)


def test_a_spec_file_sits_between_the_manifest_and_the_flags(calls, tmp_path):
    (tmp_path / "a.toml").write_text('dataset = "synthetic"\nepochs = 5\nlr = 0.1\n')
    result = runner.invoke(app, ["analyze", "--spec", "a.toml", "--epochs", "7"])
    assert result.exit_code == 0, result.output
    [s] = calls
    assert (s.dataset, s.epochs, s.lr, s.encoder) == ("synthetic", 7, 0.1, "small")


def test_list_mode_prints_the_subset_table_and_warns_when_uncertain(monkeypatch):
    outs = [
        _outcome(0.2, {"audio": [0.6, 0.55], "visual": [0.2, 0.53]}),  # 0.02 apart: uncertain
        _outcome(1.0, {"audio": [0.6, 0.55], "visual": [0.2, 0.80]}, cached=True),
    ]
    monkeypatch.setattr(analysis, "run", lambda spec, **kw: outs)
    import pdmp_cli.cli._app as _app

    monkeypatch.setattr(_app.console, "width", 200)
    result = runner.invoke(app, ["analyze", "--dataset", "synthetic", "--subset", "0.2,1.0"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Subset-scale study" in out
    assert "│    20% │ 0.550 │  0.530 │      0.020 │ audio > visual │ yes       │ -            │ NO               │" in out
    assert "│   100% │ 0.550 │  0.800 │      0.250 │ visual > audio │ no        │ -            │ yes              │" in out
    assert "┃ still rising ┃ agrees with 100% ┃" in out
    assert "warning: the performance (late) ranking is uncertain at subset 0.2" in out
    assert "use a larger --subset or more --epochs" in out
    assert "subset 1: performance-dominant visual, optimization-dominant audio (unimodal-early); served from the analysis cache" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope"], "error: unknown dataset 'nope'; choose one of: "),
        (["--dataset", "synthetic", "--subset", "0"], "error: subset: each subset must be in (0, 1], got 0.0"),
        (["--dataset", "synthetic", "--subset", "1.5"], "error: subset: each subset must be in (0, 1], got 1.5"),
        (["--dataset", "synthetic", "--subset", "0.2,abc"], "error: subset: must be a fraction or a comma-separated"),
        (["--dataset", "synthetic", "--early-epochs", "30"], "error: early_epochs (30) must be <= epochs (20)"),
        (["--dataset", "synthetic", "--device", "tpu"], "error: device must be one of 'auto', 'cpu' or 'cuda'"),
        (["--dataset", "synthetic", "--encoder", "vgg"], "error: encoder: unknown encoder; choose one of"),
        (["--dataset", "synthetic", "--spec", "missing.toml"], "error: spec file missing.toml does not exist"),
        ([], "error: no dataset given; pass --dataset NAME"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(calls, tmp_path, args, message):
    result = runner.invoke(app, ["analyze", *args])
    assert result.exit_code == 2
    assert result.output.startswith(message), result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert calls == [] and not (tmp_path / "profiles").exists()


def test_an_output_path_that_is_a_directory_fails_before_training(tiny_manifest, tmp_path):
    (tmp_path / "adir").mkdir()
    before = analysis.training_steps.value
    result = runner.invoke(app, ["analyze", "--dataset", str(tiny_manifest), "--out", "adir"])
    assert result.exit_code == 2 and result.output.startswith("error: --out adir is a directory")
    assert analysis.training_steps.value == before


def test_end_to_end_list_mode_then_served_from_cache(tiny_manifest, tmp_path, monkeypatch):
    args = ["analyze", "--dataset", str(tiny_manifest), "--subset", "0.5,1.0", "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", ["pdmp", *args])  # what the console script sees (recorded as the command)
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    [stem] = {p.name.split(".")[0] for p in (tmp_path / "profiles").iterdir()}  # a manifest of one's own:
    assert re.fullmatch(r"tiny-[0-9a-f]{8}", stem)  # named by dataset name + data identity (issue 27)
    for s in ("0.5", "1"):
        p = Profile.load(tmp_path / "profiles" / f"{stem}.subset-{s}.json")
        assert p.subset == float(s) and p.provenance.command == shlex.join(["pdmp", *args])
        assert stem == f"tiny-{p.dataset_identity[:8]}"
        spec = json.loads((tmp_path / "profiles" / f"{stem}.subset-{s}.spec.json").read_text())
        assert spec["subset"] == [float(s)] and spec["out"] == f"profiles/{stem}.subset-{s}.json"
    assert "Subset-scale study" in first.output and "│    50% │" in first.output
    assert first.output.count("; measured") == 2

    before = analysis.training_steps.value
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and analysis.training_steps.value == before
    assert second.output.count("served from the analysis cache, no training") == 2


@pytest.mark.slow
def test_synthetic_preset_default_analysis_finds_visual_performance_and_audio_optimization_dominant(tmp_path):
    """The measured check of the issue: full defaults of the built-in CREMA-D-like preset."""
    result = runner.invoke(app, ["analyze", "--dataset", "synthetic", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    p = Profile.load(tmp_path / "profiles" / "synthetic.json")
    assert (p.performance_dominant, p.optimization_dominant) == ("visual", "audio")
    assert p.late_ranking == ["visual", "audio"] and p.early_ranking == ["audio", "visual"]
    assert p.uncertain == {"early_ranking": False, "late_ranking": False, "late_trend": False,
                           "probe_ranking": False, "criteria_disagree": False}  # the probe runs by default
    assert len(p.results["visual"].curve) == 20 and p.results["visual"].eval_size == 120  # 10 % of 1200 train
    assert "performance-dominant visual, optimization-dominant audio" in result.output

    before = analysis.training_steps.value
    again = runner.invoke(app, ["analyze", "--dataset", "synthetic", "--device", "cpu"])
    assert again.exit_code == 0 and analysis.training_steps.value == before
    assert "served from the analysis cache, no training" in again.output
    assert Profile.load(tmp_path / "profiles" / "synthetic.json").results == p.results
