"""``pdmp report``: run directories and profiles -> tables (terminal, Markdown, CSV, JSON).

    from pdmp_cli.report import build, render
    rep = build(["runs"], method="pdmp,vanilla")
    for row in rep.rows:                       # one row per configuration, seeds aggregated
        row.method, row.gamma_p, row.n, row.stats["accuracy"].mean, row.stats["accuracy"].std
    print(render(rep, "markdown"))

A run directory (:mod:`pdmp_cli.rundir`) is read without torch. Complete runs of one
configuration (same dataset, method, fusion, gamma_p where the method uses it, gamma, and
every other training setting) are averaged over their seeds: mean, sample standard deviation
and n. A run that did not finish (running, interrupted, diverged, or without a summary.json)
is never averaged in: it gets its own row, marked with its status and epochs done. Unreadable
lines of metrics.jsonl (a killed run's cut-off tail) are skipped and said so in ``notes``.
Nothing here raises on a broken run; only a path that does not exist, a runs directory with
no runs, or a filter value no run has stops with a :class:`PdmpError`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from pdmp_cli import rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.rundir import EpochMetrics, RunSummary

FORMATS = ("table", "markdown", "csv", "json")
METHOD_ORDER = ("vanilla", "ogm-ge", "lr-scale", "pdmp")  # baselines first, as in the paper's tables
USES_GAMMA_P = {"pdmp", "lr-scale"}  # vanilla and ogm-ge ignore gamma_p
USES_OGM = {"ogm-ge"}
# spec fields that never change what a run computes (paths, worker processes), or identify it
NOT_SETTINGS = {"run_dir", "runs_root", "profile", "num_workers", "data_root", "dataset", "seed"}
# metric columns averaged over seeds; the first four (and each branch) get a "best" highlight
HIGHER_IS_BETTER = ("accuracy", "best_accuracy", "macro_f1")


# -----------------------------------------------------------------------------------------------
# one run directory


@dataclass
class RunRecord:
    """One run directory as read from disk (whatever state it is in)."""

    path: Path
    dataset: str
    method: str
    fusion: str
    encoder: str
    gamma_p: float
    gamma: dict[str, float]
    seed: int
    status: str  # complete | running | interrupted | diverged | unknown (no readable summary.json)
    epochs_done: int
    epochs_planned: int | None
    values: dict[str, float | None]  # accuracy, best_accuracy, macro_f1, w, wall_seconds, branch/<m>
    best_epoch: int | None
    metrics: list[EpochMetrics]
    settings: dict  # spec fields that change results, minus the ones shown as columns
    message: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def modalities(self) -> list[str]:
        return [k.split("/", 1)[1] for k in self.values if k.startswith("branch/")]


def settings_key(spec: dict) -> dict:
    """The spec fields that change what a run computes, with those its method ignores removed.

    ``gamma_p`` is dropped for methods that do not use it (vanilla, ogm-ge) and the OGM-GE fields
    for every other method, so e.g. a vanilla run matches whatever gamma_p it was started with.
    """
    s = {k: v for k, v in spec.items() if k not in NOT_SETTINGS}
    method = s.get("method")
    if method not in USES_GAMMA_P:
        s.pop("gamma_p", None)
    if method not in USES_OGM:
        for k in ("ogm_alpha", "ogm_start", "ogm_end"):
            s.pop(k, None)
    return s


def spec_with_defaults(spec: dict) -> dict:
    """A saved spec.json as this version of pdmp reads it: a field added since the run was
    written takes its default (the behaviour the run had), a field no longer known is dropped.
    So runs from before e.g. ``precision`` existed still match new runs with the default."""
    from pydantic_core import PydanticUndefined

    from pdmp_cli.specs import TrainSpec

    out = {}
    for name, f in TrainSpec.model_fields.items():
        if name in spec:
            out[name] = spec[name]
        elif f.default is not PydanticUndefined:
            out[name] = f.default
    return out


def is_run_dir(path: Path) -> bool:
    return any((path / n).is_file() for n in (rundir.SPEC, rundir.SUMMARY, rundir.METRICS))


def _read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"{path}: unreadable ({e.__class__.__name__}); ignored")
        return None
    if not isinstance(obj, dict):
        notes.append(f"{path}: not a JSON object; ignored")
        return None
    return obj


def _dataset_name(name: str) -> str:
    return Path(name).stem if name.endswith(".toml") else name


def read_run(path: str | os.PathLike, notes: list[str] | None = None) -> RunRecord | None:
    """Read one run directory; problems go to ``notes``. None when too little is left to show."""
    notes = notes if notes is not None else []
    p = Path(path)
    metrics, bad = rundir.read_metrics(p)
    if bad:
        notes.append(
            f"{p}: {bad} line{'s' if bad > 1 else ''} of {rundir.METRICS} could not be read "
            f"(cut off by a killed run?); shown from the {len(metrics)} readable epoch{'s' if len(metrics) != 1 else ''}"
        )
    spec = _read_json(p / rundir.SPEC, notes)
    raw = _read_json(p / rundir.SUMMARY, notes)
    summary = None
    if raw is not None:
        try:
            summary = RunSummary.model_validate(raw)
        except ValidationError as e:
            notes.append(f"{p / rundir.SUMMARY}: not a run summary ({e.error_count()} problems); read from spec.json and metrics")

    if summary is not None:
        values = {
            "accuracy": summary.final_accuracy,
            "best_accuracy": summary.best_accuracy,
            "macro_f1": summary.final_macro_f1,
            "w": summary.final_w,
            "wall_seconds": summary.wall_seconds,
        }
        values.update({f"branch/{m}": a for m, a in summary.final_branch_accuracy.items()})
        if not summary.final_branch_accuracy and metrics:
            values.update({f"branch/{m}": a for m, a in metrics[-1].branch_accuracy.items()})
        if summary.epochs_done != len(metrics) and (p / rundir.METRICS).is_file():
            notes.append(
                f"{p}: summary.json says {summary.epochs_done} epochs, {rundir.METRICS} has {len(metrics)} readable; "
                "the table uses summary.json, the curves metrics.jsonl"
            )
        rec = RunRecord(
            path=p, dataset=summary.dataset, method=summary.method, fusion=summary.fusion, encoder=summary.encoder,
            gamma_p=summary.gamma_p, gamma=dict(summary.gamma), seed=summary.seed, status=summary.status,
            epochs_done=summary.epochs_done, epochs_planned=summary.epochs_planned, values=values,
            best_epoch=summary.best_epoch, metrics=metrics, settings={}, message=summary.message,
        )  # fmt: skip
    elif spec is not None and all(k in spec for k in ("method", "fusion", "gamma_p", "seed")):
        notes.append(f"{p}: no readable summary.json; shown from spec.json and {len(metrics)} epochs of metrics")
        best = max(metrics, key=lambda m: m.eval_accuracy) if metrics else None
        last = metrics[-1] if metrics else None
        values = {
            "accuracy": last.eval_accuracy if last else None,
            "best_accuracy": best.eval_accuracy if best else None,
            "macro_f1": last.eval_macro_f1 if last else None,
            "w": last.w if last else None,
            "wall_seconds": sum(m.epoch_seconds for m in metrics) if metrics else None,
        }
        if last:
            values.update({f"branch/{m}": a for m, a in last.branch_accuracy.items()})
        rec = RunRecord(
            path=p, dataset=_dataset_name(str(spec.get("dataset") or "?")), method=spec["method"],
            fusion=spec["fusion"], encoder=str(spec.get("encoder", "?")), gamma_p=float(spec["gamma_p"]),
            gamma=dict(last.gamma) if last and spec["method"] == "pdmp" else {}, seed=int(spec["seed"]),
            status="unknown", epochs_done=len(metrics), epochs_planned=spec.get("epochs"), values=values,
            best_epoch=best.epoch if best else None, metrics=metrics, settings={},
        )  # fmt: skip
    else:
        notes.append(f"{p}: neither a readable summary.json nor spec.json; not shown")
        return None
    if spec is not None:
        rec.settings = {
            k: v for k, v in settings_key(spec_with_defaults(spec)).items() if k not in ("method", "fusion", "gamma_p")
        }
    else:
        rec.settings = {"encoder": rec.encoder, "epochs": rec.epochs_planned}
    return rec


def find_run_dirs(root: Path) -> list[Path]:
    """``root`` if it is a run directory, else every run directory below it (sorted)."""
    if is_run_dir(root):
        return [root]
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        if d != root and is_run_dir(d):
            found.append(d)
            dirnames[:] = []  # nothing to find inside a run (checkpoints/)
            continue
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
    return sorted(found)


# -----------------------------------------------------------------------------------------------
# aggregation over seeds


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
    return (METHOD_ORDER.index(m), m) if m in METHOD_ORDER else (len(METHOD_ORDER), m)


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


# -----------------------------------------------------------------------------------------------
# profiles


@dataclass
class ProfileRow:
    path: Path
    profile: object  # pdmp_cli.profile.Profile

    def as_dict(self) -> dict:
        p = self.profile
        return {
            "path": str(self.path),
            "dataset": p.dataset,
            "source": p.provenance.source,
            "subset": p.subset,
            "seed": p.seed,
            "modalities": list(p.modalities),
            "early_epochs": p.settings.get("early_epochs"),
            "early_accuracy": {m: r.early_accuracy for m, r in p.results.items()},
            "late_accuracy": {m: r.late_accuracy for m, r in p.results.items()},
            "eval_size": next((r.eval_size for r in p.results.values()), None),
            "early_ranking": list(p.early_ranking),
            "late_ranking": list(p.late_ranking),
            "performance_dominant": p.performance_dominant,
            "optimization_dominant": p.optimization_dominant,
            "optimization_criterion": p.optimization_criterion,
            "uncertain": dict(p.uncertain),
        }


def read_profiles(paths: list[str | os.PathLike], notes: list[str]) -> list[ProfileRow]:
    """Profiles named, or every profile JSON in a named directory (``*.spec.json`` skipped).

    A file named explicitly must be a valid profile (PdmpError otherwise); in a directory,
    JSON files that are not profiles are passed over and broken profiles noted.
    """
    from pdmp_cli.profile import Profile

    out = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            for f in sorted(p.glob("*.json")):
                if f.name.endswith(".spec.json"):
                    continue
                raw = _read_json(f, notes)
                if raw is None or "performance_dominant" not in raw:
                    continue
                try:
                    out.append(ProfileRow(f, Profile.load(f)))
                except PdmpError as e:
                    notes.append(f"{e}; not shown")
        elif p.is_file():
            out.append(ProfileRow(p, Profile.load(p)))
        else:
            raise PdmpError(f"profile {p} does not exist; give a profile JSON or a folder of them (e.g. profiles/)", 2)
    return out


# -----------------------------------------------------------------------------------------------
# the report


@dataclass
class Report:
    sources: list[Path]
    records: list[RunRecord]  # after the filters
    rows: list[Row]
    profiles: list[ProfileRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _values(s: str | list[str] | None) -> list[str] | None:
    if s is None:
        return None
    items = s if isinstance(s, list) else s.split(",")
    items = [x.strip() for x in items if x.strip()]
    return items or None


def _filter(records: list[RunRecord], attr: str, wanted: list[str] | None, flag: str, sources) -> list[RunRecord]:
    if wanted is None:
        return records
    present = sorted({getattr(r, attr) for r in records})
    unknown = [w for w in wanted if w not in present]
    if unknown:
        where = ", ".join(str(s) for s in sources)
        raise PdmpError(
            f"no run has {flag} {', '.join(unknown)} under {where}; "
            f"{attr}s present: {', '.join(present) if present else 'none'}",
            exit_code=2,
        )
    return [r for r in records if getattr(r, attr) in wanted]


def build(
    runs: list[str | os.PathLike] | None = None,
    *,
    dataset: str | list[str] | None = None,
    method: str | list[str] | None = None,
    fusion: str | list[str] | None = None,
    profiles: list[str | os.PathLike] | None = None,
    require_runs: bool = True,
) -> Report:
    """Read every run below ``runs`` (default ``["runs"]``; none when only ``profiles`` are
    given) and the ``profiles``, apply the filters (comma-separated values allowed) and aggregate.

    Raises PdmpError: a path that does not exist, no run found (when ``require_runs``), or a
    filter value that no run has (the message lists the values present).
    """
    notes: list[str] = []
    if runs is None:
        runs = [] if profiles else ["runs"]
    sources = [Path(r) for r in runs]
    for s in sources:
        if not s.exists():
            raise PdmpError(f"{s} does not exist; give the runs directory `pdmp train` wrote to (default runs/)", 2)
        if not s.is_dir():
            raise PdmpError(f"{s} is not a directory; give a runs directory or one run directory", 2)
    records: list[RunRecord] = []
    seen: set[Path] = set()
    for s in sources:
        for d in find_run_dirs(s):
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            rec = read_run(d, notes)
            if rec is not None:
                records.append(rec)
    if sources and not records and require_runs:
        where = ", ".join(str(s) for s in sources)
        hint = f" ({len(notes)} unreadable: {notes[0]})" if notes else ""
        raise PdmpError(
            f"no runs found under {where}{hint}; train one with `pdmp train --profile P` or run `pdmp demo`", 1
        )
    prows = read_profiles(list(profiles or []), notes)
    if sources:
        records = _filter(records, "dataset", _values(dataset), "--dataset", sources)
        records = _filter(records, "method", _values(method), "--method", sources)
        records = _filter(records, "fusion", _values(fusion), "--fusion", sources)
        if not records and require_runs:
            raise PdmpError("no run matches all of the filters together; drop one of --dataset, --method, --fusion", 2)
    if _values(dataset) and prows:
        kept = [p for p in prows if p.profile.dataset in _values(dataset)]
        if not kept and not sources:
            present = sorted({p.profile.dataset for p in prows})
            raise PdmpError(f"no profile has --dataset {dataset}; datasets present: {', '.join(present)}", 2)
        prows = kept
    for r in records:
        if not r.complete:
            notes.append(_status_note(r))
    rows = aggregate(records)
    for w in rows:
        repeated = sorted({s for s in w.seeds if w.seeds.count(s) > 1})
        if repeated:
            notes.append(
                f"{w.label} on {w.dataset} averages {w.n} runs, several with the same seed "
                f"({', '.join(map(str, repeated))}): the same run repeated? n counts runs, not seeds"
            )
    return Report(sources=sources, records=records, rows=rows, profiles=prows, notes=notes)


def _status_note(r: RunRecord) -> str:
    planned = f" of {r.epochs_planned}" if r.epochs_planned else ""
    what = {
        "running": f"is marked running ({r.epochs_done}{planned} epochs); if no `pdmp train` is running it, "
        f"it was killed: continue it with `pdmp train --resume {r.path}`",
        "interrupted": f"was interrupted after {r.epochs_done}{planned} epochs; continue it with `pdmp train --resume {r.path}`",
        "diverged": f"diverged after {r.epochs_done}{planned} epochs" + (f": {r.message}" if r.message else ""),
        "unknown": f"has no summary ({r.epochs_done}{planned} epochs in metrics.jsonl)",
    }.get(r.status, f"has status {r.status}")
    return f"{r.path} {what}; shown on its own row, not averaged"


# -----------------------------------------------------------------------------------------------
# rendering


COLUMN_TITLES = {
    "accuracy": "acc %",
    "best_accuracy": "best acc %",
    "macro_f1": "macro-F1 %",
    "w": "w",
    "wall_seconds": "wall s",
}


SHORT_TITLES = {"accuracy": "acc", "best_accuracy": "best", "macro_f1": "F1", "w": "w", "wall_seconds": "wall s"}


def column_title(col: str, short: bool = False) -> str:
    """``acc %``, ``audio acc %``...; ``short``: ``acc``, ``audio`` (the table's caption says %)."""
    if col.startswith("branch/"):
        m = col.split("/", 1)[1]
        return m if short else f"{m} acc %"
    return (SHORT_TITLES if short else COLUMN_TITLES)[col]


def fmt_stat(s: Stat | None, col: str) -> str:
    """``85.2 ± 1.6`` (accuracies in %), ``0.41`` (w), ``31`` (seconds); ``-`` when missing."""
    if s is None or s.mean is None:
        return "-"
    if col == "w":
        f = lambda x: f"{x:.2f}"  # noqa: E731
    elif col == "wall_seconds":
        f = lambda x: f"{x:.0f}"  # noqa: E731
    else:
        f = lambda x: f"{100 * x:.1f}"  # noqa: E731
    return f(s.mean) + (f" ± {f(s.std)}" if s.std is not None else "")


def fmt_gamma(g: dict[str, float]) -> str:
    return ", ".join(f"{m} {v:.3g}" for m, v in g.items()) if g else "-"


def gamma_pattern(w: Row) -> str | None:
    """pdmp's γ per modality in terms of γp (``visual ×γp, audio ×1/γp``); None if not so."""
    if not w.gamma or w.gamma_p is None:
        return None
    parts = []
    for m, v in w.gamma.items():
        if math.isclose(v, w.gamma_p):
            parts.append(f"{m} ×γp")
        elif math.isclose(v, 1 / w.gamma_p):
            parts.append(f"{m} ×1/γp")
        else:
            return None
    return ", ".join(parts)


def fmt_status(w: Row, short: bool = False) -> str:
    """``complete``; ``interrupted (3/10 epochs)`` (``short``: ``interrupted``, the epochs column says the rest)."""
    if w.status == "complete" or (short and w.status != "unknown"):
        return w.status
    if short:
        return "no summary"
    planned = f"/{w.epochs_planned}" if w.epochs_planned else ""
    name = "no summary" if w.status == "unknown" else w.status
    return f"{name} ({w.epochs_done}{planned} epochs)"


def _show_settings(rows: list[Row]) -> bool:
    return any(w.variant for w in rows)


def table_cells(rows: list[Row], compact: bool = False) -> tuple[list[str], list[list[tuple[str, bool]]], list[str]]:
    """Header, cells (text, is_best) and context, shared by the terminal and Markdown tables.

    ``compact`` (the terminal) moves a column whose value is the same in every row into the
    context (``dataset synthetic``, ``concat fusion``...) and drops empty γp / γ columns, so the
    table fits a terminal; the Markdown table keeps every column.
    """
    cols = metric_columns(rows)

    def epochs(w):
        return str(w.epochs_done) if w.status == "complete" else f"{w.epochs_done}/{w.epochs_planned or '?'}"

    fields = [
        ("dataset", lambda w: w.dataset),
        ("method", lambda w: w.method),
        ("fusion", lambda w: w.fusion),
        ("γp", lambda w: f"{w.gamma_p:g}" if w.gamma_p is not None else "-"),
        ("γ", lambda w: fmt_gamma(w.gamma)),
    ]
    if _show_settings(rows):
        fields.append(("settings", lambda w: ", ".join(f"{k}={v}" for k, v in w.variant.items()) or "-"))
    fields.append(("n", lambda w: str(w.n)))
    if compact:  # the status of an unfinished run goes beside its epochs: one column fewer
        tail = [("epochs", lambda w: epochs(w) + ("" if w.status == "complete" else f" {fmt_status(w, short=True)}"))]
    else:
        tail = [("epochs", epochs), ("status", fmt_status)]
    context = []
    if compact:
        words = {"dataset": "dataset {}", "fusion": "{} fusion", "n": "n = {} run(s) per row", "epochs": "{} epochs"}
        kept = []
        patterns = {gamma_pattern(w) for w in rows if w.gamma and w.gamma_p != 1}
        for name, get in [*fields, *tail]:
            vals = {get(w) for w in rows}
            if name in words and len(vals) == 1 and len(rows) > 1:
                context.append(words[name].format(vals.pop()))
            elif name in ("γp", "γ") and vals == {"-"}:
                continue
            elif name == "γ" and len(patterns) == 1 and None not in patterns:
                context.append(f"pdmp's γ: {patterns.pop()}")
            else:
                kept.append((name, get))
        fields, tail = [f for f in kept if f[0] != "epochs"], [f for f in kept if f[0] == "epochs"]
    header = [name for name, _ in fields] + [column_title(c, compact) for c in cols] + [name for name, _ in tail]
    body = [
        [(get(w), False) for _, get in fields]
        + [(fmt_stat(w.stats.get(c), c), c in w.best) for c in cols]
        + [(get(w), False) for _, get in tail]
        for w in rows
    ]
    return header, body, context


def profile_cells(prows: list[ProfileRow], compact: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, cells and context of the profiles table.

    ``compact`` (the terminal): early and late accuracy in one column per modality, a column
    with the same value in every row moved to the context, and the rankings left out when
    every profile has two modalities (m_p and m_o then say the same).
    """
    mods: list[str] = []
    for pr in prows:
        for m in pr.profile.modalities:
            if m not in mods:
                mods.append(m)
    ds = [pr.as_dict() for pr in prows]

    def pct(x):
        return f"{100 * x:.1f}" if x is not None else "-"

    def unc(d):
        names = [k.replace("_ranking", "") for k, v in d["uncertain"].items() if v]
        return ", ".join(names) if names else ("no" if d["uncertain"] else "-")

    def crit(d):
        short = {"unimodal-early": "early", "multimodal-probe": "probe"}.get(d["optimization_criterion"], d["optimization_criterion"])
        return f"{d['optimization_dominant'] or 'unknown'} ({short if compact else d['optimization_criterion']})"

    fields = [
        ("profile", lambda pr, d: pr.path.name if compact else str(pr.path)),
        ("dataset", lambda pr, d: d["dataset"]),
        ("source", lambda pr, d: d["source"]),
        ("subset", lambda pr, d: f"{d['subset']:g}" if d["subset"] is not None else "-"),
    ]
    if compact:
        fields += [
            (f"{m} early → late %", lambda pr, d, m=m: f"{pct(d['early_accuracy'].get(m))} → {pct(d['late_accuracy'].get(m))}")
            for m in mods
        ]
    else:
        fields += [(f"{m} early %", lambda pr, d, m=m: pct(d["early_accuracy"].get(m))) for m in mods]
        fields += [(f"{m} late %", lambda pr, d, m=m: pct(d["late_accuracy"].get(m))) for m in mods]
    rankings = [
        ("late ranking", lambda pr, d: " > ".join(d["late_ranking"]) or "-"),
        ("early ranking", lambda pr, d: " > ".join(d["early_ranking"]) or "-"),
    ]
    if not compact or any(len(d["modalities"]) > 2 for d in ds):
        fields += rankings
    fields += [
        ("m_p", lambda pr, d: d["performance_dominant"]),
        ("m_o", lambda pr, d: crit(d)),
        ("uncertain", lambda pr, d: unc(d)),
    ]
    context = []
    if compact:
        folders = {str(pr.path.parent) for pr in prows}
        if len(folders) == 1:
            context.append(f"in {folders.pop()}/")
        else:
            fields[0] = ("profile", lambda pr, d: _short(pr.path))
    if compact and len(prows) > 1:
        kept = []
        for name, get in fields:
            vals = {get(pr, d) for pr, d in zip(prows, ds)}
            if name in ("dataset", "source") and len(vals) == 1:
                context.append(f"{name} {vals.pop()}")
            else:
                kept.append((name, get))
        fields = kept
    header = [name for name, _ in fields]
    body = [[get(pr, d) for _, get in fields] for pr, d in zip(prows, ds)]
    return header, body, context


def rich_tables(rep: Report, title: str = "Runs (mean ± std over seeds)", profiles: bool = True):
    """The terminal rendering: a rich Group of the runs table, the profiles table and the notes."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    parts = []
    if rep.rows:
        header, body, context = table_cells(rep.rows, compact=True)
        caption = (
            "% of the test split: final accuracy (acc), best epoch's (best), final macro-F1 (F1), each "
            "branch's final accuracy; w: final Eq. 5; bold green: best mean of a column in a dataset"
        )
        numeric = {"γp", "n", "epochs"} | {column_title(c, True) for c in metric_columns(rep.rows)}

        def make(narrow: bool):
            t = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold underline")
            for i, h in enumerate(header):
                t.add_column(h, justify="right" if h in numeric else "left", min_width=_word(h, *(r[i][0] for r in body)))
            for w, cells in zip(rep.rows, body):
                texts = [c.replace(" ± ", "\n± ") if narrow else c for c, _ in cells]
                t.add_row(
                    *(f"[bold green]{escape(c)}[/]" if best else escape(c) for c, (_, best) in zip(texts, cells)),
                    style=None if w.status == "complete" else "yellow",
                )
            return t

        parts.append(f"[bold]{escape(title)}[/]")
        if context:
            parts.append(escape(" · ".join(context)))
        parts.append(_FitToWidth(lambda: make(False), lambda: make(True)))
        parts.append(f"[dim]{escape(caption)}[/]")
    if rep.profiles and profiles:
        header, body, context = profile_cells(rep.profiles, compact=True)
        parts.append("[bold]Dominance profiles (unimodal accuracy on the evaluation split)[/]")
        if context:
            parts.append(escape(" · ".join(context)))
        t = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold underline")
        for i, h in enumerate(header):
            t.add_column(h, justify="right" if "%" in h else "left", min_width=_word(h, *(row[i] for row in body)))
        for cells in body:
            t.add_row(*(escape(c) for c in cells))
        parts.append(t)
    parts.extend(f"[yellow]note:[/] {escape(n)}" for n in rep.notes)
    return Group(*parts)


class _FitToWidth:
    """Renders the first layout whose natural width fits the console (the last one otherwise):
    a narrow terminal gets ``mean`` and ``± std`` on two lines instead of a cropped table."""

    def __init__(self, *layouts):
        self.layouts = layouts

    def __rich_console__(self, console, options):
        for make in self.layouts[:-1]:
            t = make()
            if t.__rich_measure__(console, options).maximum <= options.max_width:
                yield t
                return
        yield self.layouts[-1]()


def _short(p: Path) -> str:
    """A path relative to the working directory when it is below it, else as given."""
    try:
        rel = os.path.relpath(p)
    except ValueError:  # another drive (Windows)
        return str(p)
    return str(p) if rel.startswith("..") else rel


def _word(*texts: str) -> int:
    """The longest word in a column: narrower, the column would break a word (or a number)."""
    return max((len(w) for t in texts for w in t.split()), default=1)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown(rep: Report) -> str:
    out = []
    for header, body in (_md_runs(rep), _md_profiles(rep)):
        if not body:
            continue
        if out:
            out.append("")
        out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        out.extend("| " + " | ".join(body_row) + " |" for body_row in body)
    return "\n".join(out) + "\n"


def _md_runs(rep: Report):
    if not rep.rows:
        return [], []
    header, body, _ = table_cells(rep.rows)
    return header, [[f"**{_md_escape(c)}**" if best else _md_escape(c) for c, best in cells] for cells in body]


def _md_profiles(rep: Report):
    if not rep.profiles:
        return [], []
    header, body, _ = profile_cells(rep.profiles)
    return header, [[_md_escape(c) for c in cells] for cells in body]


def row_dict(w: Row) -> dict:
    cols = [c for c in metric_columns([w])]
    return {
        "dataset": w.dataset,
        "method": w.method,
        "fusion": w.fusion,
        "gamma_p": w.gamma_p,
        "gamma": w.gamma,
        "status": w.status,
        "n": w.n,
        "seeds": w.seeds,
        "epochs_done": w.epochs_done,
        "epochs_planned": w.epochs_planned,
        "settings": w.settings,
        "variant": w.variant,
        "metrics": {c: vars(w.stats[c]) for c in cols if c in w.stats},
        "best": sorted(w.best),
        "runs": [str(r.path) for r in w.runs],
    }


def to_json(rep: Report) -> str:
    return json.dumps(
        {
            "rows": [row_dict(w) for w in rep.rows],
            "profiles": [p.as_dict() for p in rep.profiles],
            "notes": rep.notes,
        },
        indent=2,
        default=str,
    )


def to_csv(rep: Report) -> str:
    """The runs table, numbers unformatted (fractions, seconds); std empty for n = 1.

    With only profiles, the profiles table. Both at once do not fit one CSV table.
    """
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    if rep.rows and rep.profiles:
        raise PdmpError("--format csv holds one table: report runs or --profile, not both at once", 2)
    if rep.profiles:
        header, body, _ = profile_cells(rep.profiles)
        wr.writerow(header)
        wr.writerows(body)
        return buf.getvalue()
    cols = metric_columns(rep.rows)
    names = [c.replace("/", "_") for c in cols]
    wr.writerow(
        ["dataset", "method", "fusion", "gamma_p", "gamma", "settings", "status", "n", "seeds", "epochs_done",
         "epochs_planned", *(f"{n}_{k}" for n in names for k in ("mean", "std")), "best", "runs"]
    )  # fmt: skip
    for w in rep.rows:
        nums = []
        for c in cols:
            s = w.stats.get(c)
            nums += [_num(s.mean if s else None), _num(s.std if s else None)]
        wr.writerow(
            [w.dataset, w.method, w.fusion, _num(w.gamma_p), ";".join(f"{m}={v:g}" for m, v in w.gamma.items()),
             ";".join(f"{k}={v}" for k, v in w.variant.items()), w.status, w.n, ";".join(map(str, w.seeds)),
             w.epochs_done, _num(w.epochs_planned), *nums, ";".join(sorted(w.best)),
             ";".join(str(r.path) for r in w.runs)]
        )  # fmt: skip
    return buf.getvalue()


def _num(x) -> str:
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)


def render(rep: Report, fmt: str = "table"):
    """``table`` -> a rich renderable; ``markdown``, ``csv``, ``json`` -> a string."""
    if fmt not in FORMATS:
        raise PdmpError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}", 2)
    if fmt == "table":
        return rich_tables(rep)
    if fmt == "markdown":
        return markdown(rep)
    if fmt == "csv":
        return to_csv(rep)
    return to_json(rep)


