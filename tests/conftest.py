"""Shared fixtures. Every test gets its own cache directory, so no test sees another's cache."""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from pdmp_cli import rundir
from pdmp_cli.fsutil import write_json
from pdmp_cli.profile import Profile, Provenance
from pdmp_cli.rundir import EpochMetrics, RunSummary

TINY_SYNTHETIC = """
loader = "synthetic"
description = "tiny CREMA-D-like data for fast tests"
classes = 3
train_size = 60
test_size = 30
seed = 0
[audio]
reliability = 0.6
[visual]
reliability = 0.9
image_size = 16
[defaults]
encoder = "small"
epochs = 2
early_epochs = 1
batch_size = 16
lr = 0.01
subset = 1.0
"""


# Two test modules train DDP against one process (test_distributed, test_methods_contract): an
# encoder without BatchNorm computes the same function in both.
FLAT = "flat-test"


def register_flat_encoder() -> None:
    """The small encoder's layout with GroupNorm (per sample) in place of BatchNorm (per batch), so
    DDP and one process compute the same function."""
    from torch import nn

    from pdmp_cli.models.encoders import ENCODERS, register_encoder
    from pdmp_cli.models.encoders._frames import FrameFolding

    if FLAT in ENCODERS:
        return

    @register_encoder(FLAT)
    def build(in_channels: int) -> nn.Module:
        net = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.GroupNorm(2, 8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(),
        )  # fmt: skip
        return FrameFolding(net, out_dim=32)


# One two-process gloo spawn for the whole session (test_distributed, test_methods_contract): each
# module registers a job with @ddp_job; the first test that asks for the ``gloo_pair`` fixture
# runs every registered job's ``prepare(dir)`` here, then forks two ranks once, and each rank runs
# every job in one process group. A job gets (rank, its own dir) and returns a record (saved with
# torch.save); ``gloo_pair.records[name]`` is [rank 0's, rank 1's].
DDP_JOBS: dict = {}


def ddp_job(name: str, prepare=None):
    def register(job):
        DDP_JOBS[name] = (prepare, job)
        return job

    return register


def _gloo_rank(rank: int, port: int, root: Path, names: list[str]) -> None:
    import os
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    register_flat_encoder()
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=120))
    rec = {}
    try:
        for name in names:
            os.environ["PDMP_CACHE_DIR"] = str(root / name / "cache")
            rec[name] = DDP_JOBS[name][1](rank, root / name)
    finally:
        dist.destroy_process_group()
    torch.save(rec, root / f"rank{rank}.pt")


