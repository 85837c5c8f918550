"""DDP on CPU: two gloo processes against one process with the same global batch.

One module fixture spawns two ranks once; each runs several tiny trainings and records what it
saw (per-step gradients, OGM-GE coefficients, every file write), and the main process trains
the single-process counterparts. Tolerances:

* ``flat-test`` encoder (no BatchNorm): DDP must equal the single process up to float
  summation order (DDP averages two half-batch mean gradients; one process takes one mean):
  rel 1e-4 on losses and gradient norms, identical accuracies, weights within 1e-4.
* ``small`` encoder (BatchNorm): BN normalises each rank's 8 samples, not the global 16, so the
  forward pass itself differs (per-rank BN statistics are DDP's default; SyncBatchNorm needs
  CUDA). Stated tolerance: train loss within 10 % per epoch (measured: 0.3 % after epoch 1,
  4.5 % after epoch 2 on this data), PDMP factors exact, accuracy within 0.15.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FLAT, TINY_SYNTHETIC, ddp_job, make_profile, register_flat_encoder
from typer.testing import CliRunner

from pdmp_cli import rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import checkpoint, run
from pdmp_cli.train.setup import resume_spec

def _spec(root: Path, **kw) -> TrainSpec:
    base = dict(
        profile=str(root / "profile.json"), dataset=str(root / "tiny.toml"), encoder=FLAT, epochs=2,
        batch_size=16, lr=0.01, device="cpu",
    )  # fmt: skip
    return TrainSpec(**{**base, **kw})


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().clone() for p in model.parameters() if p.grad is not None])


def _result(r) -> dict:
    return {"status": r.summary.status, "message": r.summary.message, "metrics": [m.model_dump() for m in r.metrics]}


WRITE_EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "tempfile.mkstemp", "tempfile.mkdtemp", "os.truncate"}


def _watch_writes(runs: Path, seen: list) -> None:
    """Audit hook: every file-system write under ``runs`` (opens for writing, renames, mkdirs...)."""
    runs = str(runs)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            paths = [path] if writing else []
        elif event in WRITE_EVENTS:
            paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        paths = [os.fsdecode(p) for p in paths if isinstance(p, (str, bytes, os.PathLike))]  # not fds
        seen.extend(f"{event} {p}" for p in paths if p.startswith(runs))

    sys.addaudithook(hook)


def _prepare(root: Path) -> None:
    """Before the spawn, in this process: the data, the profile, and a 1-epoch run that D resumes."""
    register_flat_encoder()
    (root / "tiny.toml").write_text(TINY_SYNTHETIC)
    make_profile().save(root / "profile.json")
    single_1ep = run(_spec(root, epochs=1, run_dir=str(root / "runs" / "single-1ep")), quiet=True)  # D resumes it
    assert single_1ep.status == "complete"


@ddp_job("distributed", prepare=_prepare)
def _worker(rank: int, root: Path) -> dict:
    """One of two gloo ranks (conftest's shared spawn): several tiny runs, and a record of what this rank saw."""
    from pdmp_cli.methods import ogm_ge
    from pdmp_cli.train import loop

    writes: list[str] = []
    _watch_writes(root / "runs", writes)
    rec: dict = {}
    runs = root / "runs"
    # A: pdmp, no BatchNorm, from scratch; every step's gradients after modulation
    grads: list = []
    r = run(_spec(root, run_dir=str(runs / "ddp-flat")), quiet=True, on_step=lambda i: grads.append(_grads(i.model)))
    rec["flat"] = {**_result(r), "grads": grads}

    # B: the small encoder (BatchNorm): within the stated tolerance of one process
    rec["small"] = _result(run(_spec(root, encoder="small", run_dir=str(runs / "ddp-small")), quiet=True))

    # C: ogm-ge; rank 1 draws extra random numbers every step (as per-rank augmentation would),
    # so only a shared generator keeps the GE noise, hence the gradients, identical
    coeffs: list = []
    original = ogm_ge.ogm_coefficients

    def recording(*a, **k):
        out = original(*a, **k)
        coeffs.append({m: float(v) for m, v in out.items()})
        return out

    ogm_ge.ogm_coefficients = recording
    ogm_grads: list = []

    def ogm_step(info):
        ogm_grads.append(_grads(info.model))
        if rank == 1:
            torch.rand(7)

    r = run(_spec(root, method="ogm-ge", encoder="small", epochs=1, run_dir=str(runs / "ddp-ogm")), quiet=True, on_step=ogm_step)
    ogm_ge.ogm_coefficients = original
    rec["ogm"] = {**_result(r), "coeffs": coeffs, "grads": ogm_grads}

    # D: resume a single-process run (1 epoch done) with two processes
    r = run(resume_spec(runs / "single-1ep", {"epochs": 2}), resume=True, quiet=True)
    rec["resumed_by_ddp"] = _result(r)

    # F: Ctrl-C on rank 1 only, after step 1; both ranks must stop at the same check
    loop.CHECK_EVERY, check_every = 2, loop.CHECK_EVERY

    def ctrl_c(info):
        if rank == 1 and info.epoch == 0 and info.step == 0:
            os.kill(os.getpid(), signal.SIGINT)

    r = run(_spec(root, run_dir=str(runs / "ddp-interrupted")), quiet=True, on_step=ctrl_c)
    loop.CHECK_EVERY = check_every
    rec["interrupted"] = _result(r)

    # G: a global batch that does not split over two ranks
    try:
        run(_spec(root, batch_size=15, run_dir=str(runs / "ddp-bad-batch")), quiet=True)
    except PdmpError as e:
        rec["bad_batch"] = (str(e), e.exit_code)
    rec["writes"] = list(writes)
    return rec


@pytest.fixture(scope="module")
def env(gloo_pair):
    root = gloo_pair.root / "distributed"
    register_flat_encoder()
    with pytest.MonkeyPatch.context() as monkey:
        monkey.setenv("PDMP_CACHE_DIR", str(root / "cache"))
        runs = root / "runs"
        e = SimpleNamespace(root=root, runs=runs, ranks=gloo_pair.records["distributed"])
        # the single-process counterparts
        e.single_flat = _result(run(_spec(root, run_dir=str(runs / "single-flat")), quiet=True))
        e.single_small = _result(run(_spec(root, encoder="small", run_dir=str(runs / "single-small")), quiet=True))
        # a checkpoint written mid-epoch by two processes, finished by one
        e.interrupted_ckpt = checkpoint.load(runs / "ddp-interrupted" / "checkpoints" / "last.pt")
        e.interrupted_then_single = _result(run(resume_spec(runs / "ddp-interrupted"), resume=True, quiet=True))
        yield e
    from pdmp_cli.models.encoders import ENCODERS

    ENCODERS._items.pop(FLAT, None)  # leave the registry as other test modules expect it


def _assert_close_metrics(a: list[dict], b: list[dict], rel: float) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["epoch"] == y["epoch"]
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=rel)
        assert x["test_accuracy"] == y["test_accuracy"] and x["branch_accuracy"] == y["branch_accuracy"]
        assert x["test_macro_f1"] == y["test_macro_f1"]
        assert x["w"] == pytest.approx(y["w"], rel=rel)
        for key in ("grad_norm_before", "grad_norm_after", "gamma"):
            assert x[key] == pytest.approx(y[key], rel=rel), key


