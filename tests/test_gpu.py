"""CUDA paths, run where a GPU is (skipped cleanly elsewhere): every method and fusion trains an
epoch on the GPU, mixed precision, resume on the GPU, and the nccl process group through torchrun.

These go through the command line (``pdmp train --device cuda``) or the library's ``run``, the
way users reach them, on the tiny synthetic dataset of ``conftest.py``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import make_profile
from typer.testing import CliRunner

from pdmp_cli.cli.app import app

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

runner = CliRunner()


def _profile(path, modalities=("audio", "visual")):
    return str(make_profile(modalities=list(modalities)).save(path))


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _train(tmp_path, tiny_manifest, *args, name="run"):
    run_dir = tmp_path / name
    argv = ["train", "--profile", _profile(tmp_path / "p.json"), "--dataset", str(tiny_manifest), "--device", "cuda",
            "--epochs", "1", "--run-dir", str(run_dir), *args]
    return runner.invoke(app, argv), run_dir


def _assert_finished_on_cuda(res, run_dir):
    assert res.exit_code == 0, res.output
    s = _summary(run_dir)
    assert s["status"] == "complete", s
    assert math.isfinite(s["final_accuracy"]) and 0.0 <= s["final_accuracy"] <= 1.0
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert json.loads((run_dir / "spec.json").read_text())["device"] == "cuda"


def _methods():
    from pdmp_cli.methods import METHODS

    return sorted(METHODS.names())


def _fusions():
    from pdmp_cli.models.fusions import FUSIONS

    return sorted(FUSIONS.names())


@pytest.mark.parametrize("method", _methods())
@pytest.mark.parametrize("fusion", _fusions())
def test_every_method_and_fusion_trains_an_epoch_on_cuda(tmp_path, tiny_manifest, method, fusion):
    torch.cuda.reset_peak_memory_stats()
    res, run_dir = _train(tmp_path, tiny_manifest, "--method", method, "--fusion", fusion)
    if res.exit_code == 2:  # a method may refuse a fusion it cannot use: one line naming it, nothing run
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
        pytest.skip(f"{method} refuses {fusion}: {lines[0]}")
    _assert_finished_on_cuda(res, run_dir)
    assert torch.cuda.max_memory_allocated() > 0  # it really ran on the GPU


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(tmp_path, tiny_manifest, precision):
    res, run_dir = _train(tmp_path, tiny_manifest, "--precision", precision, "--epochs", "2")
    _assert_finished_on_cuda(res, run_dir)
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert json.loads((run_dir / "spec.json").read_text())["precision"] == precision
    if precision == "fp16":  # the GradScaler's state travels with the checkpoint (resume)
        assert ckpt["amp"] is not None, sorted(ckpt)


def test_ctrl_c_then_resume_on_cuda_matches_the_uninterrupted_run(tmp_path, tiny_manifest):
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import run
    from pdmp_cli.train.setup import resume_spec

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    prof = _profile(tmp_path / "p.json")

    def spec(name):
        return TrainSpec(profile=prof, dataset=str(tiny_manifest), encoder="small", epochs=2, batch_size=16, lr=0.01,
                         device="cuda", run_dir=str(tmp_path / name))

    full = run(spec("full"), quiet=True)

    def ctrl_c(info):
        if (info.epoch, info.step) == (1, 1):
            signal.raise_signal(signal.SIGINT)

    cut = run(spec("cut"), on_step=ctrl_c, quiet=True)
    assert cut.status == "interrupted"
    done = run(resume_spec(cut.run_dir), resume=True, quiet=True)
    assert done.status == "complete" and len(done.metrics) == len(full.metrics) == 2
    for a, b in zip(done.metrics, full.metrics):  # cuDNN deterministic: equal up to float reassociation
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4, abs=1e-5)
        assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=1 / 30 + 1e-9)


def test_nccl_process_group_through_torchrun(tmp_path, tiny_manifest):
    """One GPU is enough to exercise the nccl path: torchrun with one process."""
    prof = _profile(tmp_path / "p.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "pdmp_cli",
           "train", "--profile", prof, "--dataset", str(tiny_manifest), "--epochs", "1", "--device", "cuda",
           "--run-dir", str(tmp_path / "run")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "nccl" in p.stdout, p.stdout  # the run says which process group it joined
    assert _summary(tmp_path / "run")["status"] == "complete"
