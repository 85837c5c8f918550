"""Reading run directories and profiles for ``pdmp report`` (no torch).

A run directory (:mod:`pdmp_cli.rundir`) is read whatever state it is in: a run that did not
finish (running, interrupted, diverged, or without a summary.json) still gives a
:class:`RunRecord`, marked with its status. Unreadable lines of metrics.jsonl (a killed run's
cut-off tail) are skipped and said so in ``notes``. Nothing here raises on a broken run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError

from pdmp_cli import rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.rundir import EpochMetrics, RunSummary



TUNED = "tuned.json"  # written by pdmp tune beside a final run of the tuned Table I (pdmp_cli.tune.TUNED)
# spec fields that never change what a run computes (paths, worker processes), or identify it; and
# threads, an execution detail like the machine (another count may differ in the last bits)
NOT_SETTINGS = {"run_dir", "runs_root", "profile", "num_workers", "data_root", "dataset", "seed", "threads",
                "tensorboard"}  # tensorboard: logging only
# per lr_schedule, the schedule fields it never reads (set or not, the run computes the same)
_LR_FIELDS = {"lr_step_size", "lr_step_gamma", "lr_min", "lr_cosine_epochs"}
INERT = {
    "none": _LR_FIELDS,
    "step": _LR_FIELDS - {"lr_step_size", "lr_step_gamma"},
    "cosine": _LR_FIELDS - {"lr_min", "lr_cosine_epochs"},
}


@dataclass
class RunRecord:
    """One run directory as read from disk (whatever state it is in).

    ``summary`` is its summary.json, or, when that is missing or unreadable, the summary
    :func:`pdmp_cli.rundir.summarize` (the function ``pdmp train`` writes it with) makes of spec.json
    and metrics.jsonl, with status ``unknown``.
    """

    path: Path
    summary: RunSummary
    metrics: list[EpochMetrics]  # the readable lines of metrics.jsonl
    spec: dict | None  # spec.json as written (None: missing or unreadable)
    settings: dict  # spec fields that change results, minus the ones shown as columns
    tuned: dict | None = None  # tuned.json of a tuned Table I's final run: the setting and the budget it had

    @property
    def status(self) -> str:
        """complete | running | interrupted | diverged | unknown (no readable summary.json)"""
        return self.summary.status

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def epochs_planned(self) -> int | None:
        """None: not known (a summary rebuilt from a spec.json that does not say)."""
        return self.summary.epochs_planned or None

    @cached_property
    def values(self) -> dict[str, float | None]:
        """The table's numbers: selected_accuracy (the headline: test accuracy at the epoch chosen on
        validation), accuracy (final epoch's), best_accuracy (best test epoch: the paper's convention),
        macro_f1, w, wall_seconds, branch/<m>."""
        s = self.summary
        out = {
            "selected_accuracy": s.selected_accuracy,
            "accuracy": s.final_accuracy,
            "best_accuracy": s.best_accuracy,
            "macro_f1": s.final_macro_f1,
            "w": s.final_w,
            # a rebuilt summary's wall time is its epochs' (none: not known)
            "wall_seconds": s.wall_seconds if s.status != "unknown" or self.metrics else None,
        }
        branch = s.final_branch_accuracy or (self.metrics[-1].branch_accuracy if self.metrics else {})
        out.update({f"branch/{m}": a for m, a in branch.items()})
        return out

    @property
    def modalities(self) -> list[str]:
        return [k.split("/", 1)[1] for k in self.values if k.startswith("branch/")]


def settings_key(spec: dict) -> dict:
    """The spec fields that change what a run computes, with those its method ignores removed
    (and the lr-schedule fields its ``lr_schedule`` never reads, :data:`INERT`).

    ``gamma_p`` is dropped for methods whose class does not read it, and ``method_args`` keeps only
    the run's own method's hyperparameters, so e.g. a vanilla run matches whatever gamma_p or
    other methods' settings it was started with.
    """
    from pdmp_cli.methods import uses_gamma_p

    s = {k: v for k, v in spec.items() if k not in NOT_SETTINGS}
    for k in INERT.get(s.get("lr_schedule", "none"), ()):  # fields the run's lr schedule never reads
        s.pop(k, None)
    method = s.get("method")
    if not uses_gamma_p(str(method)):
        s.pop("gamma_p", None)
    args = s.get("method_args") or {}
    s["method_args"] = {method: args[method]} if method in args else {}
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
        if summary.epochs_done != len(metrics) and (p / rundir.METRICS).is_file():
            notes.append(
                f"{p}: summary.json says {summary.epochs_done} epochs, {rundir.METRICS} has {len(metrics)} readable; "
                "the table uses summary.json, the curves metrics.jsonl"
            )
    elif spec is not None and all(k in spec for k in ("method", "fusion", "gamma_p", "seed")):
        notes.append(f"{p}: no readable summary.json; shown from spec.json and {len(metrics)} epochs of metrics")
        summary = rebuild_summary(p, spec, metrics)
    else:
        notes.append(f"{p}: neither a readable summary.json nor spec.json; not shown")
        return None
    if spec is not None:
        settings = {
            k: v for k, v in settings_key(spec_with_defaults(spec)).items() if k not in ("method", "fusion", "gamma_p")
        }
    else:
        settings = {"encoder": summary.encoder, "epochs": summary.epochs_planned}
    tuned = _read_json(p / TUNED, notes) if (p / TUNED).is_file() else None
    return RunRecord(path=p, summary=summary, metrics=metrics, spec=spec, settings=settings, tuned=tuned)


def rebuild_summary(run_dir: Path, spec: dict, metrics: list[EpochMetrics]) -> RunSummary:
    """The summary.json of a run directory without a readable one: :func:`pdmp_cli.rundir.summarize`
    (as ``pdmp train`` calls it) of its readable epochs and spec.json, with status ``unknown``.

    What the run directory does not say is left out (the command, the version, the validation split:
    with it a run without epochs would claim a selection on validation it never made) or taken from
    what it does: the wall time is the epochs' sum, the profile's sha256 that of its profile.json;
    a name the spec lacks is ``?``, planned epochs it lacks 0 (:attr:`RunRecord.epochs_planned`: None).
    """
    from pdmp_cli.methods import uses_gamma_p

    last = metrics[-1] if metrics else None
    prof = Path(run_dir) / rundir.PROFILE
    return rundir.summarize(
        metrics,
        dataset=_dataset_name(str(spec.get("dataset") or "?")),
        method=spec["method"],
        fusion=spec["fusion"],
        encoder=str(spec.get("encoder", "?")),
        gamma_p=float(spec["gamma_p"]),
        gamma=dict(last.gamma) if last and uses_gamma_p(str(spec["method"])) else {},
        seed=int(spec["seed"]),
        profile_sha256=hashlib.sha256(prof.read_bytes()).hexdigest() if prof.is_file() else "",
        status="unknown",
        epochs_planned=int(spec.get("epochs") or 0),
        wall_seconds=sum(m.epoch_seconds for m in metrics),
    )


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
            "still_rising": {m: r.still_rising for m, r in p.results.items()},
            "validation": p.validation,
            "seeds": p.seeds,
            "ranking_frequency": p.ranking_frequency,
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
