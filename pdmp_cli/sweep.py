"""``pdmp sweep``: a grid of training runs (γp × seeds × fusion × method), resumable by design.

    from pdmp_cli.sweep import base_spec, run
    base = base_spec("profiles/synthetic.json")
    result = run(base, gamma_p=[1, 5, 10, 15], seeds=[0, 1, 2], methods=["pdmp", "vanilla"])
    result.trained, result.skipped, result.report.rows    # the sweep's runs, aggregated

Each grid point is an ordinary :func:`pdmp_cli.train.run` in ``runs_root``. A point is
skipped when a run directory below ``runs_root`` already holds it: the same resolved spec
(paths and worker count aside, see :func:`run_key`) and a profile naming the same dominant
modalities, finished (``complete``, or ``diverged``: the same settings diverge again). An
``interrupted`` one is resumed from its checkpoint. So a sweep stopped with Ctrl-C continues
where it stopped when the same command is given again. Methods that ignore γp (vanilla,
ogm-ge) run once per (fusion, seed), whatever the γp list.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pdmp_cli import rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.report import USES_GAMMA_P, Report, _dataset_name, find_run_dirs, settings_key, spec_with_defaults
from pdmp_cli.specs import TrainSpec, dataset_defaults, resolve_spec

DONE = ("complete", "diverged")


def base_spec(profile: str, dataset: str | None = None, file_layer: dict | None = None, flags: dict | None = None) -> TrainSpec:
    """The TrainSpec ``pdmp train`` would resolve: the paper's settings < the dataset manifest's
    ``[defaults]`` < a spec file < flags; the dataset defaults to the profile's."""
    from pdmp_cli.profile import Profile

    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    name = dataset or (file_layer or {}).get("dataset")
    if name:
        defaults = dataset_defaults(name, TrainSpec)
    else:
        name = Profile.load(profile).dataset
        try:
            defaults = dataset_defaults(name, TrainSpec)
        except PdmpError:
            raise PdmpError(
                f"the profile's dataset {name!r} is not a built-in dataset name; pass --dataset with the path to its manifest .toml",
                exit_code=2,
            ) from None
    return resolve_spec(TrainSpec, defaults, file_layer, {"dataset": name, "profile": profile}, flags)


def parse_list(text: str | None, kind: type, flag: str) -> list | None:
    """``"1,5,10"`` -> ``[1.0, 5.0, 10.0]``; None stays None."""
    if text is None:
        return None
    try:
        items = [kind(x.strip()) for x in str(text).split(",") if x.strip()]
    except ValueError:
        what = "numbers" if kind is float else "integers" if kind is int else "values"
        raise PdmpError(f"{flag} must be comma-separated {what}, got {text!r}", 2) from None
    if not items:
        raise PdmpError(f"{flag} is empty; give at least one value, e.g. {flag} {'10' if kind is not str else 'concat'}", 2)
    return list(dict.fromkeys(items))


def expand_methods(names: list[str] | None, modalities: int | None = None) -> list[str] | None:
    """Method names with the sets ``all`` (every registered method) and ``paper`` (the rows of the
    paper's Table I) expanded, in the comparison order the method classes give (vanilla first,
    PDMP last); an unknown name is refused by the spec, listing the valid ones. With ``modalities``,
    a set leaves out the methods defined for fewer modalities (a name given alone still runs, and
    refuses with its reason)."""
    if names is None:
        return None
    from pdmp_cli.methods import METHODS

    def order(n: str) -> tuple:
        return (METHODS.get(n).table_order, n)

    def fits(n: str) -> bool:
        most = METHODS.get(n).max_modalities
        return modalities is None or most is None or modalities <= most

    sets = {
        "all": sorted(filter(fits, METHODS.names()), key=order),
        "paper": sorted((n for n in METHODS.names() if METHODS.get(n).in_paper_table and fits(n)), key=order),
    }
    return list(dict.fromkeys(m for n in names for m in sets.get(n, [n])))


