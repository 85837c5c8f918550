"""Aggregation over seeds for ``pdmp report``: complete runs of one configuration (same
dataset, method, fusion, gamma_p where the method uses it, gamma, and every other training
setting) are averaged over their seeds; a run that did not finish stays on its own row.

Statistics (scipy): every column gets n, mean, sample std and a 95 % Student-t confidence
interval of the mean (:class:`Stat`). Two rows are compared over the seeds they share
(:func:`paired`: mean paired difference, its 95 % t-interval, and a two-sided paired t-test,
``scipy.stats.ttest_rel``). The headline column's "best" mark needs evidence: the row with the
highest mean is marked only when it is significantly better (p < 0.05) than every other
complete row of its dataset in a paired test on at least two shared seeds. (Requiring every
pairwise test to pass is an intersection-union test: no multiplicity correction is needed.)
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from dataclasses import dataclass, field

from pdmp_cli.report.read import RunRecord

# metric columns averaged over seeds; these (and each branch) get a "best" highlight. The first
# is the headline: test accuracy at the epoch chosen on validation (accuracy: the final epoch's;
# best_accuracy: the best test epoch, the paper's convention)
HEADLINE = "selected_accuracy"
HIGHER_IS_BETTER = (HEADLINE, "accuracy", "best_accuracy", "macro_f1")
CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the paired tests


def t_interval(mean: float, std: float | None, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Student-t confidence interval of a mean from n samples (None for n < 2)."""
    from scipy import stats

    if n < 2 or std is None:
        return None
    if std == 0:
        return (mean, mean)
    lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return (float(lo), float(hi))


@dataclass
class Stat:
    """Mean, sample standard deviation and 95 % t-interval of the mean (both None for n < 2), n."""

    mean: float | None
    std: float | None
    n: int
    ci: tuple[float, float] | None = None

    @classmethod
    def of(cls, xs: list[float | None]) -> "Stat":
        xs = [x for x in xs if x is not None and math.isfinite(x)]
        if not xs:
            return cls(None, None, 0)
        mean, std = statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None
        return cls(mean, std, len(xs), t_interval(mean, std, len(xs)))


@dataclass
class Paired:
    """A row against another over the seeds both have: mean difference (row - other), its 95 %
    t-interval and the two-sided paired t-test's p-value (interval and p None for n < 2)."""

    against: str  # the other row's label
    n: int
    mean: float | None
    ci: tuple[float, float] | None
    p: float | None

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


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
    compare: Paired | None = None  # against the --compare method's matching row (None: none, or this is it)
    is_reference: bool = False  # this row is the --compare method's

    @property
    def selection(self) -> str:
        """``validation`` when every run chose its headline epoch on validation, else ``test``."""
        return "validation" if self.runs and all(r.summary.selection == "validation" for r in self.runs) else "test"

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def label(self) -> str:
        g = f" γp {self.gamma_p:g}" if self.gamma_p is not None else ""
        return f"{self.method}{g} ({self.fusion})"


def _method_rank(m: str) -> tuple:
    """The comparison order the method classes give (``Method.table_order``: the paper's Table I,
    the plain baseline first and PDMP last); a name no longer registered goes in the middle."""
    from pdmp_cli.methods import METHODS

    if m in METHODS:
        return (METHODS.get(m).table_order, m)
    return (50, m)


def paired(a: Row, b: Row, col: str = HEADLINE) -> Paired:
    """``a`` minus ``b`` on ``col`` over the seeds both have (a repeated seed: its first run)."""
    from scipy import stats

    def by_seed(w: Row) -> dict[int, float]:
        out: dict[int, float] = {}
        for r in w.runs:
            x = r.values.get(col)
            if x is not None and math.isfinite(x):
                out.setdefault(r.summary.seed, x)
        return out

    xa, xb = by_seed(a), by_seed(b)
    seeds = sorted(set(xa) & set(xb))
    d = [xa[s] - xb[s] for s in seeds]
    if not d:
        return Paired(b.label, 0, None, None, None)
    mean = statistics.fmean(d)
    if len(d) < 2:
        return Paired(b.label, 1, mean, None, None)
    std = statistics.stdev(d)
    with warnings.catch_warnings():  # equal differences on every seed: scipy warns, p is 0 (or nan if all 0)
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel([xa[s] for s in seeds], [xb[s] for s in seeds]).pvalue)
    return Paired(b.label, len(d), mean, t_interval(mean, std, len(d)), p if math.isfinite(p) else None)


def _shared_settings(w: Row) -> str:
    """The settings two rows of different methods must share to be compared (method-specific ones dropped)."""
    s = {k: v for k, v in w.settings.items() if k != "method_args"}
    return json.dumps([w.dataset, w.fusion, s], sort_keys=True, default=str)


