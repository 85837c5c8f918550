"""Aggregation over seeds for ``pdmp report``: complete runs of one configuration (same
dataset, method, fusion, gamma_p where the method uses it, gamma, and every other training
setting) are averaged over their seeds; a run that did not finish stays on its own row."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

from pdmp_cli.report.read import USES_GAMMA_P, RunRecord

METHOD_ORDER = ("vanilla", "ogm-ge", "lr-scale", "pdmp")  # baselines first, as in the paper's tables
# metric columns averaged over seeds; the first four (and each branch) get a "best" highlight
HIGHER_IS_BETTER = ("accuracy", "best_accuracy", "macro_f1")


@dataclass
class Stat:
    """Mean, sample standard deviation (None for n < 2) and n of one column over seeds."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, xs: list[float | None]) -> "Stat":
        xs = [x for x in xs if x is not None and math.isfinite(x)]
        if not xs:
            return cls(None, None, 0)
        return cls(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))


@dataclass
class Row:
    """One configuration: complete runs averaged over seeds, or one unfinished run."""

    dataset: str
    method: str
    fusion: str
    gamma_p: float | None  # None when the method ignores it
    gamma: dict[str, float]
    status: str
    epochs_done: int
    epochs_planned: int | None
    seeds: list[int]
    runs: list[RunRecord]
    stats: dict[str, Stat]
    settings: dict
    variant: dict = field(default_factory=dict)  # settings that tell apart rows that look alike
    best: set[str] = field(default_factory=set)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def label(self) -> str:
        g = f" γp {self.gamma_p:g}" if self.gamma_p is not None else ""
        return f"{self.method}{g} ({self.fusion})"


def _method_rank(m: str) -> tuple:
    """The comparison order the method classes give (``Method.table_order``: the paper's Table I,
    the plain baseline first and PDMP last); a name no longer registered goes by METHOD_ORDER."""
    from pdmp_cli.methods import METHODS

    if m in METHODS:
        return (METHODS.get(m).table_order, m)
    return (METHOD_ORDER.index(m) * 100 / max(len(METHOD_ORDER) - 1, 1) if m in METHOD_ORDER else 50, m)


def aggregate(records: list[RunRecord]) -> list[Row]:
    """Group complete runs by configuration (mean ± std over seeds); unfinished runs stay alone."""
    groups: dict[str, list[RunRecord]] = {}
    singles: list[list[RunRecord]] = []
    for r in records:
        if r.complete:
            key = json.dumps(
                [r.dataset, r.method, r.fusion, r.gamma_p if r.method in USES_GAMMA_P else None, r.gamma, r.settings],
                sort_keys=True, default=str,
            )  # fmt: skip
            groups.setdefault(key, []).append(r)
        else:
            singles.append([r])
    rows = []
    for runs in [*groups.values(), *singles]:
        r0 = runs[0]
        columns = sorted({k for r in runs for k in r.values})
        rows.append(
            Row(
                dataset=r0.dataset, method=r0.method, fusion=r0.fusion,
                gamma_p=r0.gamma_p if r0.method in USES_GAMMA_P else None,
                gamma=r0.gamma if r0.method == "pdmp" else {}, status=r0.status,
                epochs_done=r0.epochs_done, epochs_planned=r0.epochs_planned,
                seeds=sorted(r.seed for r in runs), runs=sorted(runs, key=lambda r: (r.seed, str(r.path))),
                stats={c: Stat.of([r.values.get(c) for r in runs]) for c in columns}, settings=r0.settings,
            )  # fmt: skip
        )
    rows.sort(key=lambda w: (w.dataset, _method_rank(w.method), w.fusion, w.gamma_p or 0.0, w.status != "complete",
                             json.dumps(w.settings, sort_keys=True, default=str), str(w.runs[0].path)))  # fmt: skip
    _mark_variants(rows)
    _mark_best(rows)
    return rows


def _mark_variants(rows: list[Row]) -> None:
    """Rows with the same label but different settings: name the settings that differ."""
    by_label: dict[tuple, list[Row]] = {}
    for w in rows:
        if w.status == "complete":
            by_label.setdefault((w.dataset, w.label, json.dumps(w.gamma, sort_keys=True)), []).append(w)
    for same in by_label.values():
        if len(same) < 2:
            continue
        keys = sorted({k for w in same for k in w.settings})
        differ = [k for k in keys if len({json.dumps(w.settings.get(k), default=str) for w in same}) > 1]
        for w in same:
            w.variant = {k: w.settings.get(k) for k in differ}


def metric_columns(rows: list[Row]) -> list[str]:
    """accuracy, best_accuracy, macro_f1, branch/<m> (modalities in first-seen order), w, wall_seconds."""
    mods: list[str] = []
    for w in rows:
        for r in w.runs:
            for m in r.modalities:
                if m not in mods:
                    mods.append(m)
    return [*HIGHER_IS_BETTER, *(f"branch/{m}" for m in mods), "w", "wall_seconds"]


def _mark_best(rows: list[Row]) -> None:
    """Per dataset, the highest mean of every accuracy-like column among complete rows (ties: all)."""
    for ds in {w.dataset for w in rows}:
        cands = [w for w in rows if w.dataset == ds and w.status == "complete"]
        if len(cands) < 2:
            continue
        for col in metric_columns(cands):
            if col not in HIGHER_IS_BETTER and not col.startswith("branch/"):
                continue
            means = [w.stats[col].mean for w in cands if col in w.stats and w.stats[col].mean is not None]
            if not means:
                continue
            top = max(means)
            if len(means) == len(cands) and all(m == top for m in means):
                continue  # every row ties: nothing stands out
            for w in cands:
                if col in w.stats and w.stats[col].mean == top:
                    w.best.add(col)