def test_two_processes_match_one_with_the_same_global_batch(env):
    r0, r1 = env.ranks
    assert r0["flat"]["status"] == r1["flat"]["status"] == env.single_flat["status"] == "complete"
    _assert_close_metrics(r0["flat"]["metrics"], env.single_flat["metrics"], rel=1e-4)
    def gathered(r):
        return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in r["flat"]["metrics"]]

    assert gathered(r1) == gathered(r0)  # every rank reports the gathered metrics (timings are its own)
    # the checkpointed weights (unwrapped: no DDP "module." prefix) of both runs
    ddp = checkpoint.load(env.runs / "ddp-flat" / "checkpoints" / "last.pt")["model"]
    one = checkpoint.load(env.runs / "single-flat" / "checkpoints" / "last.pt")["model"]
    assert ddp.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-4, atol=1e-5)
    spec = json.loads((env.runs / "ddp-flat" / "spec.json").read_text())
    assert spec["devices"] == 2 and spec["batch_size"] == 16


def test_modulated_gradients_are_identical_on_both_ranks(env):
    g0, g1 = env.ranks[0]["flat"]["grads"], env.ranks[1]["flat"]["grads"]
    assert len(g0) == len(g1) == 8  # 2 epochs x 4 global batches (16, 16, 16, 12)
    for a, b in zip(g0, g1):
        assert torch.equal(a, b)
    for m in env.ranks[0]["flat"]["metrics"]:  # Eq. 10-11 on the averaged gradients
        assert m["gamma"] == {"audio": pytest.approx(0.1), "visual": pytest.approx(10.0)}
        for mod, g in m["gamma"].items():
            assert m["grad_norm_after"][mod] == pytest.approx(g * m["grad_norm_before"][mod], rel=1e-5)


def test_ogm_ge_coefficient_and_noise_agree_across_ranks(env):
    r0, r1 = env.ranks[0]["ogm"], env.ranks[1]["ogm"]
    assert r0["status"] == r1["status"] == "complete"
    assert len(r0["coeffs"]) == len(r1["coeffs"]) == 4
    assert r0["coeffs"] == r1["coeffs"]  # from scores summed over ranks, not each rank's half batch
    assert any(v < 1 for c in r0["coeffs"] for v in c.values())  # the modulation did act
    for a, b in zip(r0["grads"], r1["grads"]):  # scaled alike, same GE noise despite rank 1's own RNG use
        assert torch.equal(a, b)