def compare_to(rows: list[Row], method: str) -> list[str]:
    """Set ``row.compare`` of every complete row against ``method``'s row with the same dataset,
    fusion and shared settings; returns notes for rows that have no such row."""
    refs: dict[str, list[Row]] = {}
    for w in rows:
        if w.status == "complete" and w.method == method:
            refs.setdefault(_shared_settings(w), []).append(w)
    notes = []
    for w in rows:
        if w.status != "complete":
            continue
        if w.method == method:
            w.is_reference = True
            continue
        match = refs.get(_shared_settings(w), [])
        if len(match) == 1:
            w.compare = paired(w, match[0])
        else:
            why = "no" if not match else f"{len(match)}"
            notes.append(f"{w.label} on {w.dataset}: {why} {method} row with the same settings to compare with")
    return notes


def aggregate(records: list[RunRecord], notes: list[str] | None = None) -> list[Row]:
    """Group complete runs by configuration (mean ± std over seeds); unfinished runs stay alone.

    A seed counts once: when a configuration has several complete runs of one seed (a rerun),
    the row uses the first by run-directory path (the earliest: ``pdmp train`` names its
    directories by start time) and ``notes`` (when given) says which runs were left out."""
    from pdmp_cli.methods import uses_gamma_p

    groups: dict[str, list[RunRecord]] = {}
    singles: list[list[RunRecord]] = []
    for r in records:
        if r.complete:
            s = r.summary
            key = json.dumps(
                [s.dataset, s.method, s.fusion, s.gamma_p if uses_gamma_p(s.method) else None, s.gamma, r.settings],
                sort_keys=True, default=str,
            )  # fmt: skip
            groups.setdefault(key, []).append(r)
        else:
            singles.append([r])
    for key, runs in groups.items():
        kept: dict[int, RunRecord] = {}
        for r in sorted(runs, key=lambda r: str(r.path)):
            kept.setdefault(r.summary.seed, r)
        if len(kept) < len(runs):
            left = sorted(str(r.path) for r in runs if kept[r.summary.seed] is not r)
            if notes is not None:
                s0 = kept[min(kept)].summary
                notes.append(
                    f"{s0.method} on {s0.dataset}: {len(runs) - len(kept)} rerun(s) of a seed left out (a seed counts "
                    f"once; the first run directory by name is used): {', '.join(left)}"
                )
            groups[key] = list(kept.values())
    rows = []
    for runs in [*groups.values(), *singles]:
        r0, s0 = runs[0], runs[0].summary
        columns = sorted({k for r in runs for k in r.values})
        rows.append(
            Row(
                dataset=s0.dataset, method=s0.method, fusion=s0.fusion,
                gamma_p=s0.gamma_p if uses_gamma_p(s0.method) else None,
                gamma=s0.gamma if uses_gamma_p(s0.method) else {}, status=r0.status,
                epochs_done=s0.epochs_done, epochs_planned=r0.epochs_planned,
                seeds=sorted(r.summary.seed for r in runs), runs=sorted(runs, key=lambda r: (r.summary.seed, str(r.path))),
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
    """selected_accuracy, accuracy, best_accuracy, macro_f1, branch/<m> (modalities in first-seen order), w, wall_seconds."""
    mods: list[str] = []
    for w in rows:
        for r in w.runs:
            for m in r.modalities:
                if m not in mods:
                    mods.append(m)
    return [*HIGHER_IS_BETTER, *(f"branch/{m}" for m in mods), "w", "wall_seconds"]


def _significantly_best(cands: list[Row]) -> Row | None:
    """The row with the highest headline mean, if a paired test says it beats every other row."""
    scored = [w for w in cands if HEADLINE in w.stats and w.stats[HEADLINE].mean is not None]
    if len(scored) < 2:
        return None
    top = max(scored, key=lambda w: w.stats[HEADLINE].mean)
    for w in cands:
        if w is not top:
            pr = paired(top, w)
            if not (pr.significant and pr.mean > 0):
                return None
    return top


def _mark_best(rows: list[Row]) -> None:
    """Per dataset, the highest mean of every accuracy-like column among complete rows (ties: all);
    the headline column only when that row is significantly better than each other (:func:`paired`)."""
    for ds in {w.dataset for w in rows}:
        cands = [w for w in rows if w.dataset == ds and w.status == "complete"]
        if len(cands) < 2:
            continue
        for col in metric_columns(cands):
            if col not in HIGHER_IS_BETTER and not col.startswith("branch/"):
                continue
            if col == HEADLINE:
                if (win := _significantly_best(cands)) is not None:
                    win.best.add(col)
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