# -----------------------------------------------------------------------------------------------
# the sweep table (the paper's Table V: accuracy against gamma_p)


def sweep_grid(rows: list[Row], col: str = "accuracy") -> tuple[list[float], list[tuple[Row | None, dict]]]:
    """γp values (sorted) and, per (dataset, method, fusion, variant), the row of each γp.

    Methods that ignore γp (vanilla, ogm-ge) map under the key ``None``.
    """
    gps = sorted({w.gamma_p for w in rows if w.gamma_p is not None and w.status == "complete"})
    lines: dict[tuple, dict] = {}
    for w in rows:
        if w.status != "complete":
            continue
        key = (w.dataset, w.method, w.fusion, json.dumps(w.variant, sort_keys=True, default=str))
        lines.setdefault(key, {})[w.gamma_p] = w
    return gps, [(next(iter(cells.values())), cells) for cells in lines.values()]


def sweep_table(rows: list[Row], col: str = "accuracy", title: str | None = None):
    """A rich table: one line per (dataset, method, fusion), one column per γp; best per line bold."""
    from rich.markup import escape
    from rich.table import Table

    gps, lines = sweep_grid(rows, col)
    t = Table(title=title or f"{column_title(col)} against γp (mean ± std over seeds, n in brackets)")
    for h in ("dataset", "method", "fusion"):
        t.add_column(h)
    if any(w.variant for _, cells in lines for w in cells.values()):
        t.add_column("settings")
    for g in gps:
        t.add_column(f"γp {g:g}", justify="right")
    if any(None in cells for _, cells in lines):
        t.add_column("no γp", justify="right")
    show_settings = len(t.columns) > 3 and t.columns[3].header == "settings"
    for w0, cells in lines:
        means = {g: w.stats[col].mean for g, w in cells.items() if col in w.stats and w.stats[col].mean is not None}
        top = max(means.values()) if len(means) > 1 else None

        def cell(g):
            w = cells.get(g)
            if w is None:
                return ""
            text = f"{fmt_stat(w.stats.get(col), col)} ({w.n})"
            return f"[bold green]{escape(text)}[/]" if top is not None and means.get(g) == top else escape(text)

        fixed = [w0.dataset, w0.method, w0.fusion]
        if show_settings:
            fixed.append(", ".join(f"{k}={v}" for k, v in w0.variant.items()) or "-")
        extra = [cell(None)] if any(None in c for _, c in lines) else []
        t.add_row(*(escape(x) for x in fixed), *(cell(g) for g in gps), *extra)
    return t