@pytest.fixture(scope="session")
def gloo_pair(tmp_path_factory):
    import socket

    import torch
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("gloo")
    names = list(DDP_JOBS)
    with pytest.MonkeyPatch.context() as monkey:
        for name in names:
            (root / name).mkdir()
            monkey.setenv("PDMP_CACHE_DIR", str(root / name / "cache"))
            prepare = DDP_JOBS[name][0]
            if prepare is not None:
                prepare(root / name)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # fork: the ranks start without importing torch again (no CUDA here, one CPU thread, no process group yet)
        mp.start_processes(_gloo_rank, args=(port, root, names), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return SimpleNamespace(root=root, records={name: [ranks[0][name], ranks[1][name]] for name in names})


# Helpers several test modules share (no test module imports another): profiles, run directories
# as `pdmp train` writes them, a stand-in for pdmp_cli.train.run, PNG sizes, analysis outcomes.


def _method_args(method: str) -> dict:
    """The ``method_args`` pdmp writes into spec.json: the run's method's defaults (none for a name
    no longer registered)."""
    from pdmp_cli.methods import METHODS

    return {method: METHODS.get(method).Args().model_dump(mode="json")} if method in METHODS else {}


def make_run(
    root: Path,
    name: str,
    *,
    method: str = "pdmp",
    accs: list[float],
    vals: list[float] | None = None,
    fusion: str = "concat",
    gamma_p: float = 10.0,
    seed: int = 0,
    dataset: str = "synthetic",
    branch: dict[str, float] | None = None,
    w: float | None = 0.5,
    f1_offset: float = -0.01,
    status: str = "complete",
    epochs_planned: int | None = None,
    summary: bool = True,
    spec_extra: dict | None = None,
    modalities: tuple = ("audio", "visual"),
    gamma: dict | None = None,
) -> Path:
    """A run directory as `pdmp train` writes it, with the numbers given.

    Epoch e has eval accuracy ``accs[e]``, macro-F1 ``accs[e] + f1_offset``; the last epoch has
    branch accuracies ``branch`` and w ``w`` (earlier epochs: branch 0.1 each, w 1.0). ``vals``:
    validation accuracy per epoch; without, a run with ``--select-on-test`` (no validation split:
    its epoch was chosen on test).
    """
    d = root / name
    (d / rundir.CHECKPOINTS).mkdir(parents=True)
    epochs_planned = epochs_planned or len(accs)
    spec = {
        "epochs": epochs_planned, "batch_size": 64, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
        "seed": seed, "encoder": "small", "device": "auto", "num_workers": 0, "data_root": None,
        "profile": "profiles/x.json", "dataset": dataset, "fusion": fusion, "method": method, "gamma_p": gamma_p,
        "grad_clip": None, "run_dir": str(d), "runs_root": str(root),
        "skip_bad": False, "val_fraction": 0.1 if vals else 0.0, "select_on_test": not vals,
        "method_args": _method_args(method), **(spec_extra or {}),
    }  # fmt: skip
    write_json(d / rundir.SPEC, spec)
    branch = branch or {m: 0.5 for m in modalities}
    history = []
    for i, a in enumerate(accs):
        last = i == len(accs) - 1
        m = EpochMetrics(
            epoch=i + 1, train_loss=1.0 / (i + 1), test_accuracy=a, test_macro_f1=a + f1_offset,
            val_accuracy=vals[i] if vals else None,
            branch_accuracy=branch if last else {m: 0.1 for m in modalities},
            w=(w if last else 1.0) if len(modalities) == 2 else None,
            shares={m: 1 / len(modalities) for m in modalities},
            grad_norm_before={m: 1.0 for m in modalities}, grad_norm_after={m: 1.0 for m in modalities},
            gamma={m: 1.0 for m in modalities}, lr=0.01, epoch_seconds=2.0,
        )  # fmt: skip
        rundir.append_metrics(d, m)
        history.append(m)
    if summary:
        best = max(history, key=lambda m: m.test_accuracy)
        chosen = max(history, key=lambda m: m.val_accuracy) if vals else None
        on_val = dict(
            selection="validation", selected_epoch=chosen.epoch, selected_accuracy=chosen.test_accuracy,
            selected_macro_f1=chosen.test_macro_f1, val_accuracy=chosen.val_accuracy,
        ) if vals else dict(
            selection="test", selected_epoch=best.epoch, selected_accuracy=best.test_accuracy,
            selected_macro_f1=best.test_macro_f1,
        )  # fmt: skip
        s = RunSummary(**on_val,
            dataset=dataset, method=method, fusion=fusion, encoder="small", gamma_p=gamma_p,
            gamma=gamma if gamma is not None else ({"audio": 1 / gamma_p, "visual": gamma_p} if method == "pdmp" else {m: 1.0 for m in modalities}),
            seed=seed, profile_sha256="0" * 64, status=status, epochs_planned=epochs_planned, epochs_done=len(history),
            best_accuracy=best.test_accuracy, best_macro_f1=best.test_macro_f1, best_epoch=best.epoch,
            final_accuracy=history[-1].test_accuracy, final_macro_f1=history[-1].test_macro_f1, final_w=history[-1].w,
            final_branch_accuracy=dict(history[-1].branch_accuracy), wall_seconds=10.0 * len(history) + seed,
            message="interrupted at epoch 3, step 4; continue with `pdmp train --resume x`" if status == "interrupted" else None,
        )  # fmt: skip
        write_json(d / rundir.SUMMARY, s.model_dump(mode="json"))
    return d


def measured_profile(path: Path, dataset="synthetic", late=(0.54, 0.85), early=(0.59, 0.18), uncertain=False):
    curves = {"audio": [early[0], late[0]], "visual": [early[1], late[1]]}
    from pdmp_cli.profile import ModalityResult

    p = Profile(
        dataset=dataset, modalities=["audio", "visual"], subset=1.0, seed=0, settings={"early_epochs": 1},
        results={m: ModalityResult(curve=c, early_accuracy=c[0], late_accuracy=c[1], eval_size=480) for m, c in curves.items()},
        early_ranking=["audio", "visual"] if early[0] > early[1] else ["visual", "audio"],
        late_ranking=["visual", "audio"] if late[1] > late[0] else ["audio", "visual"],
        performance_dominant="visual" if late[1] > late[0] else "audio",
        optimization_dominant="audio" if early[0] > early[1] else "visual",
        uncertain={"early_ranking": False, "late_ranking": uncertain},
        provenance=Provenance(tool_version="test", created="2025-01-01T00:00:00+00:00"),
    )  # fmt: skip
    return p.save(path)


def profile_file(path: Path, m_p="visual", m_o="audio") -> str:
    return str(make_profile(performance_dominant=m_p, optimization_dominant=m_o).save(path))


class FakeTrain:
    """Stands in for pdmp_cli.train.run: writes the run directory a real run would (spec.json,
    profile.json, metrics.jsonl, summary.json) with accuracy 0.5 + γp/100 + seed/1000, and counts calls."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.status = "complete"

    def __call__(self, spec, command="", *, resume=False, console=None, quiet=False, on_step=None):
        from pdmp_cli.train import RunResult
        from pdmp_cli.train.setup import make_run_dir

        self.calls.append((spec, resume))
        d = Path(spec.run_dir) if resume else make_run_dir(spec, "tiny")
        spec = spec.model_copy(update={"run_dir": str(d)})
        write_json(d / rundir.SPEC, spec.model_dump(mode="json"))
        if not resume:
            shutil.copy(spec.profile, d / rundir.PROFILE)
        if on_step is not None:
            on_step(SimpleNamespace(epoch=0))
        acc = 0.5 + (spec.gamma_p if spec.method in ("pdmp", "lr-scale") else 0) / 100 + spec.seed / 1000
        m = EpochMetrics(
            epoch=1, train_loss=1.0, test_accuracy=acc, test_macro_f1=acc, branch_accuracy={"audio": 0.4, "visual": 0.6},
            w=0.5, shares={"audio": 0.3, "visual": 0.7}, grad_norm_before={}, grad_norm_after={}, gamma={}, lr=0.01,
            epoch_seconds=1.0,
        )  # fmt: skip
        if not resume:
            rundir.append_metrics(d, m)
        s = RunSummary(
            dataset="tiny", method=spec.method, fusion=spec.fusion, encoder=spec.encoder, gamma_p=spec.gamma_p,
            gamma={}, seed=spec.seed, profile_sha256=hashlib.sha256(Path(spec.profile).read_bytes()).hexdigest(),
            status=self.status, epochs_planned=spec.epochs, epochs_done=1, best_accuracy=acc, best_epoch=1,
            selection="test", selected_epoch=1, selected_accuracy=acc, selected_macro_f1=acc,  # no val_accuracy
            final_accuracy=acc, final_macro_f1=acc, final_w=0.5, final_branch_accuracy=m.branch_accuracy,
            message="interrupted at epoch 1, step 2; continue with `pdmp train --resume x`" if self.status == "interrupted" else None,
        )  # fmt: skip
        write_json(d / rundir.SUMMARY, s.model_dump(mode="json"))
        return RunResult(d, s, [m])


def make_profile(**kw) -> Profile:
    base = dict(
        dataset="tiny",
        modalities=["audio", "visual"],
        performance_dominant="visual",
        optimization_dominant="audio",
        optimization_criterion="manual",
        provenance=Provenance(tool_version="test", created="2025-01-01T00:00:00+00:00", source="manual"),
    )
    return Profile(**{**base, **kw})


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk; fails unless the file is a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data.endswith(b"IEND\xaeB`\x82")  # the closing chunk: the file is complete
    return struct.unpack(">II", data[16:24])


def analysis_outcome(subset, curves, cached=False, **kw):
    from pdmp_cli.analysis import AnalysisOutcome, build_profile

    p, warnings = build_profile(
        dataset="synthetic", identity="id", modalities=["audio", "visual"], curves=curves, eval_size=480,
        early_epochs=1, subset=subset, seed=0, settings={}, **kw,
    )  # fmt: skip
    path = Path(f"profiles/synthetic.subset-{subset:g}.json")
    return AnalysisOutcome(subset, p, path, path.with_name("x.spec.json"), cached, "key", warnings)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _one_job_unless_asked(monkeypatch):
    # --jobs defaults to the free cores: tests that want processes pass jobs themselves, the rest
    # train in the test's own process (a spawned worker re-imports torch: seconds each)
    monkeypatch.setattr("pdmp_cli.pool.free_cores", lambda: 1)


@pytest.fixture
def tiny_manifest(tmp_path) -> Path:
    """A 90-clip, 3-class synthetic dataset manifest (loads in well under a second)."""
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_SYNTHETIC)
    return p


def pytest_configure(config):
    # Every test trains tiny models: one intra-op thread is as fast as two on this project's
    # 2-core machines and never oversubscribes when other processes (DDP ranks, a busy CI
    # host) compete for the cores. Set once here instead of in each test module.
    import torch

    torch.set_num_threads(1)
