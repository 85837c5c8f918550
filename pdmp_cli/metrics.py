"""Metrics: accuracy, macro-F1 and the optimization dependency coefficient w (Eq. 5)."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()


def macro_f1(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    f1s = []
    for c in range(num_classes):
        tp = ((preds == c) & (labels == c)).sum().item()
        fp = ((preds == c) & (labels != c)).sum().item()
        fn = ((preds != c) & (labels == c)).sum().item()
        if tp + fp + fn == 0:
            continue  # class absent from both: undefined, left out (sklearn's zero_division aside)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(sum(f1s) / len(f1s)) if f1s else 0.0


def logit_mass(branch_logits: dict[str, torch.Tensor]) -> dict[str, float]:
    """sum_j |s_m(j)| per modality, over a batch and all classes (numerator/denominator of Eq. 5)."""
    return {m: s.detach().abs().sum().item() for m, s in branch_logits.items()}


def dependency(mass: dict[str, float]) -> dict[str, float]:
    """Eq. 5 from accumulated logit masses.

    Two modalities: ``{"w": sum|s_1| / sum|s_2|}`` in the dataset's modality order.
    For any number: also each modality's share ``share/<m>`` = sum|s_m| / sum_k sum|s_k|.
    """
    names = list(mass)
    total = sum(mass.values())
    out = {f"share/{m}": (mass[m] / total if total > 0 else 0.0) for m in names}
    if len(names) == 2:
        denom = mass[names[1]]
        out["w"] = mass[names[0]] / denom if denom > 0 else float("inf")
    return out
