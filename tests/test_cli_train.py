"""``pdmp train``: spec resolution (with the library call patched), one-line errors, exit codes,
and one tiny real run resumed from the command line."""

import json
import shlex
import shutil
import sys

import pytest
from typer.testing import CliRunner

import pdmp_cli.train
from pdmp_cli.cli.app import app
from conftest import make_profile
from pdmp_cli.rundir import RunSummary
from pdmp_cli.train import RunResult
from pdmp_cli.models.fusions import FUSIONS

runner = CliRunner()

def _profile(path, **kw):
    return str(make_profile(**kw).save(path))


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """Replace the library call; record what the CLI passes and answer with ``status``."""
    calls = []

    def fake(spec, command="", *, resume=False, console=None, quiet=False, on_step=None):
        calls.append({"spec": spec, "command": command, "resume": resume})
        s = RunSummary(
            dataset="x", method=spec.method, fusion=spec.fusion, encoder=spec.encoder, gamma_p=spec.gamma_p,
            gamma={}, seed=spec.seed, profile_sha256="0", status=fake.status, epochs_planned=spec.epochs,
            epochs_done=1, best_accuracy=0.5, best_epoch=1, final_accuracy=0.5, final_macro_f1=0.4,
            selection="validation", selected_epoch=1, selected_accuracy=0.5, val_accuracy=0.6, message=fake.message,
        )
        return RunResult(tmp_path / "run", s, [])

    fake.status, fake.message = "complete", None
    fake.calls = calls
    monkeypatch.setattr(pdmp_cli.train, "run", fake)
    return fake


def _one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_dataset_comes_from_the_profile_with_its_manifest_defaults(fake_run, tmp_path, monkeypatch):
    prof = _profile(tmp_path / "p.json", dataset="synthetic")
    args = ["train", "--profile", prof, "--gamma-p", "15"]
    monkeypatch.setattr(sys, "argv", ["pdmp", *args])  # what the console script sees (recorded as the command)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    (call,) = fake_run.calls
    s = call["spec"]
    assert (s.dataset, s.profile, s.method, s.fusion, s.gamma_p) == ("synthetic", prof, "pdmp", "concat", 15.0)
    # synthetic manifest [defaults] over the paper's settings; momentum and weight decay stay the paper's
    assert (s.encoder, s.epochs, s.batch_size, s.lr, s.momentum, s.weight_decay) == ("small", 20, 64, 0.01, 0.9, 1e-4)
    assert call["resume"] is False and call["command"] == shlex.join(["pdmp", *args])
    assert "done: test accuracy 0.5000 at the best validation epoch 1 (val 0.6000)" in r.output
    assert "best test epoch (the paper's convention) 0.5000 (epoch 1)" in r.output


def test_spec_file_below_flags(fake_run, tmp_path):
    prof = _profile(tmp_path / "p.json", dataset="synthetic")
    spec = tmp_path / "s.toml"
    spec.write_text(f'profile = "{prof}"\nfusion = "film"\nepochs = 5\nmethod = "ogm-ge"\n[method_args.ogm-ge]\nalpha = 0.3\n')
    r = runner.invoke(app, ["train", "--spec", str(spec), "--epochs", "7", "--method", "lr-scale", "--seed", "2"])
    assert r.exit_code == 0, r.output
    s = fake_run.calls[0]["spec"]
    assert (s.fusion, s.epochs, s.method, s.method_args["ogm-ge"]["alpha"], s.seed, s.lr) == ("film", 7, "lr-scale", 0.3, 2, 0.01)


def test_method_hyperparameters_from_spec_table_and_set(fake_run, tmp_path):
    prof = _profile(tmp_path / "p.json", dataset="synthetic")
    spec = tmp_path / "s.toml"
    spec.write_text(f'profile = "{prof}"\nmethod = "ogm-ge"\n[method_args.ogm-ge]\nalpha = 0.3\nend = 9\n')
    r = runner.invoke(app, ["train", "--spec", str(spec), "--set", "ogm-ge.start=2"])
    assert r.exit_code == 0, r.output
    assert fake_run.calls[-1]["spec"].method_args["ogm-ge"] == {"alpha": 0.3, "start": 2, "end": 9}
    r = runner.invoke(app, ["train", "--spec", str(spec), "--ogm-alpha", "0.6"])
    assert r.exit_code == 2 and "No such option: --ogm-alpha" in r.output  # removed: --set ogm-ge.alpha=0.6
    for args, message in [
        (["--set", "ogm-ge.alfa=1"], "error: ogm-ge.alfa is not a known option; remove it or check its spelling"),
        (["--set", "ogm-ge.alpha=-1"], "error: ogm-ge.alpha must be > 0, got -1"),
        (["--set", "ogm-ge.start=20"], "error: ogm-ge: end (9) must be > start (20)"),
        (["--set", "alpha=1"], "error: --set needs METHOD.FIELD=VALUE (e.g. --set agm.alpha=1.5), got 'alpha=1'"),
    ]:
        r = runner.invoke(app, ["train", "--spec", str(spec), *args])
        assert r.exit_code == 2 and r.output.strip() == message, r.output


