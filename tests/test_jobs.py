"""--threads (fixed per run, before any work, recorded) and --jobs (independent runs side by side,
each in its own process; the same numbers as one after the other; Ctrl-C stops them all)."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import pytest
import torch
from conftest import make_profile
from rich.console import Console

from pdmp_cli import pool, sweep
from pdmp_cli.specs import TrainSpec

_REAL_FREE_CORES = pool.free_cores  # before conftest's fixture pins it


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def profile(tmp_path) -> str:
    return str(make_profile().save(tmp_path / "profile.json"))


def _comparable(run_dir) -> list[dict]:
    from pdmp_cli import rundir

    return [m.model_dump(exclude={"epoch_seconds"}) for m in rundir.read_metrics(run_dir)[0]]


def test_threads_are_fixed_before_any_work_recorded_and_on_the_start_line(tiny_manifest, profile, tmp_path, one_thread, monkeypatch):
    from pdmp_cli.train import run

    torch.set_num_threads(2)  # whatever the process had (OMP_NUM_THREADS, torch's default): the run decides
    seen = set()
    out = io.StringIO()
    spec = TrainSpec(profile=profile, dataset=str(tiny_manifest), encoder="small", epochs=1, run_dir=str(tmp_path / "a"))
    r = run(spec, console=Console(file=out, width=300), on_step=lambda info: seen.add(torch.get_num_threads()))
    assert seen == {1}  # the small encoder's default
    assert json.loads((r.run_dir / "spec.json").read_text())["threads"] == 1
    assert "concat fusion; device cpu, 1 thread\n" in out.getvalue()

    class BeforeAnyWork(Exception):
        pass

    def seeded(seed):  # two threads on a busy 2-core machine are slow: the count at the seeding tells
        seen.add(torch.get_num_threads())
        raise BeforeAnyWork

    seen.clear()
    monkeypatch.setattr("pdmp_cli.train.setup.seed_everything", seeded)
    with pytest.raises(BeforeAnyWork):
        run(spec.model_copy(update={"threads": 2, "run_dir": str(tmp_path / "b")}), quiet=True)
    assert seen == {2}


def test_default_threads_and_jobs(monkeypatch):
    from pdmp_cli.runtime import default_threads

    assert default_threads("small") == 1
    monkeypatch.setattr(pool, "free_cores", _REAL_FREE_CORES)  # conftest pins it to 1
    monkeypatch.setattr(pool, "usable_cores", lambda: 8)
    monkeypatch.setattr(pool, "busy_cores", lambda: 2.6)
    assert pool.free_cores() == 5  # 8 cores - round(2.6) busy
    assert pool.default_jobs("cpu", 1) == 5 and pool.default_jobs("cpu", 2) == 2 and pool.default_jobs("cpu", 8) == 1
    assert pool.default_jobs("cuda", 1, gpus=4) == 4
    monkeypatch.setattr(pool, "busy_cores", lambda: 9.0)
    assert pool.default_jobs("cpu", 1) == 1  # a saturated machine: one run at a time


def test_busy_cores_are_measured_now_and_the_load_average_is_only_a_fallback(monkeypatch, tmp_path):
    """The non-idle share of all cores' time between two reads of /proc/stat, times the cores: a job
    that ended a minute ago (still in the load average) does not count; without /proc/stat the load
    average does."""
    stat = tmp_path / "stat"
    #                  user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  1000 0 500 8000 500 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    later = "cpu  1300 0 600 8500 600 0 0 0 0 0\n"  # +1000 in all: 400 busy, 600 idle or waiting
    monkeypatch.setattr(pool, "PROC_STAT", str(stat))
    monkeypatch.setattr(pool.time, "sleep", lambda s: stat.write_text(later))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # a finished job still in the average
    assert pool.busy_cores() == pytest.approx(0.4 * 4)
    monkeypatch.setattr(pool, "free_cores", _REAL_FREE_CORES)  # conftest pins it to 1
    monkeypatch.setattr(pool, "usable_cores", lambda: 4)
    stat.write_text("cpu  1000 0 500 8000 500 0 0 0 0 0\n")
    assert pool.free_cores() == 2  # 4 - round(1.6); the load average would have said 4 - 3 = 1
    monkeypatch.setattr(pool, "PROC_STAT", str(tmp_path / "absent"))
    assert pool.busy_cores() is None and pool.free_cores() == 1  # no /proc/stat: 4 - round(3.0)


def test_threads_flag_is_refused_below_one(profile):
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.specs import resolve_spec

    with pytest.raises(PdmpError, match="threads must be >= 1, got 0"):
        resolve_spec(TrainSpec, {"profile": profile, "threads": 0})


def test_sweep_with_two_jobs_gives_the_numbers_of_one_job(tiny_manifest, profile, tmp_path, monkeypatch, one_thread):
    # fork spares each worker re-importing torch (seconds on a 2-core machine); safe here: one
    # intra-op thread and no CUDA. The library's default is spawn (test_parallel_analysis.py).
    monkeypatch.setattr(pool, "START_METHOD", "fork")
    torch.set_num_threads(1)
    grid = dict(gamma_p=[2.0], methods=["vanilla", "pdmp", "ogm-ge"])

    def base(root):
        return sweep.base_spec(profile, dataset=str(tiny_manifest), flags={"runs_root": str(tmp_path / root), "epochs": 2})

    one = sweep.run(base("one"), jobs=1, quiet=True, **grid)
    out = io.StringIO()
    two = sweep.run(base("two"), jobs=2, console=Console(file=out, width=400), **grid)
    assert [o.spec.method for o in two.outcomes] == [o.spec.method for o in one.outcomes] == ["vanilla", "pdmp", "ogm-ge"]
    assert [o.action for o in two.outcomes] == ["trained"] * 3
    for a, b in zip(one.outcomes, two.outcomes):
        assert _comparable(b.run_dir) == _comparable(a.run_dir)  # bit for bit: losses, accuracies, w, gamma
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("[")]
    assert len(lines) == 3 and all(": trained, complete; test accuracy " in ln for ln in lines)  # one line per run
    assert "3 runs, 2 at a time, each in its own process" in out.getvalue()
    def table(rep):
        return [{k: v for k, v in r.stats.items() if k != "wall_seconds"} for r in rep.rows]

    assert table(two.report) == table(one.report)


def _wait_for_stop(report):
    """A job that runs until it is asked to stop, as a training run does after Ctrl-C."""
    from pdmp_cli.signals import GracefulInterrupt

    with GracefulInterrupt() as stop:
        report("ready")
        deadline = time.monotonic() + 30
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.02)
    return "stopped cleanly" if stop.requested else "never stopped"


def test_ctrl_c_reaches_every_running_job_once_and_starts_no_more(monkeypatch):
    monkeypatch.setattr(pool, "START_METHOD", "fork")
    ready = []

    def message(key, msg):
        ready.append(key)
        if len(ready) == 2:  # both running: Ctrl-C at the terminal reaches the parent alone
            os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    tasks = [pool.Task(k, _wait_for_stop) for k in ("a", "b", "c")]
    out = pool.run_tasks(tasks, 2, on_message=message)
    assert out.results == {"a": "stopped cleanly", "b": "stopped cleanly"}  # one signal each: a graceful stop
    assert out.not_started == ["c"] and out.stopped_by == signal.SIGINT and not out.errors
    assert signal.getsignal(signal.SIGINT) is handler  # restored


def _fail(report):
    from pdmp_cli.errors import PdmpError

    raise PdmpError("no such thing; fix it")


def test_a_failing_job_is_one_line(monkeypatch):
    monkeypatch.setattr(pool, "START_METHOD", "fork")
    out = pool.run_tasks([pool.Task("x", _fail)], 1)
    assert out.errors == {"x": "no such thing; fix it"} and out.results == {}


@pytest.mark.slow
def test_ctrl_c_during_a_parallel_sweep_keeps_each_run_resumable(tiny_manifest, profile, tmp_path, monkeypatch, one_thread):
    import pdmp_cli.train

    monkeypatch.setattr(pool, "START_METHOD", "fork")  # the children inherit the patches below
    torch.set_num_threads(1)
    real_train = pdmp_cli.train.run

    def slow_train(spec, *a, on_step=None, **kw):  # 50 ms a step: the signal lands mid-run
        def step(info):
            time.sleep(0.05)
            if on_step:
                on_step(info)

        return real_train(spec, *a, on_step=step, **kw)

    monkeypatch.setattr(pdmp_cli.train, "run", slow_train)
    real_pool = pool.run_tasks

    def ctrl_c_once_both_report(tasks, jobs, *, on_message=None, **kw):
        seen = set()

        def message(key, m):
            seen.add(key)
            if len(seen) == 2 and not getattr(message, "sent", False):
                message.sent = True
                os.kill(os.getpid(), signal.SIGINT)  # as the terminal's Ctrl-C reaches the parent
            on_message(key, m)

        return real_pool(tasks, jobs, on_message=message, **kw)

    grid = dict(gamma_p=[2.0], methods=["vanilla", "pdmp"])

    def base(root):
        return sweep.base_spec(profile, dataset=str(tiny_manifest), flags={"runs_root": str(tmp_path / root), "epochs": 4})

    monkeypatch.setattr(pool, "run_tasks", ctrl_c_once_both_report)
    cut = sweep.run(base("cut"), jobs=2, quiet=True, **grid)
    assert cut.stopped and [o.status for o in cut.outcomes] == ["interrupted", "interrupted"]
    assert all((o.run_dir / "checkpoints" / "last.pt").is_file() for o in cut.outcomes)
    monkeypatch.setattr(pool, "run_tasks", real_pool)
    done = sweep.run(base("cut"), jobs=2, quiet=True, **grid)
    assert [o.action for o in done.outcomes] == ["resumed", "resumed"] and not done.stopped
    whole = sweep.run(base("whole"), jobs=1, quiet=True, **grid)
    for a, b in zip(whole.outcomes, done.outcomes):
        assert _comparable(b.run_dir) == _comparable(a.run_dir)  # Ctrl-C + resume = uninterrupted


@pytest.mark.parametrize("args, line", [
    (["demo", "--jobs", "0"], "error: --jobs must be >= 1, got 0"),
    (["demo", "--threads", "0"], "error: --threads must be >= 1, got 0"),
    (["sweep", "--profile", "cremad.paper", "--jobs", "0"], "error: --jobs must be >= 1, got 0"),
    (["analyze", "--dataset", "synthetic", "--jobs", "0"], "error: jobs must be >= 1, got 0"),
    (["train", "--profile", "cremad.paper", "--threads", "0"], "error: threads must be >= 1, got 0"),
])  # fmt: skip
def test_bad_jobs_and_threads_are_one_line(args, line):
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and r.output.strip() == line, r.output
