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
from pdmp_cli.report import Report, _dataset_name, find_run_dirs, settings_key, spec_with_defaults
from pdmp_cli.specs import TrainSpec, dataset_defaults, resolve_spec

DONE = ("complete", "diverged")


def base_spec(profile: str, dataset: str | None = None, file_layer: dict | None = None, flags: dict | None = None) -> TrainSpec:
    """The TrainSpec of ``pdmp train``, ``sweep``, ``tune`` and ``demo`` (the one spec resolution):
    the paper's settings < the dataset manifest's ``[defaults]`` < a spec file < flags; the dataset
    defaults to the profile's."""
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
    from pdmp_cli.methods import uses_gamma_p

    specs, keys = [], set()
    for method, fusion, g, seed in itertools.product(
        expand_methods(methods) or [base.method], fusions or [base.fusion], gamma_p or [base.gamma_p], seeds or [base.seed]
    ):
        if not uses_gamma_p(method):
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
    from pdmp_cli.methods import uses_gamma_p

    g = f" γp {spec.gamma_p:g}" if uses_gamma_p(spec.method) else ""
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
    jobs: int | None = None,
) -> SweepResult:
    """Run the grid in ``base.runs_root``, skipping what is already there; report its runs.

    ``jobs`` runs at once, each in its own process (:mod:`pdmp_cli.pool`; default: the free cores
    ÷ the threads of a run on the CPU, one per visible GPU); every run fixes its own threads and
    seed, so its numbers are bit-identical to ``jobs=1``, where the runs train one after the other
    in this process. The outcomes (and the report) keep the grid's order whatever finishes first.

    Stops at Ctrl-C: every run in progress saves its checkpoint, and calling again resumes them.
    A diverged run is a result (γp too large) and the sweep goes on.

    Raises PdmpError: a grid value that is not valid (before anything trains), or whatever
    :func:`pdmp_cli.train.run` refuses (a profile that does not fit the dataset, ...).
    """
    from pdmp_cli import report as report_mod
    from pdmp_cli.profile import Profile

    if console is None or quiet:
        from rich.console import Console

        console = Console(quiet=quiet)
    prof = Profile.load(base.profile)
    methods = expand_methods(methods, modalities=len(prof.modalities))
    specs = grid(base, gamma_p=gamma_p, seeds=seeds, fusions=fusions, methods=methods)
    ident = profile_identity(prof)
    have = existing_runs(base.runs_root)
    command = command or shlex.join(["pdmp", *sys.argv[1:]])
    outcomes: dict[int, Outcome] = {}
    todo: list[tuple[int, TrainSpec, Path | None]] = []  # (index, spec, interrupted run to resume)
    for i, spec in enumerate(specs, 1):
        spec = spec.model_copy(update={"dataset": spec.dataset or ident["dataset"]})
        matches = have.get(run_key(spec.model_dump(mode="json"), ident), [])
        done = next(((d, s) for d, s in matches if s in DONE), None)
        if done is not None:
            outcomes[i] = Outcome(spec, "skipped", done[0], done[1])
            console.print(f"[{i}/{len(specs)}] {describe(spec)}: already in {done[0]} ({done[1]}); skipped", highlight=False, soft_wrap=True)
            if on_outcome is not None:
                on_outcome(outcomes[i])
        else:
            todo.append((i, spec, next((d for d, s in matches if s == "interrupted"), None)))
    jobs = jobs or (_default_jobs(base) if len(todo) > 1 else 1)  # the free-core probe only where it can matter
    if jobs > 1 and len(todo) > 1:
        stopped = _run_in_processes(todo, len(specs), jobs, command, console, outcomes, on_outcome)
    else:
        stopped = _run_here(todo, len(specs), command, console, outcomes, on_outcome)
    ordered = [outcomes[i] for i in sorted(outcomes)]
    dirs = [o.run_dir for o in ordered]
    rep = report_mod.build(dirs) if dirs else None
    return SweepResult(ordered, rep, stopped)