def grid(
    base: TrainSpec,
    *,
    gamma_p: list[float] | None = None,
    seeds: list[int] | None = None,
    fusions: list[str] | None = None,
    methods: list[str] | None = None,
) -> list[TrainSpec]:
    """Every point of the grid as a validated TrainSpec (a bad value fails before anything trains).

    ``methods`` may name the sets ``all`` and ``paper`` (:func:`expand_methods`).
    """
    specs, keys = [], set()
    for method, fusion, g, seed in itertools.product(
        expand_methods(methods) or [base.method], fusions or [base.fusion], gamma_p or [base.gamma_p], seeds or [base.seed]
    ):
        if method not in USES_GAMMA_P:
            g = base.gamma_p  # one run per (fusion, seed): γp does not change it
        spec = resolve_spec(
            TrainSpec, base.model_dump(exclude={"run_dir"}), {"method": method, "fusion": fusion, "gamma_p": g, "seed": seed}
        )
        k = (method, fusion, g, seed)
        if k not in keys:
            keys.add(k)
            specs.append(spec)
    return specs


def profile_identity(p) -> dict:
    """What of a profile a run depends on: its data, modalities and dominant modalities."""
    return {
        "dataset": p.dataset,
        "dataset_identity": p.dataset_identity,
        "modalities": sorted(p.modalities),
        "performance_dominant": p.performance_dominant,
        "optimization_dominant": p.optimization_dominant,
    }


def run_key(spec: dict, profile_ident: dict) -> str:
    """The identity of a run: every spec field that changes its result, and the profile's dominants."""
    from pdmp_cli.cache import stable_hash

    return stable_hash(
        {
            "settings": settings_key(spec),
            "method": spec.get("method"),
            "fusion": spec.get("fusion"),
            "seed": spec.get("seed"),
            "dataset": _dataset_name(str(spec.get("dataset") or profile_ident["dataset"])),
            "profile": profile_ident,
        }
    )


