"""Small runtime helpers shared by analysis and training: device, seeding, loaders, stop signals."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from pdmp_cli.errors import PdmpError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PdmpError("--device cuda was asked for but no CUDA device is available; use --device cpu", 2)
    return torch.device(name)


# intra-op threads of one run when --threads is not given (benchmarks/threads.py measures the
# choice: step time against threads, and what a grid loses when each run takes more than one)
SMALL_THREADS = 1
RESNET18_THREADS = 1


def default_threads(encoder: str) -> int:
    """``--threads`` when not given: 1 for the ``small`` encoder (a step of ~40 ms gains little from
    a second thread: 1.31x at 2 threads, efficiency 0.66), :data:`RESNET18_THREADS` (1) for
    ResNet-18 (CREMA-D-sized inputs, batch 16: 0.94x at 2 threads, no gain), 1 for any other
    encoder; benchmarks/threads.py on this project's 2-core machine at load 1.2-2.2
    (docs/results/threads.json). One thread per run leaves the other cores to ``--jobs``, which
    runs independent runs side by side."""
    return RESNET18_THREADS if encoder == "resnet18" else SMALL_THREADS


def use_threads(spec) -> int:
    """Fix this process's intra-op threads for ``spec`` (``spec.threads``, else
    :func:`default_threads` of its encoder) before any work; returns the count. The count
    decides float summation order, so the same command, seed and thread count give the same
    numbers bit for bit however busy the machine is; another count may differ in the last bits."""
    n = spec.threads or default_threads(spec.encoder)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator for the data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def stratified_subset(labels: list[int], fraction: float, seed: int) -> list[int]:
    """Indices of a class-stratified ``fraction`` of a split (at least one sample per class)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    chosen: list[int] = []
    for y in sorted(by_class):
        idx = np.array(by_class[y])
        k = max(1, int(round(fraction * len(idx))))
        chosen.extend(rng.permutation(idx)[:k].tolist())
    return sorted(chosen)


def channels_last(device: torch.device | str) -> bool:
    """Whether models and 4-D inputs use the channels-last (NHWC) layout on ``device``.

    On by default on the CPU and on CUDA, where it is the faster layout for a training step
    (issue 15; same model, batch 64, median of interleaved rounds): on the CPU, oneDNN's NHWC
    kernels take 0.6-0.73x the step time of the ``small`` encoder on the synthetic preset
    (``benchmarks/hot_path.py``), ResNet-18 at CREMA-D's sizes is within noise (0.94-1.08x,
    batch 8, on a loaded 2-core machine); on an H200, ResNet-18 at CREMA-D's sizes takes 0.63x
    (fp32) and 0.74x (bf16 autocast) the step time, the ``small`` encoder ~1x (0.99-1.05x: too
    small to gain). ``PDMP_CHANNELS_LAST=0`` keeps the NCHW layout (the opt-out).
    The arithmetic is the same up to float rounding, but rounding differences grow over a run,
    so a run's accuracies differ slightly between the layouts (as between two machines).
    """
    if torch.device(device).type not in ("cpu", "cuda"):
        return False
    return os.environ.get("PDMP_CHANNELS_LAST", "1").lower() not in ("0", "off", "false", "no")


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``, in the memory layout that is fastest there (:func:`channels_last`)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last(device) else model


def place_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One input batch on ``device``; a 4-D batch in the layout of :func:`place_model`."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and channels_last(device) else x


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {m: place_input(x, device) for m, x in inputs.items()}

