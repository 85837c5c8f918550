"""Small runtime helpers shared by analysis and training: device, seeding, loaders."""

from __future__ import annotations

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


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {m: x.to(device, non_blocking=True) for m, x in inputs.items()}
