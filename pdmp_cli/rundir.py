"""The run directory: what ``pdmp train`` writes and ``pdmp report`` reads.

    <run_dir>/spec.json        the resolved TrainSpec
    <run_dir>/profile.json     a copy of the profile used (its sha256 in summary.json)
    <run_dir>/metrics.jsonl    one EpochMetrics per line, appended as epochs finish
    <run_dir>/summary.json     RunSummary, rewritten atomically after every epoch
    <run_dir>/split.json       the validation split the best epoch was chosen on
    <run_dir>/checkpoints/last.pt, best.pt (+ .sha256: size and hash, checked before loading)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pdmp_cli.fsutil import not_writable

SPEC, PROFILE, METRICS, SUMMARY = "spec.json", "profile.json", "metrics.jsonl", "summary.json"
SPLIT = "split.json"  # the validation split: its record and, when carved, its indices into train
CHECKPOINTS = "checkpoints"


class EpochMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(description="1-based")
    train_loss: float
    test_accuracy: float | None = Field(description="on the test split (None: trained without it, pdmp tune)")
    test_macro_f1: float | None
    val_accuracy: float | None = Field(None, description="on the validation split (None: none, selected on test)")
    val_macro_f1: float | None = None
    branch_accuracy: dict[str, float] = Field(description="modality -> accuracy of s_m alone")
    w: float | None = Field(None, description="Eq. 5 on the evaluation set (two modalities)")
    shares: dict[str, float] = Field(description="modality -> sum|s_m| / sum_k sum|s_k|")
    grad_norm_before: dict[str, float] = Field(description="encoder grad norm before modulation, epoch mean")
    grad_norm_after: dict[str, float]
    gamma: dict[str, float] = Field(description="effective gradient factor per modality this epoch")
    lr: float
    epoch_seconds: float


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    method: str
    fusion: str
    encoder: str
    gamma_p: float
    gamma: dict[str, float]
    seed: int
    profile_sha256: str
    # pdmp train writes the first four; "unknown" only pdmp report gives: a summary it rebuilt with
    # summarize() from spec.json and metrics.jsonl when summary.json is missing or unreadable
    status: Literal["running", "complete", "interrupted", "diverged", "unknown"]
    epochs_planned: int
    epochs_done: int
    # the headline: test accuracy at the epoch chosen on the validation split (``selection``)
    selection: Literal["validation", "test"] = Field(
        "test", description="what chose selected_epoch; runs written before validation existed: test"
    )
    selected_epoch: int | None = None
    selected_accuracy: float | None = Field(None, description="test accuracy at selected_epoch")
    selected_macro_f1: float | None = None
    val_accuracy: float | None = Field(None, description="validation accuracy at selected_epoch")
    val_split: dict | None = Field(None, description="pdmp_cli.data.split.record_of: the validation split")
    # the paper's convention (the best epoch on the test split): kept for comparison, labelled so
    best_accuracy: float | None = None
    best_macro_f1: float | None = None
    best_epoch: int | None = None
    final_accuracy: float | None = None
    final_macro_f1: float | None = None
    final_w: float | None = None
    final_branch_accuracy: dict[str, float] = Field(default_factory=dict)
    wall_seconds: float = 0.0
    message: str | None = None
    command: str = Field("", description="the command line that started (or last resumed) the run")
    pdmp_version: str | None = None


def selection_score(m: EpochMetrics) -> float:
    """What chooses a run's best epoch (and best.pt): validation accuracy; test only without a validation split."""
    return m.val_accuracy if m.val_accuracy is not None else m.test_accuracy


def select_epoch(history: list[EpochMetrics]) -> EpochMetrics | None:
    """The epoch a run reports: the best by :func:`selection_score` (the first of equals)."""
    return max(history, key=selection_score) if history else None


def append_metrics(run_dir: Path, m: EpochMetrics) -> None:
    path = Path(run_dir) / METRICS
    try:
        with open(path, "a") as f:
            f.write(m.model_dump_json() + "\n")
            f.flush()
    except OSError as e:
        raise not_writable(path, e) from None


def read_metrics(run_dir: Path) -> tuple[list[EpochMetrics], int]:
    """Parsed epochs and the number of lines that could not be parsed (a killed run's tail)."""
    path = Path(run_dir) / METRICS
    good, bad = [], 0
    if not path.is_file():
        return good, bad
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            good.append(EpochMetrics.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValueError):
            bad += 1
    return good, bad


def summarize(history: list[EpochMetrics], **fields) -> RunSummary:
    """The summary.json of a run whose epochs so far are ``history`` (``fields``: the rest of RunSummary)."""
    tested = [m for m in history if m.test_accuracy is not None]  # none: trained without the test split
    best = max(tested, key=lambda m: m.test_accuracy) if tested else None  # first of equals
    chosen = select_epoch(history)  # on validation (on test only without a validation split)
    last = history[-1] if history else None
    on_val = chosen is not None and chosen.val_accuracy is not None
    return RunSummary(
        epochs_done=len(history),
        selection="validation" if on_val or (fields.get("val_split") or {}).get("selection") == "validation" else "test",
        selected_epoch=chosen.epoch if chosen else None,
        selected_accuracy=chosen.test_accuracy if chosen else None,
        selected_macro_f1=chosen.test_macro_f1 if chosen else None,
        val_accuracy=chosen.val_accuracy if chosen else None,
        best_accuracy=best.test_accuracy if best else None,
        best_macro_f1=best.test_macro_f1 if best else None,
        best_epoch=best.epoch if best else None,
        final_accuracy=last.test_accuracy if last else None,
        final_macro_f1=last.test_macro_f1 if last else None,
        final_w=last.w if last else None,
        final_branch_accuracy=dict(last.branch_accuracy) if last else {},
        **fields,
    )