def test_methods_command_lists_every_method_and_its_defaults():
    from pdmp_cli.methods import METHODS

    r = runner.invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for name in METHODS.names():
        assert f"\n{name}  " in "\n" + r.output
    assert "--set ogm-ge.alpha=VALUE  (default 0.8)" in r.output
    assert "a [method_args.METHOD] table" in r.output  # was eaten as Rich markup
    pdmp = " ".join(r.output.split("\npdmp  ", 1)[1].split("\npmr  ", 1)[0].split())  # its block, unwrapped
    assert "--gamma-p VALUE (default 10, or the dataset preset's) gamma_p of Eq. 10" in pdmp
    assert "no hyperparameters" not in pdmp


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gamma-p", "-1"], "error: gamma_p must be > 0, got -1.0"),
        (["--method", "nope"], "error: method: unknown method; choose one of ['agm', "),
        (["--fusion", "attention"], f"error: fusion: unknown fusion; choose one of {sorted(FUSIONS.names())}, got 'attention'"),
        (["--dataset", "nope"], "error: unknown dataset 'nope'; choose one of:"),
    ],
)
def test_bad_values_one_line_exit_2(fake_run, tmp_path, args, message):
    prof = _profile(tmp_path / "p.json", dataset="synthetic")
    line = _one_error_line(runner.invoke(app, ["train", "--profile", prof, *args]), 2)
    assert line.startswith(message)
    assert fake_run.calls == []


def test_profile_problems_one_line(fake_run, tmp_path):
    line = _one_error_line(runner.invoke(app, ["train", "--epochs", "3"]), 2)
    assert line == "error: --profile is required: make one with `pdmp analyze --dataset NAME` or write it by hand"
    line = _one_error_line(runner.invoke(app, ["train", "--profile", _profile(tmp_path / "p.json")]), 2)
    assert line == "error: the profile's dataset 'tiny' is not a built-in dataset name; pass --dataset with the path to its manifest .toml"
    line = _one_error_line(runner.invoke(app, ["train", "--profile", str(tmp_path / "missing.json")]), 2)
    assert "does not exist" in line


def test_run_statuses_map_to_exit_codes(fake_run, tmp_path):
    prof = _profile(tmp_path / "p.json", dataset="synthetic")
    fake_run.status, fake_run.message = "diverged", "the loss became non-finite at epoch 3, step 7; try a smaller --gamma-p"
    line = _one_error_line(runner.invoke(app, ["train", "--profile", prof]), 1)
    assert line == f"error: {fake_run.message}"
    fake_run.status, fake_run.message = "interrupted", "interrupted at epoch 2, step 5; continue with `pdmp train --resume x`"
    assert _one_error_line(runner.invoke(app, ["train", "--profile", prof]), 130) == f"error: {fake_run.message}"


def test_resume_keeps_the_saved_spec(fake_run, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps({"profile": "p.json", "dataset": "synthetic", "encoder": "small", "lr": 0.05, "epochs": 3}))
    r = runner.invoke(app, ["train", "--resume", str(run_dir), "--epochs", "6", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    call = fake_run.calls[0]
    assert call["resume"] is True
    assert (call["spec"].lr, call["spec"].epochs, call["spec"].device, call["spec"].run_dir) == (0.05, 6, "cpu", str(run_dir))
    line = _one_error_line(runner.invoke(app, ["train", "--resume", str(run_dir), "--lr", "0.1", "--fusion", "sum"]), 2)
    assert line == f"error: --resume continues {run_dir} with its saved spec; --fusion, --lr cannot be changed (start a new run instead)"
    line = _one_error_line(runner.invoke(app, ["train", "--resume", str(tmp_path)]), 2)
    assert line == f"error: {tmp_path} is not a run directory (no spec.json); give the directory `pdmp train` wrote"


def test_real_tiny_run_then_resume_and_mismatch(tiny_manifest, tmp_path):
    prof = _profile(tmp_path / "p.json")
    run_dir = tmp_path / "run"
    base = ["train", "--profile", prof, "--dataset", str(tiny_manifest)]
    r = runner.invoke(app, [*base, "--epochs", "1", "--run-dir", str(run_dir)])
    assert r.exit_code == 0, r.output
    assert "method pdmp: gradient factors audio x0.1, visual x10 (gamma_r = 1/gamma_p because" in r.output
    assert "epoch   1/1  loss" in r.output and f"; {run_dir}" in r.output
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"

    r = runner.invoke(app, ["train", "--resume", str(run_dir), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert "resuming at epoch 2" in r.output and "epoch   2/2  loss" in r.output
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2

    line = _one_error_line(runner.invoke(app, [*base, "--run-dir", str(run_dir)]), 2)
    assert line == f"error: run directory {run_dir} already holds a run; continue it with `pdmp train --resume {run_dir}` or choose another --run-dir"

    other = tmp_path / "other.toml"
    shutil.copy(tiny_manifest, other)
    line = _one_error_line(runner.invoke(app, ["train", "--profile", prof, "--dataset", str(other)]), 2)
    assert line == (
        f"error: profile {prof} is for dataset 'tiny', but the dataset is '{other}'; use a profile of other "
        f"(`pdmp analyze --dataset {other}`) or drop --dataset"
    )
    unknown = _profile(tmp_path / "u.json", optimization_dominant=None)
    line = _one_error_line(runner.invoke(app, ["train", "--profile", unknown, "--dataset", str(tiny_manifest)]), 2)
    assert "leaves optimization_dominant null" in line and "--method vanilla, ogm-ge and lr-scale do not need it" in line
