"""Issue 14: nothing silent, nothing lost. Each test reproduces one defect found by trying the
tool with bad input (its item number in the name) and checks the fix: a blown-up model is never
"complete", unwritable places give one line, SIGTERM is a Ctrl-C, ``--skip-bad`` works end to
end, one atomic write with the usual permissions, unique plot names, and the small ones.

"Unwritable" is a read-only folder for an ordinary user; as root (who writes anywhere) it is a
regular file standing where the folder should be. Both are an ``OSError`` on writing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_SYNTHETIC, make_profile
from typer.testing import CliRunner

from pdmp_cli.cli.app import app
from pdmp_cli.errors import PdmpError
from pdmp_cli.fsutil import write_json
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import run
from pdmp_cli.train.setup import resume_spec

runner = CliRunner()
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _profile(path: Path, **kw) -> Path:
    return make_profile(**kw).save(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDMP_CACHE_DIR", str(root / "cache"))
        manifest = root / "tiny.toml"
        manifest.write_text(TINY_SYNTHETIC)
        profile = _profile(root / "tiny-profile.json")

        def spec(**kw) -> TrainSpec:
            base = dict(profile=str(profile), dataset=str(manifest), encoder="small", epochs=1, batch_size=16, lr=0.01)
            return TrainSpec(**{**base, **kw})

        e = SimpleNamespace(root=root, manifest=manifest, profile=profile, spec=spec)
        e.good = run(spec(run_dir=str(root / "good")), quiet=True)
        yield e


def _blocked(path: Path) -> Path:
    """``path`` made into a place where nothing can be created (see the module docstring)."""
    if ROOT:
        path.write_text("a file where a folder should be")
    else:
        path.mkdir()
        path.chmod(0o555)
    return path


def _one_error_line(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# -- 1. a blown-up model is never "complete", no checkpoint of it is kept --------------------------


def test_1_finite_loss_but_inf_batchnorm_statistics_is_diverged_not_complete(env):
    def overflow(info):  # what γp 1e9 does: the visual encoder's BatchNorm running variance overflows
        if (info.epoch, info.step) == (1, 0):  # training normalises with batch statistics: the loss stays finite
            bn = next(m for n, m in info.model.named_modules() if n.startswith("encoders.visual") and isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))

    r = run(env.spec(epochs=2, run_dir=str(env.root / "bn-inf")), on_step=overflow, quiet=True)
    assert r.status == "diverged" and r.summary.epochs_done == 1
    last = r.run_dir / "checkpoints" / "last.pt"
    assert r.summary.message.startswith("the model blew up in epoch 2: the weights or buffers hold inf/nan (encoders.visual.")
    assert "running_var" in r.summary.message
    assert r.summary.message.endswith(
        "try a new run with a smaller --gamma-p than 10, a smaller --lr than 0.01 or --grad-clip 1.0; "
        f"the last good checkpoint ({last}, 1 epochs done) is kept"
    )
    for name in ("last.pt", "best.pt"):  # no checkpoint holds the blown-up state
        ckpt = torch.load(r.run_dir / "checkpoints" / name, weights_only=True)
        assert ckpt["epoch"] == 1 and _finite(ckpt["model"])

    # gradients: the per-step encoder norms the loop already sums (EpochStats.norm_steps counts the
    # steps whose norms were all finite); under fp16 a non-finite one is a skipped step, not a blow-up
    from pdmp_cli.train import health

    model = torch.nn.Linear(2, 2)
    stats = SimpleNamespace(steps=4, norm_steps=torch.tensor(3.0))
    assert health.blown_up(model, stats, "fp32") == "the encoder gradients were inf/nan in 1 of 4 steps"
    assert health.blown_up(model, stats, "fp16") is None
    with torch.no_grad():
        model.bias[1] = float("nan")
    assert health.blown_up(model, stats, "fp16") == "the weights or buffers hold inf/nan (bias)"


# -- 6. unwritable places: one line, nothing left at "running" -------------------------------------


@pytest.fixture
def undo_chmod(tmp_path):
    yield
    for p in tmp_path.rglob("*"):  # let pytest clean up
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


def test_6_unwritable_places_give_one_line(env, tmp_path, monkeypatch, undo_chmod):
    train = ["train", "--profile", str(env.profile), "--dataset", str(env.manifest), "--epochs", "1", "-q"]
    blocked = _blocked(tmp_path / "ro")
    line = _one_error_line(runner.invoke(app, [*train, "--run-dir", str(blocked / "run")]))
    assert line.startswith(f"error: cannot write {blocked / 'run' / 'checkpoints'}: ") and line.endswith("choose another --run-dir")

    cwd = tmp_path / "cwd"  # the default runs/ in a working directory where it cannot be made
    cwd.mkdir()
    if ROOT:
        (cwd / "runs").write_text("not a folder")
    else:
        cwd.chmod(0o555)
    monkeypatch.chdir(cwd)
    line = _one_error_line(runner.invoke(app, train))
    assert line.startswith("error: cannot write runs/") and "pdmp train --run-dir DIR" in line

    sweep = ["sweep", "--profile", str(env.profile), "--dataset", str(env.manifest), "--epochs", "1", "--method", "vanilla"]
    line = _one_error_line(runner.invoke(app, [*sweep, "--runs-dir", str(blocked / "runs"), "-q"]))
    assert line.startswith(f"error: cannot write {blocked / 'runs'}/")

    r = runner.invoke(app, ["report", str(env.good.run_dir), "--format", "csv", "--plot", str(blocked / "plots")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith(f"error: cannot write {blocked / 'plots'}")

    monkeypatch.setenv("PDMP_CACHE_DIR", str(blocked / "cache"))
    line = _one_error_line(runner.invoke(app, ["analyze", "--dataset", str(env.manifest), "--out", str(tmp_path / "p.json")]))
    assert line.startswith(f"error: cannot write {blocked / 'cache'}") and line.endswith("set PDMP_CACHE_DIR to a writable folder")


def test_6_run_directory_unwritable_mid_run_leaves_no_running_summary(env, tmp_path, undo_chmod):
    d = tmp_path / "run"

    def break_it(info):  # epoch 2: the run directory (as root: its checkpoints folder) stops taking writes
        if (info.epoch, info.step) == (1, 0):
            if ROOT:
                shutil.rmtree(d / "checkpoints")
                (d / "checkpoints").write_text("no longer a folder")
            else:
                d.chmod(0o555)

    with pytest.raises(PdmpError, match=r"^the run stopped: cannot write ") as e:
        run(env.spec(epochs=2, run_dir=str(d)), on_step=break_it, quiet=True)
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["message"] == str(e.value)
    assert s["epochs_done"] == 2  # epoch 2 was measured; last.pt (epoch 1, or 2 where it could be written) resumes


# -- 7. SIGTERM is a Ctrl-C -------------------------------------------------------------------------


def test_7_sigterm_saves_a_resumable_checkpoint_and_exits_143(env, monkeypatch):
    def unhandled(signum, frame):  # without the fix SIGTERM would end the test process: fail instead
        raise AssertionError("SIGTERM reached the default handler")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        def term(info):
            if (info.epoch, info.step) == (0, 1):
                signal.raise_signal(signal.SIGTERM)

        cut = run(env.spec(epochs=1, run_dir=str(env.root / "term")), on_step=term, quiet=True)
        assert cut.status == "interrupted" and cut.summary.message.startswith("interrupted at epoch 1, step 2;")
        assert json.loads((cut.run_dir / "summary.json").read_text())["status"] == "interrupted"
        assert signal.getsignal(signal.SIGTERM) is unhandled  # handler restored
        done = run(resume_spec(cut.run_dir), resume=True, quiet=True)
        assert done.status == "complete" and [m.test_accuracy for m in done.metrics] == [
            m.test_accuracy for m in env.good.metrics
        ]

        # the command line: a run stopped by SIGTERM exits 143 (128 + 15), by Ctrl-C 130
        import pdmp_cli.train

        def stopped_run(spec, command="", **kw):
            signal.raise_signal(signal.SIGTERM)  # outside a training loop: unwinds like Ctrl-C
            raise AssertionError("not reached")

        monkeypatch.setattr(pdmp_cli.train, "run", stopped_run)
        r = runner.invoke(app, ["train", "--profile", str(env.profile), "--dataset", str(env.manifest)])
        assert _one_error_line(r, 143) == "error: interrupted"
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, before)


# -- 8. --skip-bad with a measured profile ---------------------------------------------------------


def test_8_skip_bad_works_end_to_end_with_a_measured_profile(tmp_path, monkeypatch):
    from data import miniature as M

    monkeypatch.chdir(tmp_path)
    data = M.make_custom(tmp_path / "my-data")
    (data / "manifest.toml").write_text(
        'loader = "files"\n[splits.train]\nlist = "train.csv"\n[splits.test]\nlist = "test.csv"\n'
        '[modalities.audio]\nkind = "audio"\npath = "audio/{id}.wav"\n'
        '[modalities.visual]\nkind = "image"\npath = "visual/{id}.png"\npreprocessing = { size = 32 }\n'
    )
    (data / "audio" / "clip01.wav").write_text("not audio")
    manifest = "my-data/manifest.toml"
    analyze = ["analyze", "--dataset", manifest, "--epochs", "1", "--early-epochs", "1", "--batch-size", "2", "--out", "p.json",
               "--select-on-test", "--encoder", "small"]  # the CPU-sized encoder: the skip is what is checked  # 3 good training samples: too few to carve a validation split
    line = _one_error_line(runner.invoke(app, analyze))
    assert f"`pdmp datasets check {manifest}` lists all" in line and "pass --skip-bad" in line
    r = runner.invoke(app, ["datasets", "check", manifest])  # the suggested command works
    assert r.exit_code == 1 and "unreadable file [train] my-data/audio/clip01.wav" in r.output

    r = runner.invoke(app, [*analyze, "--skip-bad"])
    assert r.exit_code == 0, r.output
    train = ["train", "--profile", "p.json", "--dataset", manifest, "--epochs", "1", "--batch-size", "3",
             "--select-on-test", "--run-dir", "run", "-q", "--encoder", "small"]
    assert "pass --skip-bad" in _one_error_line(runner.invoke(app, train), 1)
    r = runner.invoke(app, [*train, "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert json.loads(Path("run/summary.json").read_text())["status"] == "complete"


# -- 9. one atomic write, the usual permissions -----------------------------------------------------


def test_9_written_files_get_the_usual_permissions(env, tmp_path):
    old = os.umask(0o022)
    try:
        r = run(env.spec(method="vanilla", run_dir=str(tmp_path / "run")), quiet=True)
        prof = _profile(tmp_path / "p.json")
        res = runner.invoke(app, ["report", str(r.run_dir), "--format", "csv", "--plot", str(tmp_path / "plots")])
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    files = [r.run_dir / n for n in ("spec.json", "summary.json", "profile.json", "metrics.jsonl")]
    files += [r.run_dir / "checkpoints" / n for n in ("last.pt", "best.pt")] + [prof]
    files += list((tmp_path / "plots").glob("*.png"))
    assert len(files) == 8
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o644" for f in files}
    assert not list(r.run_dir.rglob("*.tmp"))  # no temp file left behind


# -- 10. per-run plot names are unique --------------------------------------------------------------


def test_10_plot_names_of_runs_never_collide(env, tmp_path):
    from pdmp_cli import report
    from pdmp_cli.plots import write_plots

    dirs = [tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "c" / "rün", tmp_path / "c" / "rón"]
    for d in dirs:
        shutil.copytree(env.good.run_dir, d)
    written = write_plots(report.build([str(tmp_path)]), tmp_path / "plots")
    runs = [p for p in written if p.name.startswith("run-")]
    assert len(runs) == 4 and len({p.name for p in runs}) == 4
    assert len(list((tmp_path / "plots").glob("run-*.png"))) == 4
    assert write_plots(report.build([str(dirs[0])]), tmp_path / "plots") == [tmp_path / "plots" / "run-run.png"]


# -- 11. the small ones -----------------------------------------------------------------------------


def test_11_gamma_p_must_be_finite_both_ways_and_json_has_no_infinity(env, tmp_path):
    prof = str(env.profile)
    for value, expected in (
        ("1e-320", "gamma_p: must be a finite number from 2.94e-39 to 3.4e+38 (gamma_p and 1/gamma_p scale float32 "
                   "gradients), got 1e-320"),
        ("inf", "gamma_p must be a finite number, got inf"),
    ):
        line = _one_error_line(runner.invoke(app, ["train", "--profile", prof, "--dataset", str(env.manifest),
                                                   "--gamma-p", value, "--run-dir", str(tmp_path / "r")]), 2)
        assert line == f"error: {expected}"
    assert not (tmp_path / "r").exists()

    write_json(tmp_path / "x.json", {"gamma": {"audio": float("inf"), "visual": float("nan")}, "ok": 1.5})
    text = (tmp_path / "x.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}")) == {
        "gamma": {"audio": None, "visual": None}, "ok": 1.5
    }


def test_11_resume_after_last_checkpoint_was_deleted_says_so(env, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(env.good.run_dir, d)
    (d / "checkpoints" / "last.pt").unlink()
    with pytest.raises(PdmpError) as e:
        run(resume_spec(d, {"epochs": 2}), resume=True, quiet=True)
    assert str(e.value) == (
        f"cannot resume {d}: {d / 'checkpoints' / 'last.pt'} is missing, though summary.json records 1 finished "
        "epochs (was it deleted or moved?); put it back, or start a new run"
    )


def test_11_empty_train_list_is_one_problem_not_one_per_test_sample(tmp_path):
    from data import miniature as M

    from pdmp_cli.data.check import check_dataset

    data = M.make_custom(tmp_path / "d")
    (data / "manifest.toml").write_text(
        'loader = "files"\n[splits.train]\nlist = "train.csv"\n[splits.test]\nlist = "test.csv"\n'
        '[modalities.audio]\nkind = "audio"\npath = "audio/{id}.wav"\n'
        '[modalities.visual]\nkind = "image"\npath = "visual/{id}.png"\n'
    )
    (data / "train.csv").write_text("id,label\n")
    report = check_dataset(data / "manifest.toml", deep=False)
    assert [p.describe() for p in report.problems] == [f"empty split [train] {data / 'train.csv'}: no usable train samples"]


def test_11_report_exit_codes_follow_one_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # nothing to report: 1, whether runs/ is empty or not there yet
    assert _one_error_line(runner.invoke(app, ["report"]), 1).startswith("error: no runs found")
    (tmp_path / "runs").mkdir()
    assert _one_error_line(runner.invoke(app, ["report"]), 1).startswith("error: no runs found")
    assert _one_error_line(runner.invoke(app, ["report", "runs"]), 1).startswith("error: no runs found")
    # a wrong argument: 2
    assert _one_error_line(runner.invoke(app, ["report", "nowhere"]), 2).startswith("error: nowhere does not exist")
