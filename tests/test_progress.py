"""Logs a batch system can read: one plain line per epoch with an ETA when stdout is not a terminal."""

import io
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from pdmp_cli.progress import EpochBars, Rate, cpu_estimate_line, duration
from conftest import make_profile as _profile


def test_duration_and_rate():
    assert [duration(s) for s in (0.4, 37, 252, 3900)] == ["0s", "37s", "4m12s", "1h05m"]
    r = Rate(total=10, done=4)
    assert r.eta() == "" and r.left is None  # nothing timed yet
    r.t0 -= 6.0  # 6 s for 2 epochs -> 3 s each, 4 left
    r.update(6)
    assert r.per_unit == pytest.approx(3.0, rel=0.05) and r.left == pytest.approx(12.0, rel=0.05)
    assert r.eta() == "ETA 12s"
    r.update(10)
    assert r.eta() == ""  # done


def test_epoch_bars_print_one_line_per_epoch_without_a_terminal():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with EpochBars(True, console) as bars:
        advance = bars.task("subset 0.4 · audio", 3)
        for acc in (0.31, 0.42, 0.5):
            advance(acc)
    lines = buf.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [f"subset 0.4 · audio: epoch {k}/3" for k in (1, 2, 3)]
    assert "acc 0.420" in lines[1] and "ETA" in lines[1] and "ETA" not in lines[2]
    assert EpochBars(False, console).task("x", 3) is None


def test_epoch_bars_keep_live_bars_on_a_terminal():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    with EpochBars(True, console) as bars:
        advance = bars.task("visual", 2)
        advance(0.5)
        advance(0.6)
    assert "epoch 1/2" not in buf.getvalue()  # a bar, not lines
    assert "visual" in buf.getvalue()


def test_cpu_estimate_line():
    import torch

    line = cpu_estimate_line(12.0, 99, torch.device("cpu"))
    assert line.startswith("estimated duration on the CPU: 19m48s more for the 99 epochs left")
    assert cpu_estimate_line(12.0, 99, torch.device("cuda")) is None
    assert cpu_estimate_line(12.0, 0, torch.device("cpu")) is None


def _assert_one_line_per_epoch(stdout: str) -> None:
    lines = stdout.splitlines()
    epochs = [line for line in lines if re.match(r"epoch +\d+/2 ", line)]
    assert [int(re.match(r"epoch +(\d+)/2", e).group(1)) for e in epochs] == [1, 2]
    assert re.search(r"ETA \d+s$", epochs[0]) and "ETA" not in epochs[1]
    estimates = [line for line in lines if line.startswith("estimated duration on the CPU")]
    assert len(estimates) == 1 and "for the 1 epoch left" in estimates[0]
    assert lines.index(estimates[0]) == lines.index(epochs[0]) + 1  # right after the first epoch
    assert "\x1b[" not in stdout and "\r" not in stdout  # no bars, no escape codes


def test_train_without_a_terminal_prints_one_line_per_epoch(tiny_manifest, tmp_path, monkeypatch):
    """The pipe test below, in this process: typer's runner gives stdout a buffer, not a terminal."""
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    monkeypatch.delenv("FORCE_COLOR", raising=False), monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    profile = _profile().save(tmp_path / "p.json")
    r = CliRunner().invoke(app, ["train", "--profile", str(profile), "--dataset", str(tiny_manifest), "--epochs", "2",
                                 "--encoder", "small", "--device", "cpu", "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert r.exit_code == 0, r.output
    _assert_one_line_per_epoch(r.stdout)


@pytest.mark.slow  # a fresh interpreter with a real pipe; the same lines are checked in-process above
def test_train_through_a_pipe_prints_one_line_per_epoch(tiny_manifest, tmp_path):
    profile = _profile().save(tmp_path / "p.json")
    cmd = [sys.executable, "-m", "pdmp_cli", "train", "--profile", str(profile), "--dataset", str(tiny_manifest),
           "--epochs", "2", "--encoder", "small", "--device", "cpu", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FORCE_COLOR", None), env.pop("TTY_COMPATIBLE", None)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)  # stdout is a pipe
    assert r.returncode == 0, r.stderr
    _assert_one_line_per_epoch(r.stdout)