def test_only_rank_zero_writes_the_run_directories(env):
    w0, w1 = env.ranks[0]["writes"], env.ranks[1]["writes"]
    assert w1 == []
    for name in ("ddp-flat", "ddp-small", "ddp-ogm", "single-1ep", "ddp-interrupted"):  # the hook does see writes
        assert any(f"{os.sep}{name}{os.sep}" in w for w in w0), name
    assert not (env.runs / "ddp-bad-batch").exists()
    d = env.runs / "ddp-flat"
    assert sorted(p.name for p in d.iterdir()) == ["checkpoints", "metrics.jsonl", "profile.json", "spec.json", "split.json", "summary.json"]
    assert [m.epoch for m in rundir.read_metrics(d)[0]] == [1, 2]


def test_batchnorm_run_within_stated_tolerance(env):
    ddp, one = env.ranks[0]["small"]["metrics"], env.single_small["metrics"]
    assert len(ddp) == len(one) == 2
    for x, y in zip(ddp, one):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=0.10)
        assert abs(x["test_accuracy"] - y["test_accuracy"]) <= 0.15
        assert x["gamma"] == y["gamma"]


def test_checkpoints_resume_with_another_number_of_processes(env):
    single = env.single_flat["metrics"]
    # one process wrote epoch 1, two processes trained epoch 2
    resumed = env.ranks[0]["resumed_by_ddp"]
    assert resumed["status"] == "complete"
    _assert_close_metrics(resumed["metrics"], single, rel=1e-4)
    # Ctrl-C on rank 1 only: both ranks stopped after the same step (the check every 2 steps)
    for r in env.ranks:
        assert r["interrupted"]["status"] == "interrupted"
        assert "interrupted at epoch 1, step 2" in r["interrupted"]["message"]
    last = env.interrupted_ckpt
    assert (last["epoch"], last["step"]) == (0, 2) and "module.encoders.audio.backbone.0.weight" not in last["model"]
    # ... and one process finished that run: the same numbers as an uninterrupted single process
    assert env.interrupted_then_single["status"] == "complete"
    _assert_close_metrics(env.interrupted_then_single["metrics"], single, rel=1e-4)


def test_global_batch_must_split_over_the_ranks(env):
    for r in env.ranks:
        msg, code = r["bad_batch"]
        assert code == 2
        assert msg == "batch_size 15 is the global batch and must divide evenly over 2 processes; use --batch-size 14 or 16"


# -----------------------------------------------------------------------------------------------
# pdmp train --devices N


def test_devices_flag_launches_torchrun_with_the_same_command(tmp_path, monkeypatch, tiny_manifest):
    from pdmp_cli.cli.app import app
    from pdmp_cli import distributed

    profile = make_profile().save(tmp_path / "p.json")
    calls = []
    monkeypatch.setattr(distributed, "launch", lambda n, argv, device="auto": calls.append((n, argv, device)) or 0)
    monkeypatch.setattr("pdmp_cli.train.run", lambda *a, **k: pytest.fail("the parent must not train"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", "--profile", str(profile), "--dataset", str(tiny_manifest), "--devices", "4", "--batch-size", "32"]
    monkeypatch.setattr(sys, "argv", ["pdmp", *argv])
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert calls == [(4, argv, "auto")]

    bad = [*argv[:-1], "30"]
    monkeypatch.setattr(sys, "argv", ["pdmp", *bad])
    res = CliRunner().invoke(app, bad)
    assert res.exit_code == 2 and len(calls) == 1  # refused before any process starts
    assert "batch_size 30 is the global batch and must divide evenly over 4 processes; use --batch-size 28 or 32" in res.output


@pytest.mark.slow  # real torchrun, 3-4 interpreters; the launch itself is checked above with a mock
def test_pdmp_train_devices_2_end_to_end(tmp_path, tiny_manifest):
    """The real thing: torchrun (torch.distributed.run) starts two gloo processes."""
    profile = make_profile().save(tmp_path / "p.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable, "-m", "pdmp_cli", "train", "--profile", str(profile), "--dataset", str(tiny_manifest),
        "--epochs", "1", "--device", "cpu", "--devices", "2", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.count("run directory:") == 1 and out.count("epoch   1/1") == 1 and out.count("done: test accuracy") == 1
    assert "x 2 processes (DDP over gloo; global batch 16 = 2 x 8)" in out
    assert "Traceback" not in p.stderr
    assert sorted(q.name for q in (tmp_path / "run").iterdir()) == [
        "checkpoints", "metrics.jsonl", "profile.json", "spec.json", "split.json", "summary.json",
    ]  # fmt: skip