def existing_runs(runs_root: str | os.PathLike) -> dict[str, list[tuple[Path, str]]]:
    """run_key -> [(run directory, status)] for every readable run below ``runs_root``."""
    from pydantic import ValidationError

    from pdmp_cli.profile import Profile

    root = Path(runs_root)
    found: dict[str, list[tuple[Path, str]]] = {}
    if not root.is_dir():
        return found
    for d in find_run_dirs(root):
        try:
            spec = spec_with_defaults(json.loads((d / rundir.SPEC).read_text()))
            status = json.loads((d / rundir.SUMMARY).read_text())["status"]
            prof = Profile.model_validate(json.loads((d / rundir.PROFILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError, ValidationError):
            continue  # not finished writing, or broken: not a run the sweep can rely on
        found.setdefault(run_key(spec, profile_identity(prof)), []).append((d, status))
    return found


@dataclass
class Outcome:
    spec: TrainSpec
    action: str  # trained | resumed | skipped
    run_dir: Path
    status: str  # the run's status afterwards


@dataclass
class SweepResult:
    outcomes: list[Outcome]
    report: Report | None
    stopped: str | None = None  # why the sweep stopped early (Ctrl-C), else None
    notes: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(o.action == action for o in self.outcomes)

    @property
    def trained(self) -> int:
        return self.count("trained")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def resumed(self) -> int:
        return self.count("resumed")


def describe(spec: TrainSpec) -> str:
    g = f" γp {spec.gamma_p:g}" if spec.method in USES_GAMMA_P else ""
    return f"{spec.method}{g} · {spec.fusion} · seed {spec.seed}"


def run(
    base: TrainSpec,
    *,
    gamma_p: list[float] | None = None,
    seeds: list[int] | None = None,
    fusions: list[str] | None = None,
    methods: list[str] | None = None,
    console=None,
    quiet: bool = False,
    command: str = "",
    on_outcome: Callable[[Outcome], None] | None = None,
) -> SweepResult:
    """Run the grid in ``base.runs_root``, skipping what is already there; report its runs.

    Stops at the first interrupted run (Ctrl-C): its checkpoint is kept, and calling again
    resumes it. A diverged run is a result (γp too large) and the sweep goes on.

    Raises PdmpError: a grid value that is not valid (before anything trains), or whatever
    :func:`pdmp_cli.train.run` refuses (a profile that does not fit the dataset, ...).
    """
    from pdmp_cli import report as report_mod
    from pdmp_cli import train
    from pdmp_cli.profile import Profile
    from pdmp_cli.progress import duration
    from pdmp_cli.train.loop import resume_spec

    if console is None or quiet:
        from rich.console import Console

        console = Console(quiet=quiet)
    prof = Profile.load(base.profile)
    methods = expand_methods(methods, modalities=len(prof.modalities))
    specs = grid(base, gamma_p=gamma_p, seeds=seeds, fusions=fusions, methods=methods)
    ident = profile_identity(prof)
    have = existing_runs(base.runs_root)
    command = command or shlex.join(["pdmp", *sys.argv[1:]])
    outcomes: list[Outcome] = []
    stopped = None
    trained_seconds, trained = 0.0, 0  # the sweep's ETA: mean time of a trained run x runs left
    for i, spec in enumerate(specs, 1):
        what = f"[{i}/{len(specs)}] {describe(spec)}"
        spec = spec.model_copy(update={"dataset": spec.dataset or ident["dataset"]})
        matches = have.get(run_key(spec.model_dump(mode="json"), ident), [])
        done = next(((d, s) for d, s in matches if s in DONE), None)
        if done is not None:
            o = Outcome(spec, "skipped", done[0], done[1])
            console.print(f"{what}: already in {done[0]} ({done[1]}); skipped", highlight=False, soft_wrap=True)
        else:
            paused = next((d for d, s in matches if s == "interrupted"), None)
            t_run = time.monotonic()
            with _EpochBar(console, what, spec.epochs) as bar:
                if paused is not None:
                    res = train.run(resume_spec(paused), command, resume=True, quiet=True, on_step=bar.step)
                    action = "resumed"
                else:
                    res = train.run(spec, command, quiet=True, on_step=bar.step)
                    action = "trained"
            o = Outcome(spec, action, res.run_dir, res.summary.status)
            s = res.summary
            trained_seconds, trained = trained_seconds + time.monotonic() - t_run, trained + 1
            left = len(specs) - i
            eta = f"; sweep ETA {duration(trained_seconds / trained * left)}" if left else ""
            acc = "no epoch finished" if s.final_accuracy is None else f"final accuracy {s.final_accuracy:.4f}"
            if s.selected_accuracy is not None:
                acc = f"test accuracy {s.selected_accuracy:.4f} at the best {s.selection} epoch, {acc}"
            console.print(f"{what}: {action}, {s.status}; {acc}; {res.run_dir}{eta}", highlight=False, soft_wrap=True)
            if s.status == "interrupted":
                stopped = f"{s.message}; give the same command again to continue the sweep"
        outcomes.append(o)
        if on_outcome is not None:
            on_outcome(o)
        if stopped:
            break
    dirs = [o.run_dir for o in outcomes]
    rep = report_mod.build(dirs) if dirs else None
    return SweepResult(outcomes, rep, stopped)


class _EpochBar:
    """Progress of one run, advanced by the loop's per-step callback: a bar on a terminal, one
    line per finished epoch with an ETA otherwise (:class:`pdmp_cli.progress.EpochBars`)."""

    def __init__(self, console, description: str, epochs: int):
        from pdmp_cli.progress import EpochBars

        self.bars = EpochBars(True, console)
        self.description, self.epochs = description, epochs
        self.advance, self.done = None, 0

    def __enter__(self):
        return self

    def step(self, info) -> None:
        if self.advance is None:  # the first step: a resumed run starts at its checkpoint's epoch
            self.advance, self.done = self.bars.task(self.description, self.epochs, info.epoch), info.epoch
        while self.advance is not None and self.done < info.epoch:
            self.advance()
            self.done += 1

    def __exit__(self, *exc):
        return self.bars.__exit__(*exc)