def _default_jobs(base: TrainSpec) -> int:
    """--jobs when not given: :func:`pdmp_cli.pool.default_jobs` for the base spec's device and threads."""
    import torch

    from pdmp_cli.pool import default_jobs
    from pdmp_cli.runtime import default_threads, resolve_device

    device = resolve_device(base.device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    return default_jobs(device.type, base.threads or default_threads(base.encoder), gpus)


def _run_line(i: int, total: int, spec: TrainSpec, action: str, s, run_dir, eta: str = "") -> str:
    """The one line a finished run prints: status, the validation-selected headline, the final epoch."""
    acc = "no epoch finished" if s.final_accuracy is None else f"final accuracy {s.final_accuracy:.4f}"
    if s.selected_accuracy is not None:
        acc = f"test accuracy {s.selected_accuracy:.4f} at the best {s.selection} epoch, {acc}"
    return f"[{i}/{total}] {describe(spec)}: {action}, {s.status}; {acc}; {run_dir}{eta}"


def _run_here(todo, total, command, console, outcomes, on_outcome) -> str | None:
    """The runs one after the other in this process, each with its epoch bar (--jobs 1)."""
    from pdmp_cli import train
    from pdmp_cli.progress import duration
    from pdmp_cli.train.setup import resume_spec

    trained_seconds, trained = 0.0, 0  # the sweep's ETA: mean time of a trained run x runs left
    for n, (i, spec, paused) in enumerate(todo, 1):
        t_run = time.monotonic()
        with _EpochBar(console, f"[{i}/{total}] {describe(spec)}", spec.epochs) as bar:
            if paused is not None:
                res = train.run(resume_spec(paused), command, resume=True, quiet=True, on_step=bar.step)
                action = "resumed"
            else:
                res = train.run(spec, command, quiet=True, on_step=bar.step)
                action = "trained"
        outcomes[i] = o = Outcome(spec, action, res.run_dir, res.summary.status)
        trained_seconds, trained = trained_seconds + time.monotonic() - t_run, trained + 1
        left = len(todo) - n
        eta = f"; sweep ETA {duration(trained_seconds / trained * left)}" if left else ""
        console.print(_run_line(i, total, spec, action, res.summary, res.run_dir, eta), highlight=False, soft_wrap=True)
        if on_outcome is not None:
            on_outcome(o)
        if res.summary.status == "interrupted":
            return f"{res.summary.message}; give the same command again to continue the sweep"
    return None


def _train_job(spec_json: dict, paused: str | None, command: str, report) -> tuple[str, dict, str]:
    """One run of the grid in its own process (:mod:`pdmp_cli.pool`); each finished epoch goes to
    ``report``. -> ``(run directory, summary as JSON, trained | resumed)``."""
    from pdmp_cli import train
    from pdmp_cli.train.setup import resume_spec

    done = [0]

    def step(info):
        while done[0] < info.epoch:  # the first step of epoch e: e epochs are done
            done[0] += 1
            report(done[0])

    if paused is not None:
        res = train.run(resume_spec(paused), command, resume=True, quiet=True, on_step=step)
        action = "resumed"
    else:
        res = train.run(TrainSpec.model_validate(spec_json), command, quiet=True, on_step=step)
        action = "trained"
    step(type("Done", (), {"epoch": len(res.metrics)}))  # the last epoch has no step after it
    return str(res.run_dir), res.summary.model_dump(mode="json"), action


def _run_in_processes(todo, total, jobs, command, console, outcomes, on_outcome) -> str | None:
    """The runs ``jobs`` at a time, each in its own process; one line per run as it finishes."""
    import torch

    from pdmp_cli.errors import PdmpError
    from pdmp_cli.pool import Task, run_tasks
    from pdmp_cli.progress import EpochBars
    from pdmp_cli.rundir import RunSummary
    from pdmp_cli.runtime import resolve_device

    by_index = {i: (spec, paused) for i, spec, paused in todo}
    gpus = torch.cuda.device_count() if any(resolve_device(s.device).type == "cuda" for _, s, _ in todo) else 0
    tasks = [
        Task(i, _train_job, (spec.model_dump(mode="json"), str(paused) if paused else None, command),
             f"cuda:{n % gpus}" if gpus else None)
        for n, (i, spec, paused) in enumerate(todo)
    ]  # fmt: skip
    console.print(f"{len(tasks)} runs, {min(jobs, len(tasks))} at a time, each in its own process", highlight=False)
    stopped, failures = None, []
    with EpochBars(console.is_terminal, console) as bars:  # bars on a terminal; else the finished lines only
        advance = {}

        def started(i):
            spec, _ = by_index[i]
            advance[i] = bars.task(f"[{i}/{total}] {describe(spec)}", spec.epochs)

        def epoch(i, _n):
            if advance.get(i):
                advance[i]()

        def finished(i, value):
            nonlocal stopped
            run_dir, summary, action = value
            spec, _ = by_index[i]
            s = RunSummary.model_validate(summary)
            outcomes[i] = o = Outcome(spec, action, Path(run_dir), s.status)
            console.print(_run_line(i, total, spec, action, s, run_dir), highlight=False, soft_wrap=True)
            if on_outcome is not None:
                on_outcome(o)
            if s.status == "interrupted":
                stopped = f"{s.message}; give the same command again to continue the sweep"

        out = run_tasks(tasks, jobs, on_start=started, on_message=epoch, on_done=finished)
    for i, msg in sorted(out.errors.items()):
        failures.append(f"[{i}/{total}] {describe(by_index[i][0])}: {msg}")
    if out.stopped_by is not None and stopped is None:
        stopped = "stopped; give the same command again to continue the sweep"
    if failures and stopped is None:
        raise PdmpError(failures[0] + (f" (and {len(failures) - 1} more failed)" if len(failures) > 1 else ""), 1)
    if out.not_started and stopped:
        stopped += f" ({len(out.not_started)} runs not started)"
    return stopped


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
