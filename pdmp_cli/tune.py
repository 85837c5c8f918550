"""``pdmp tune``: choose γp (or the hyperparameter any method declares tunable) on the validation
split by successive halving, reusing every partial run; and the tuned Table I.

    from pdmp_cli import sweep, tune
    base = sweep.base_spec("profiles/synthetic.json")
    plan = tune.make_plan(base, "tune/synthetic", values={"gamma_p": [1, 2, 5, 10, 15, 20]}, seeds=[0, 1, 2])
    result = tune.run(plan)                  # Ctrl-C, then the same call again: it continues
    result.choice, result.why, result.noise  # the candidate validation preferred, why, and how sure
    result.spent_epochs, result.full_epochs  # compute spent against a full sweep
    # plan.tune_dir/chosen.json: `pdmp train --spec tune/synthetic/chosen.json`

**Candidates.** One per combination of the grid's values (γp; a method's field declared with
``Field(..., json_schema_extra={"tune": [...]})``; with PDMP, when the profile cannot settle m_o,
also the branch of Eq. 12). Candidates that train identically are one candidate: each is keyed
by what it changes in training, the method's resolved settings (:meth:`Method.training_settings`:
PDMP's γ per modality, not γp and m_o), so "γp 1 · m_o audio" and "γp 1 · m_o visual" (every γ = 1
either way) train once, listed once with the other label beside them. A setting that trains as
vanilla (PDMP γp 1, lr-scale's factor 1) is marked "= vanilla".

**Synchronous successive halving** (the default, one worker). Every surviving candidate trains to
a rung (epochs ``r, r*eta, ...`` below the budget) before any goes past it; at each rung the best
``max(1, n // eta)`` of the ``n`` candidates still in go on. The decisions are a function of the
runs' validation curves alone: ranked by the best validation accuracy up to the rung, ties broken
by the accuracy at the rung, then the mean accuracy up to it, then the candidate's key, never by
the order the candidates were given in. Since a run trains only up to its next target and going
on is ``pdmp train --resume`` with more epochs, nothing is trained twice and an interrupted study
replays the same decisions from the curves on disk. 12 candidates, eta 2, budget 25 (rungs 6, 12
and 24): 12 x 6 + 6 x 6 + 3 x 12 + 1 x 1 = 145 of the 300 epochs of a full sweep, in any order.
An OS lock on the tune directory keeps a second synchronous worker out.

**Asynchronous successive halving** (``asynchronous=True``, several workers). Optuna's
``SuccessiveHalvingPruner`` (ASHA, Li et al., MLSys 2020): a candidate is judged against those
that reached the rung before it (the first always goes on), so workers never wait for each other.
The study lives in an Optuna storage every worker opens (default: Optuna's journal file in the
tune directory, which works on a shared filesystem without a database; or a database URL). A
worker claims a candidate by creating a trial that already carries it (one storage operation);
the claim with the lowest trial number wins and every later one stands down, so two workers never
train the same candidate whatever the load. A claim is a lease: its worker writes a heartbeat
every :data:`HEARTBEAT_SECONDS`; a claim silent for :data:`GRACE_SECONDS` belongs to a dead worker,
is failed by the next worker that looks, and its candidate resumed from its checkpoint.

**Seeds.** ``seeds=[0, 1, 2]`` trains every candidate on each seed (one resumable run each) and
compares candidates on the mean over seeds of each run's best validation accuracy so far.

**Uncertainty.** Each candidate's value carries a standard error: with one seed the binomial
``sqrt(p (1 - p) / n_val)``; with several, the larger of the seeds' standard error of the mean and
the binomial one of the pooled validation samples. The choice is *within noise* of another
candidate when the two differ by less than :data:`NOISE_Z` standard errors of their difference
(the rule ``pdmp analyze`` uses for its rankings); the result says so for the runner-up and for
the setting that trains as vanilla (PDMP off), and ``chosen.json`` records it.

Only the validation split is read: the runs are trained with ``evaluate_test=False``, so no test
sample is loaded or evaluated while tuning. :func:`table_one` (``pdmp tune --method paper``) then
trains each method's choice to the end on the given seeds; those final runs alone read the test
split, and ``pdmp report`` turns them into the tuned Table I.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from pdmp_cli import fsutil, rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.profile import Profile
from pdmp_cli.specs import TrainSpec, resolve_spec

DEFAULT_GAMMA_P = [1.0, 2.0, 5.0, 10.0, 15.0, 20.0]
DEFAULT_ETA = 2  # "keep the better half"
HEARTBEAT_SECONDS = 60  # a live worker renews its claim this often (asynchronous mode)
GRACE_SECONDS = 180  # a claim silent this long belongs to a dead worker: failed, and its candidate resumed
NOISE_Z = 2.0  # within noise: less than this many standard errors of the difference apart (pdmp analyze's rule)
CHOSEN, SUMMARY, PLAN_FILE, LOCK = "chosen.json", "tune.json", "plan.json", "tune.lock"
TUNED = "tuned.json"  # in a final run directory of the tuned Table I: the setting and the budget it had (report.read.TUNED)
# spec fields that say where or on what a run trains, not what it learns
_NOT_IDENTITY = {"run_dir", "runs_root", "device", "devices", "num_workers", "data_root", "threads"}
BRANCH = "m_o"  # the pseudo-parameter of a candidate: which modality Eq. 12 takes as optimization-dominant


# -----------------------------------------------------------------------------------------------
# the plan: candidates, rungs, where things go


@dataclass(frozen=True)
class Candidate:
    """One point of the search: spec overrides (``gamma_p``, ``<method>.<field>``) and a profile."""

    key: str  # file-name-safe, unique in the plan: the run directories' name and the trial's parameter
    params: dict  # what is tuned, e.g. {"gamma_p": 5.0} or {"gamma_p": 5.0, "m_o": "audio"}
    profile: str  # the profile path the run uses (a copy with another m_o for the other branch of Eq. 12)
    vanilla: bool = False  # trains exactly as vanilla (PDMP γp 1: every γ 1; lr-scale's factor 1)
    same: tuple[str, ...] = ()  # labels of the grid's other points that train identically (trained once, here)

    @property
    def label(self) -> str:
        parts = []
        for k, v in self.params.items():
            name = "γp" if k == "gamma_p" else k
            parts.append(f"{name} {v:.15g}" if isinstance(v, float) else f"{name} {v}")  # 15 digits: two values, two labels
        return " · ".join(parts)

    @property
    def display(self) -> str:
        """The label, marked when it trains as vanilla and with the points folded into it."""
        out = self.label + (" (= vanilla)" if self.vanilla else "")
        return out + (f" [same as {', '.join(self.same)}]" if self.same else "")


@dataclass
class Plan:
    base: TrainSpec  # every candidate's spec is this one with the candidate's overrides
    candidates: list[Candidate]  # one per distinct training (duplicates folded, see Candidate.same)
    budget: int  # epochs a candidate that is never stopped reaches
    min_epochs: int  # the first rung
    eta: int  # reduction factor: 1/eta of the candidates go on at each rung
    tune_dir: Path
    storage: str  # Optuna storage (asynchronous mode): a journal file path or a database URL
    study_name: str
    notes: list[str] = field(default_factory=list)
    branch_reason: str | None = None  # why both branches of Eq. 12 are tried (None: they are not)
    seeds: list[int] = field(default_factory=lambda: [0])
    asynchronous: bool = False  # Optuna's asynchronous pruner over a shared storage (several workers)
    grid_size: int = 0  # points of the grid before identical ones were folded
    ident: dict = field(default_factory=dict)  # what makes two plans the same (plan.json, the study's attrs)

    def rungs(self) -> list[int]:
        """Epochs at which candidates are compared (below the budget)."""
        out, r = [], self.min_epochs
        while r < self.budget:
            out.append(r)
            r *= self.eta
        return out

    def targets(self) -> list[int]:
        """Where a run stops to be judged: each rung, then the budget."""
        return self.rungs() + [self.budget]

    def spec_for(self, cand: Candidate, **update) -> TrainSpec:
        return apply_params(self.base, cand.params, profile=cand.profile, **update)

    def by_key(self) -> dict[str, Candidate]:
        return {c.key: c for c in self.candidates}

    @property
    def full_epochs(self) -> int:
        """A full sweep: every distinct candidate on every seed for the whole budget."""
        return len(self.candidates) * len(self.seeds) * self.budget


def apply_params(base: TrainSpec, params: dict, *, profile: str | None = None, **update) -> TrainSpec:
    """``base`` with a candidate's values: ``gamma_p`` (or any TrainSpec field) directly,
    ``<method>.<field>`` into ``method_args``; the branch pseudo-parameter is carried by the profile."""
    data = base.model_dump(mode="json")
    method_args = {k: dict(v) for k, v in (data.get("method_args") or {}).items()}
    for k, v in params.items():
        if k == BRANCH:
            continue
        if "." in k:
            method, name = k.split(".", 1)
            method_args.setdefault(method, {})[name] = v
        else:
            data[k] = v
    data["method_args"] = method_args
    if profile is not None:
        data["profile"] = profile
    data.update(update)
    return resolve_spec(TrainSpec, data)


def method_space(method: str) -> dict[str, list]:
    """The grid a method declares: γp for methods that read it (:data:`DEFAULT_GAMMA_P`), and
    every field of its ``Args`` declared with ``json_schema_extra={"tune": [...]}``."""
    from pdmp_cli.methods import METHODS

    cls = METHODS.get(method)
    space: dict[str, list] = {}
    if cls.uses_gamma_p:
        space["gamma_p"] = list(DEFAULT_GAMMA_P)
    for name, info in cls.Args.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("tune"):
            space[f"{method}.{name}"] = list(extra["tune"])
    return space


def eq12_branches(profile: Profile) -> tuple[list[str], str | None]:
    """The values of m_o to try, and why both branches of Eq. 12 are (None: the profile settles it).

    Both are tried when m_o is unknown, when the two criteria of the paper disagree (Alg. 1's
    branch ranking in a multimodal model, the profile's probe, against Sec. III-B's early
    unimodal accuracy), or when the ranking that chose m_o is uncertain (top two within noise).
    The two branches: m_o = m_p (γr = γp) and m_o ≠ m_p (γr = 1/γp; with three or more
    modalities every other choice of m_o gives the same factors).
    """
    m_p = profile.performance_dominant
    reasons = []
    early = profile.early_ranking[0] if profile.early_ranking else None
    probe = ((profile.probe or {}).get("ranking") or [None])[0]
    if profile.optimization_dominant is None:
        reasons.append("the profile leaves m_o unknown")
    if early and probe and early != probe:
        reasons.append(f"its two m_o criteria disagree (early unimodal accuracy: {early}; multimodal probe: {probe})")
    deciding = {"unimodal-early": "early_ranking", "multimodal-probe": "probe_ranking"}.get(profile.optimization_criterion)
    if deciding and profile.uncertain.get(deciding):
        reasons.append(f"the {deciding.replace('_', ' ')} that chose m_o is uncertain (top two within noise)")
    if not reasons:
        return [profile.optimization_dominant], None
    order = list(profile.early_ranking or profile.modalities)
    other = next(m for m in order if m != m_p)
    first = profile.optimization_dominant or m_p
    branches = [first, other if first == m_p else m_p]
    return branches, "; ".join(reasons)


def branch_profile(profile_path: str, profile: Profile, m_o: str, out_dir: Path) -> tuple[str, Profile]:
    """``profile_path`` itself when it names ``m_o``, else a copy with ``m_o`` (criterion manual)."""
    if profile.optimization_dominant == m_o:
        return profile_path, profile
    gamma_r = "γp" if m_o == profile.performance_dominant else "1/γp"
    was = f"{profile.optimization_dominant} ({profile.optimization_criterion})" if profile.optimization_dominant else "unknown"
    copy = profile.model_copy(
        update={
            "optimization_dominant": m_o,
            "optimization_criterion": "manual",
            "notes": [*profile.notes, f"pdmp tune: m_o set to {m_o} to try the other branch of Eq. 12 (γr = {gamma_r}); the profile's m_o: {was}"],
            "provenance": profile.provenance.model_copy(update={"source": "manual"}),
        }
    )
    path = out_dir / "profiles" / f"{Path(profile_path).stem}.m_o-{m_o}.json"
    copy.save(path)
    return str(path.resolve()), copy


def _key(params: dict) -> str:
    def fmt(v):
        return f"{v:.15g}" if isinstance(v, float) else str(v)  # :g (6 digits) gave 0.1 and 0.1000001 one key

    return "_".join(f"{k.replace('.', '-')}-{fmt(v)}" for k, v in params.items())


def training_identity(spec: TrainSpec, profile: Profile) -> tuple[str, bool]:
    """``(hash, vanilla)``: two specs with the same hash train identically; ``vanilla``: this one
    trains as plain joint training (the method's :meth:`training_settings` is None)."""
    from pdmp_cli.cache import stable_hash
    from pdmp_cli.methods import METHODS

    settings = METHODS.get(spec.method).training_settings(spec, profile)
    rest = spec.model_dump(mode="json", exclude=_NOT_IDENTITY | {"profile", "gamma_p", "method_args", "method", "epochs"})
    return stable_hash({"rest": rest, "settings": settings}), settings is None


def dataset_identity(base: TrainSpec) -> tuple[str, str]:
    """``(name, hash)``: the manifest's name (a ``my-data/manifest.toml`` is named by its folder) and
    a hash of the manifest file's bytes and the data root (a files dataset's root as resolved, however
    it was given), so two datasets never share a tune folder."""
    import hashlib

    from pdmp_cli.data.manifest import load_manifest, manifest_path

    path = manifest_path(base.dataset)
    manifest = load_manifest(base.dataset)
    h = hashlib.sha256(path.read_bytes())
    root = str(base.data_root or "")
    if getattr(manifest, "loader", None) == "files":  # the root the data is read from (--data-root, $PDMP_DATA_ROOT_<NAME>, ...)
        from pdmp_cli.data.loaders.files import resolve_root

        root = str(resolve_root(manifest, base.data_root)[0].absolute())
    h.update(root.encode())
    return manifest.name, h.hexdigest()[:8]


def make_plan(
    base: TrainSpec,
    tune_dir: str | os.PathLike,
    *,
    values: dict[str, list] | None = None,
    budget: int | None = None,
    min_epochs: int | None = None,
    eta: int = DEFAULT_ETA,
    storage: str | None = None,
    study_name: str | None = None,
    branches: bool | None = None,
    seeds: list[int] | None = None,
    asynchronous: bool = False,
) -> Plan:
    """The candidates and rungs for tuning ``base.method`` on ``base``'s data.

    ``values``: field -> values (default: what the method declares, :func:`method_space`).
    ``budget``: epochs of a candidate never stopped (default ``base.epochs``); ``min_epochs``:
    the first rung (default ``budget // eta**2``, at least 1). ``branches``: try both branches of
    Eq. 12 (default: when the profile cannot settle m_o, :func:`eq12_branches`; only for a
    method that reads m_o). ``seeds`` (default ``[base.seed]``): every candidate trains on each,
    compared on the mean. ``asynchronous``: several workers share an Optuna storage (``storage``,
    default a journal file in ``tune_dir``). Raises PdmpError for a plan that cannot tune anything.
    """
    from pdmp_cli.cache import stable_hash
    from pdmp_cli.methods import METHODS
    from pdmp_cli.resources import profile_path

    if base.select_on_test or base.val_fraction == 0:
        raise PdmpError(
            "pdmp tune chooses on the validation split, and this spec has none (select_on_test / val_fraction 0); "
            "drop --select-on-test and give a --val-fraction > 0",
            2,
        )
    if budget is None:
        budget = base.epochs
    if not isinstance(budget, int) or budget < 1:
        raise PdmpError(f"--budget must be >= 1 epoch, got {budget}", 2)
    if eta < 2:
        raise PdmpError(f"--eta must be >= 2 (1/eta of the candidates go on at each rung), got {eta}", 2)
    # two rungs by default (e.g. 5 and 10 of 20): a γp's effect takes a few epochs to show, and
    # comparing after one or two epochs favours whatever learns fastest at first (short-horizon bias)
    if min_epochs is None:
        min_epochs = max(1, budget // eta**2)
    if not 1 <= min_epochs <= budget:
        raise PdmpError(f"--min-epochs must be between 1 and the budget ({budget}), got {min_epochs}", 2)
    seeds = list(dict.fromkeys(seeds)) if seeds else [base.seed]
    for s in seeds:
        if not (isinstance(s, int) and 0 <= s < 2**32):
            raise PdmpError(f"seeds must be integers in [0, 2^32), got {s}", 2)
    space = dict(values) if values else method_space(base.method)
    for k, v in space.items():
        if not v:
            raise PdmpError(f"no values given for {k}", 2)
        if k != "gamma_p" and "." not in k and k not in TrainSpec.model_fields:
            raise PdmpError(f"{k} is not a spec field or <method>.<field>; e.g. gamma_p or ogm-ge.alpha", 2)
    tune_dir = Path(tune_dir)
    base = base.model_copy(update={"seed": seeds[0]})
    profile_file = profile_path(base.profile)  # a path, or a reference profile's name
    profile = Profile.load(profile_file)
    if Path(str(base.profile)).is_file():  # a path: absolute, so chosen.json works from any folder
        base = base.model_copy(update={"profile": str(Path(base.profile).resolve())})
    name, data_hash = dataset_identity(base)
    if not {str(base.dataset), Path(str(base.dataset)).stem, name} & {profile.dataset, Path(profile.dataset).stem}:
        raise PdmpError(  # the check pdmp train makes, here before anything is written or trained
            f"profile {base.profile} is for dataset {profile.dataset!r}, but the dataset is {base.dataset!r}; "
            f"use a profile of {name} (`pdmp analyze --dataset {base.dataset}`) or drop --dataset",
            2,
        )
    cls = METHODS.get(base.method)
    notes, reason = [], None
    m_os = [None]
    if cls.uses_optimization_dominant and branches is not False:
        m_os, reason = eq12_branches(profile)
        if branches:
            reason = reason or "asked for (--branches)"
            if len(m_os) == 1:
                m_os, _ = eq12_branches(profile.model_copy(update={"optimization_dominant": None}))
        if reason is None:
            m_os = [None]  # settled: the profile's own m_o, not a parameter
        else:
            notes.append(f"trying both branches of Eq. 12 (m_o = {' or '.join(m_os)}): {reason}")
    if not space and m_os == [None]:
        raise PdmpError(f"method {base.method} has no tunable hyperparameter; give values, e.g. --values lr=0.01,0.03", 2)
    names = list(space)
    grid: list[tuple[dict, str, Profile]] = []
    for combo in itertools.product(*(space[n] for n in names), m_os):
        params = dict(zip(names, combo[:-1]))
        if "gamma_p" in params:
            params["gamma_p"] = float(params["gamma_p"])  # 5 and 5.0: one candidate, one run directory
        prof, prof_obj = base.profile, profile
        if combo[-1] is not None:
            params[BRANCH] = combo[-1]
            prof, prof_obj = branch_profile(base.profile, profile, combo[-1], tune_dir)
        grid.append((params, prof, prof_obj))
    # identical trainings fold into the first of them
    seen: dict[str, int] = {}
    folded: list[list] = []  # [params, profile, vanilla, [labels of the same training]]
    for params, prof, prof_obj in grid:
        spec = apply_params(base, params, profile=prof)  # a bad value fails here, before anything trains
        ident, vanilla = training_identity(spec, prof_obj)
        if ident in seen:
            folded[seen[ident]][3].append(Candidate(_key(params), params, prof).label)
        else:
            seen[ident] = len(folded)
            folded.append([params, prof, vanilla, []])
    candidates = [Candidate(_key(p), p, prof, van, tuple(same)) for p, prof, van, same in folded]
    if len({c.key for c in candidates}) != len(candidates):
        raise PdmpError("two candidates have the same values; remove the repeated ones", 2)
    for c in candidates:
        if c.same:
            notes.append(f"{', '.join(c.same)} {'trains' if len(c.same) == 1 else 'train'} exactly as {c.label}: trained once")
    ident = {
        "dataset": name,
        "dataset_hash": data_hash,
        "spec": base.model_dump(mode="json", exclude=_NOT_IDENTITY | {"profile"}),
        "profile": profile.model_dump(mode="json", include={"performance_dominant", "optimization_dominant", "modalities"}),
        "candidates": [c.key for c in candidates],
        "seeds": seeds,
        "budget": budget,
        "min_epochs": min_epochs,
        "eta": eta,
        "asynchronous": asynchronous,
    }
    study = study_name or f"pdmp-tune-{name}-{data_hash}-{base.method}-{stable_hash(ident)[:8]}"
    storage = storage or str((tune_dir / "study.journal").resolve())
    return Plan(
        base, candidates, budget, min_epochs, eta, tune_dir, storage, study, notes, reason, seeds,
        asynchronous, len(grid), ident,
    )  # fmt: skip


def check_tune_dir(plan: Plan, force: bool = False) -> None:
    """Refuse (PdmpError) to write over the result of another dataset or setting in ``plan.tune_dir``
    unless ``force``; record this plan there (``plan.json``)."""
    p = plan.tune_dir / PLAN_FILE
    if p.is_file() and not force:
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError):
            old = None
        if old != _jsonable(plan.ident):
            old = old if isinstance(old, dict) else {}  # not a plan pdmp wrote: say what little it can
            names = old.get("candidates") if isinstance(old.get("candidates"), list) else []
            what = "another dataset" if old.get("dataset_hash") != plan.ident["dataset_hash"] else "other settings"
            raise PdmpError(
                f"{plan.tune_dir} holds the tuning of {what} ({old.get('dataset', '?')}, "
                f"candidates {', '.join(map(str, names[:4])) or '?'}...); give another --tune-dir, "
                "or --force to write this plan's chosen.json over it",
                2,
            )
    fsutil.write_json(p, plan.ident)


def _jsonable(x):
    return json.loads(json.dumps(x))


# -----------------------------------------------------------------------------------------------
# trainers: the real one (pdmp_cli.train.run, resumed rung by rung) and the protocol tests fake


@dataclass
class Progress:
    """Where one run (a candidate on one seed) stands."""

    curve: list[float]  # validation accuracy after each epoch done
    status: str | None = None  # None (nothing yet), complete, interrupted, diverged, running
    message: str | None = None
    seconds: float = 0.0  # training time of those epochs
    run_dir: str | None = None
    n_val: int | None = None  # validation samples (for the standard error)
    val_set: str | None = None  # which validation samples (split.json): runs of one dataset-own split share them


class Trainer(Protocol):
    def progress(self, cand: Candidate, seed: int) -> Progress: ...

    def advance(self, cand: Candidate, seed: int, epochs: int) -> Progress:
        """Train ``cand`` on ``seed`` until it has done ``epochs`` epochs (resuming what it did)."""
        ...


class RunTrainer:
    """Trains each candidate in ``<tune_dir>/runs/<key>-s<seed>-<hash>`` with
    :func:`pdmp_cli.train.run`, ``evaluate_test=False``; going on is a resume with more epochs."""

    def __init__(self, plan: Plan, *, command: str = "", on_step=None):
        self.plan, self.command, self.on_step = plan, command, on_step

    def run_dir(self, cand: Candidate, seed: int) -> Path:
        """``runs/<key>-s<seed>-<hash of its spec>``: another plan with the same spec (other rungs,
        budget or candidates) reuses the run; another spec (say another lr) never does."""
        from pdmp_cli.cache import stable_hash

        spec = self.plan.spec_for(cand, seed=seed).model_dump(mode="json", exclude=_NOT_IDENTITY | {"epochs", "profile"})
        return self.plan.tune_dir / "runs" / f"{cand.key}-s{seed}-{stable_hash(spec)[:8]}"

    def progress(self, cand: Candidate, seed: int) -> Progress:
        d = self.run_dir(cand, seed)
        if not (d / rundir.SPEC).is_file():
            return Progress([], run_dir=str(d))
        history, _ = rundir.read_metrics(d)
        try:
            s = json.loads((d / rundir.SUMMARY).read_text())
        except (OSError, ValueError):
            s = {}
        return _progress(history, s.get("status"), s.get("message"), d)

    def advance(self, cand: Candidate, seed: int, epochs: int) -> Progress:
        from pdmp_cli import train
        from pdmp_cli.train.setup import resume_spec

        d = self.run_dir(cand, seed)
        if (d / rundir.CHECKPOINTS / "last.pt").is_file():
            res = train.run(
                resume_spec(d, {"epochs": epochs}), self.command, resume=True, quiet=True,
                on_step=self.on_step, evaluate_test=False,
            )  # fmt: skip
        else:
            if d.exists():  # started, but no epoch finished: nothing to reuse
                shutil.rmtree(d)
            spec = self.plan.spec_for(cand, seed=seed, epochs=epochs, run_dir=str(d))
            res = train.run(spec, self.command, quiet=True, on_step=self.on_step, evaluate_test=False)
        return _progress(res.metrics, res.summary.status, res.summary.message, res.run_dir)


def _progress(history, status, message, run_dir) -> Progress:
    curve = []
    for m in history:
        if m.val_accuracy is None:
            raise PdmpError(f"run {run_dir} has no validation accuracy; pdmp tune needs a validation split", 2)
        curve.append(m.val_accuracy)
    n_val = val_set = None
    try:
        split = json.loads((Path(run_dir) / rundir.SPLIT).read_text())
        n_val = int(split["val_size"])
        val_set = split.get("val_indices_sha256") or str(split.get("source"))  # carved: its indices; else "manifest"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return Progress(curve, status, message, sum(m.epoch_seconds for m in history), str(run_dir), n_val, val_set)


# -----------------------------------------------------------------------------------------------
# a candidate over its seeds: values, standard errors, the ranking at a rung


@dataclass
class Standing:
    """A candidate's runs, one per seed."""

    runs: dict[int, Progress]

    @property
    def epochs(self) -> int:
        """Epochs every seed has done."""
        return min(len(p.curve) for p in self.runs.values())

    @property
    def diverged(self) -> Progress | None:
        return next((p for p in self.runs.values() if p.status == "diverged"), None)

    @property
    def interrupted(self) -> bool:
        return any(p.status == "interrupted" for p in self.runs.values())

    def bests(self, upto: int) -> list[float]:
        """Each seed's best validation accuracy within the first ``upto`` epochs."""
        return [max(p.curve[:upto]) for p in self.runs.values() if p.curve[:upto]]

    def value(self, upto: int) -> float | None:
        """The mean over seeds of each run's best validation accuracy within ``upto`` epochs."""
        b = self.bests(upto)
        return sum(b) / len(b) if b and len(b) == len(self.runs) else None

    def curve(self) -> list[float]:
        """The mean validation curve over seeds (as long as the shortest run)."""
        n = self.epochs
        return [sum(p.curve[e] for p in self.runs.values()) / len(self.runs) for e in range(n)]

    def best_epoch(self, upto: int) -> int | None:
        c = self.curve()[:upto]
        return c.index(max(c)) + 1 if c else None

    def se(self, upto: int) -> float | None:
        """Standard error of :meth:`value`: binomial on the validation samples with one seed;
        with several, the larger of the seeds' standard error of the mean and the binomial one."""
        b = self.bests(upto)
        n = [p.n_val for p in self.runs.values()]
        if not b or len(b) != len(self.runs) or any(v is None or v < 1 for v in n):
            return None
        p = sum(b) / len(b)
        sets = [r.val_set for r in self.runs.values()]
        # pooled over the seeds only when they scored different samples: seeds scored on one validation
        # split (the dataset's own) are not len(b) times the evidence
        pool = len(set(sets)) == len(sets) or None in sets
        binomial = math.sqrt(max(p * (1 - p), 0.0) / (sum(n) if pool else sum(n) / len(n)))
        if len(b) == 1:
            return binomial
        sd = math.sqrt(sum((x - p) ** 2 for x in b) / (len(b) - 1))
        return max(sd / math.sqrt(len(b)), binomial)

    def seconds(self) -> float:
        return sum(p.seconds for p in self.runs.values())

    def spent(self) -> int:
        return sum(len(p.curve) for p in self.runs.values())


def standing(plan: Plan, trainer: Trainer, cand: Candidate) -> Standing:
    return Standing({s: trainer.progress(cand, s) for s in plan.seeds})


def _rank_key(st: Standing, target: int, cand: Candidate) -> tuple:
    """Best validation accuracy up to ``target``; ties: the accuracy at ``target``, then the mean
    accuracy up to it, then the key (never the order the candidates were given in)."""
    c = st.curve()[:target]
    return (-(st.value(target) or 0.0), -(c[-1] if c else 0.0), -(sum(c) / len(c) if c else 0.0), cand.key)


@dataclass
class Replay:
    """Synchronous successive halving replayed from the runs' curves."""

    states: dict[str, str]  # key -> complete | stopped | dropped | waiting | interrupted
    notes: dict[str, str]
    todo: list[tuple[Candidate, int, int]]  # (candidate, seed, target epochs) to train next, in order


def replay(plan: Plan, standings: dict[str, Standing]) -> Replay:
    """Every decision synchronous successive halving has taken, given the runs as they are, and
    the training to do next (empty when the study is settled)."""
    alive = list(plan.candidates)
    states: dict[str, str] = {}
    notes: dict[str, str] = {}
    for target in plan.targets():
        still = []
        for c in alive:
            st = standings[c.key]
            d = st.diverged
            if d is not None and len(d.curve) < target:
                states[c.key] = "dropped"
                notes[c.key] = f"dropped: diverged ({d.message})"
            else:
                still.append(c)
        alive = still
        todo = [(c, s, target) for c in alive for s in plan.seeds if len(standings[c.key].runs[s].curve) < target]
        if todo:
            for c in alive:
                states[c.key] = "interrupted" if standings[c.key].interrupted else "waiting"
            return Replay(states, notes, todo)
        if target == plan.budget:
            for c in alive:
                states[c.key] = "complete"
            break
        n = len(alive)
        k = max(1, n // plan.eta)
        ranked = sorted(alive, key=lambda c: _rank_key(standings[c.key], target, c))
        for pos, c in enumerate(ranked[k:], start=k + 1):
            states[c.key] = "stopped"
            v = standings[c.key].value(target)
            notes[c.key] = (
                f"stopped after epoch {target}: best validation accuracy {v:.4f} ranked {pos} of the {n} "
                f"candidates at epoch {target} (the best {k} go on)"
            )
        alive = ranked[:k]
    return Replay(states, notes, [])


# -----------------------------------------------------------------------------------------------
# running: synchronous (one worker) and asynchronous (Optuna, several workers)


class _Interrupted(Exception):
    """Ctrl-C inside a candidate: its run saved a checkpoint."""


def _interrupted(plan: Plan, cand: Candidate, seed: int, prog: Progress, command: str) -> _Interrupted:
    seed_part = f" (seed {seed})" if len(plan.seeds) > 1 else ""
    again = f"`{command}`" if command else "the same pdmp tune command"
    return _Interrupted(
        f"interrupted in {cand.label}{seed_part} after {len(prog.curve)} epochs (its run keeps a checkpoint); "
        f"run {again} again to continue the tuning"
    )


@contextlib.contextmanager
def worker_lock(tune_dir: Path):
    """One synchronous worker per tune directory (an OS lock, released when the process ends)."""
    import fcntl

    tune_dir.mkdir(parents=True, exist_ok=True)
    f = open(tune_dir / LOCK, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PdmpError(
                f"another pdmp tune is working in {tune_dir}; wait for it to finish, or start every worker "
                "with --asynchronous to share the candidates",
                2,
            ) from None
        yield
    finally:
        f.close()


def _run_sync(plan: Plan, trainer: Trainer, log, command: str) -> str | None:
    """Train until the synchronous study is settled; return why it stopped early (None: settled)."""
    standings = {c.key: standing(plan, trainer, c) for c in plan.candidates}
    for c in plan.candidates:
        if any(p.curve for p in standings[c.key].runs.values()):
            log(f"{c.label}: {standings[c.key].epochs} epochs already trained; reused")
    told: set[str] = set()
    try:
        while True:
            r = replay(plan, standings)
            for key, note in r.notes.items():
                if key not in told:
                    told.add(key)
                    log(f"{plan.by_key()[key].label}: {note}")
            if not r.todo:
                return None
            cand, seed, target = r.todo[0]
            done = len(standings[cand.key].runs[seed].curve)
            seed_part = f" (seed {seed})" if len(plan.seeds) > 1 else ""
            log(f"{cand.label}{seed_part}: training epoch{f's {done + 1}-' if target > done + 1 else ' '}{target}")
            prog = trainer.advance(cand, seed, target)
            standings[cand.key].runs[seed] = prog
            if prog.status == "interrupted":
                raise _interrupted(plan, cand, seed, prog, command)
            if prog.status != "diverged" and done >= len(prog.curve) < target:  # asking again would loop forever
                raise PdmpError(
                    f"{cand.label}{seed_part}: its run {prog.run_dir} ended at epoch {len(prog.curve)} of the {target} "
                    f"asked for ({prog.status or 'no status'}{': ' + prog.message if prog.message else ''}); "
                    "look at its summary.json, or delete that run folder to train it again",
                    1,
                )
    except KeyboardInterrupt:
        again = f"`{command}`" if command else "the same pdmp tune command"
        return f"interrupted; run {again} again to continue the tuning"
    except _Interrupted as e:
        return str(e)


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its per-trial lines; pdmp tune prints its own
    return optuna


def open_storage(url: str):
    """A journal file (a path; works on a shared filesystem without a database) or a database URL
    (``sqlite:///...``, ``postgresql://...``)."""
    optuna = _quiet_optuna()
    import warnings

    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url))
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
            )  # fmt: skip
        except SQLAlchemyError as e:  # workers starting together race to create the tables: try again
            if attempt == 4:
                raise PdmpError(f"cannot open the Optuna storage {url!r} ({type(e).__name__}: {e}); check --storage", 2) from None
            time.sleep(0.2 * (attempt + 1))
        except (ValueError, ImportError, ModuleNotFoundError) as e:  # a bad URL, a missing database driver
            raise PdmpError(f"cannot open the Optuna storage {url!r} ({type(e).__name__}: {e}); check --storage", 2) from None


class _LiveTrials:
    """The study as the pruner sees it: without FAIL trials (a candidate interrupted and resumed
    competes once, through its new trial, not twice)."""

    def __init__(self, study):
        self._study = study

    def get_trials(self, deepcopy: bool = True, states=None):
        from optuna.trial import TrialState

        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if t.state != TrialState.FAIL]

    def __getattr__(self, name):
        return getattr(self._study, name)


def _pruner(plan: Plan):
    optuna = _quiet_optuna()

    class Pruner(optuna.pruners.BasePruner):
        """Optuna's SuccessiveHalvingPruner over :class:`_LiveTrials`."""

        def __init__(self):
            self.inner = optuna.pruners.SuccessiveHalvingPruner(min_resource=plan.min_epochs, reduction_factor=plan.eta)

        def prune(self, study, trial) -> bool:
            return self.inner.prune(_LiveTrials(study), trial)

    return Pruner()


def _held(study, exclude: int | None = None) -> dict[str, object]:
    """candidate key -> the trial that holds it: the lowest-numbered one not FAIL."""
    from optuna.trial import TrialState

    held = {}
    for t in study.get_trials(deepcopy=False):
        key = t.params.get("candidate")
        if key is None or t.number == exclude or t.state in (TrialState.FAIL, TrialState.WAITING):
            continue
        if key not in held or t.number < held[key].number:
            held[key] = t
    return held


def open_study(plan: Plan, storage=None):
    """The plan's study (created by the first worker) on ``storage`` (default: opened from
    ``plan.storage``); refuses one made by an incompatible plan."""
    optuna = _quiet_optuna()
    storage = storage if storage is not None else open_storage(plan.storage)
    study = optuna.create_study(
        study_name=plan.study_name, storage=storage, direction="maximize", pruner=_pruner(plan), load_if_exists=True,
    )  # fmt: skip
    mine = {"plan": _jsonable(plan.ident), "tune_dir": str(plan.tune_dir.resolve())}
    # the first worker claims the study in one storage operation (with two separate writes a second
    # worker could read half a claim), then reads back whose claim stands (two at once: the last one's)
    owner = study.user_attrs.get("owner")
    if owner is None:
        study.set_user_attr("owner", mine)
        owner = study.user_attrs["owner"]
    if owner["tune_dir"] != mine["tune_dir"]:
        raise PdmpError(
            f"study {plan.study_name} in {plan.storage} belongs to the tune directory {owner['tune_dir']}, "
            f"not {mine['tune_dir']}; give that --tune-dir, or another --study",
            2,
        )
    if owner["plan"] != mine["plan"]:
        diff = sorted(k for k in mine["plan"] if owner["plan"].get(k) != mine["plan"][k])
        raise PdmpError(
            f"study {plan.study_name} in {plan.storage} was made by another plan (its {', '.join(diff)} differ); "
            "give the same settings as its other workers, or another --study",
            2,
        )
    return study


def _fail_stale(study, storage) -> None:
    """Fail the claims whose worker stopped renewing them (dead): their candidates are free again."""
    from optuna.trial import TrialState

    now = time.time()
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.user_attrs.get("heartbeat", 0.0)
        if now - beat > GRACE_SECONDS:
            with contextlib.suppress(Exception):  # another worker failed it a moment earlier
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
                storage.set_trial_user_attr(trial_id, "note", "its worker stopped renewing the claim; resumed")
                storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _claim(study, storage, plan: Plan):
    """Claim the first free candidate: a trial created with it in one storage operation; the
    lowest-numbered claim of a candidate wins, a later one stands down (marked ``duplicate``).
    Returns ``(trial, trial_id, candidate)`` or None when every candidate is held (``storage``:
    the study's, through Optuna's public storage API)."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    keys = [c.key for c in plan.candidates]
    dist = CategoricalDistribution(keys)
    study_id = storage.get_study_id_from_name(plan.study_name)
    while True:
        _fail_stale(study, storage)
        held = _held(study)
        free = [k for k in keys if k not in held]
        if not free:
            return None
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params={"candidate": free[0]}, distributions={"candidate": dist},
            user_attrs={"heartbeat": time.time(), "pid": os.getpid()},
        )  # fmt: skip
        trial_id = storage.create_new_trial(study_id, template_trial=template)
        number = storage.get_trial_number_from_id(trial_id)
        holder = _held(study).get(free[0])
        if holder is not None and holder.number == number:
            return optuna.trial.Trial(study, trial_id), trial_id, plan.by_key()[free[0]]
        storage.set_trial_user_attr(trial_id, "duplicate", True)  # another worker claimed it first
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


class _Heartbeat:
    """Renews a claim every HEARTBEAT_SECONDS from a thread while its candidate trains."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class _LostClaim(Exception):
    """This worker's claim is no longer RUNNING: another worker failed it (no heartbeat for the
    grace period) and took the candidate over."""


def _train_claimed(plan: Plan, trainer: Trainer, trial, cand: Candidate, log, command: str, held=lambda: True):
    """Train a claimed candidate rung by rung, reporting to Optuna's pruner; returns (state, value).
    ``held()`` is asked before each stretch of training and each report: a claim taken over
    raises :class:`_LostClaim` (the other worker trains it; this one never trains an epoch more)."""
    import optuna

    st = standing(plan, trainer, cand)
    if any(p.curve for p in st.runs.values()):
        log(f"{cand.label}: {st.epochs} epochs already trained; reused")
    reported = 0

    def report(upto: int) -> bool:
        nonlocal reported
        for epoch in range(reported + 1, min(upto, plan.budget) + 1):
            reported = epoch
            if not held():
                raise _LostClaim
            try:
                trial.report(st.value(epoch), epoch)
            except optuna.exceptions.UpdateFinishedTrialError:  # failed by another worker a moment ago
                raise _LostClaim from None
            if epoch < plan.budget and trial.should_prune():  # the budget's end is no rung: it finished
                n = sum(1 for t in _LiveTrials(trial.study).get_trials(deepcopy=False) if epoch in t.intermediate_values)
                note = (
                    f"stopped after epoch {epoch}: best validation accuracy {st.value(epoch):.4f} was not in the "
                    f"top 1/{plan.eta} of the {n} candidates that had reached epoch {epoch}"
                )
                trial.set_user_attr("note", note)
                log(f"{cand.label}: {note}")
                return True
        return False

    for target in plan.targets():
        if st.diverged is not None:
            break
        for seed in plan.seeds:
            done = len(st.runs[seed].curve)
            if done >= target or st.diverged is not None:
                continue
            if not held():
                raise _LostClaim
            log(f"{cand.label}{f' (seed {seed})' if len(plan.seeds) > 1 else ''}: training epoch{f's {done + 1}-' if target > done + 1 else ' '}{target}")
            st.runs[seed] = trainer.advance(cand, seed, target)
            if st.runs[seed].status == "interrupted":
                raise _interrupted(plan, cand, seed, st.runs[seed], command)
        if report(st.epochs):
            return "pruned", None
    if st.diverged is not None:
        note = f"dropped: diverged ({st.diverged.message})"
        trial.set_user_attr("note", note)
        trial.set_user_attr("dropped", True)
        log(f"{cand.label}: {note}")
        return "pruned", None
    return "complete", st.value(plan.budget)


def _run_async(plan: Plan, trainer: Trainer, log, command: str) -> tuple[str | None, object]:
    from optuna.trial import TrialState

    storage = open_storage(plan.storage)
    study = open_study(plan, storage)
    while True:
        claimed = _claim(study, storage, plan)
        if claimed is None:
            return None, study
        trial, trial_id, cand = claimed
        def held(trial_id=trial_id) -> bool:
            return storage.get_trial(trial_id).state == TrialState.RUNNING

        try:
            with _Heartbeat(storage, trial_id):
                state, value = _train_claimed(plan, trainer, trial, cand, log, command, held)
        except _LostClaim:
            log(f"{cand.label}: this worker's claim was taken over by another worker (no heartbeat for "
                f"{GRACE_SECONDS:g} s); it stops training it")
            continue
        except (_Interrupted, KeyboardInterrupt) as e:
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            again = f"`{command}`" if command else "the same pdmp tune command"
            return (str(e) if isinstance(e, _Interrupted) else f"interrupted; run {again} again to continue the tuning"), study
        try:
            study.tell(trial, value if state == "complete" else None, state=TrialState.COMPLETE if state == "complete" else TrialState.PRUNED)
        except (ValueError, RuntimeError) as e:  # its lease ran out (no heartbeat for GRACE_SECONDS) and another worker took over
            log(f"{cand.label}: this worker's claim was taken over by another worker ({e}); its result is that worker's")


# -----------------------------------------------------------------------------------------------
# the result


@dataclass
class CandidateResult:
    candidate: Candidate
    state: str  # complete | stopped (by successive halving) | dropped (diverged) | running | interrupted | waiting
    curve: list[float]  # validation accuracy per epoch (mean over seeds; all epochs its runs did)
    value: float | None  # best validation accuracy within the budget (mean over seeds of each run's best)
    best_epoch: int | None
    note: str | None = None
    seconds: float = 0.0
    run_dir: str | None = None  # the first seed's
    se: float | None = None  # standard error of value
    epochs_spent: int = 0  # over its seeds
    per_seed: dict[int, float | None] = field(default_factory=dict)

    def to_json(self) -> dict:
        c = self.candidate
        return {
            "key": c.key, "label": c.label, "params": c.params, "profile": c.profile, "as_vanilla": c.vanilla,
            "same_as": list(c.same), "state": self.state, "epochs": len(self.curve), "value": self.value, "se": self.se,
            "per_seed": {str(k): v for k, v in self.per_seed.items()}, "best_epoch": self.best_epoch,
            "curve": self.curve, "note": self.note, "seconds": self.seconds, "epochs_spent": self.epochs_spent,
            "run_dir": self.run_dir,
        }  # fmt: skip


@dataclass
class TuneResult:
    plan: Plan
    candidates: list[CandidateResult]
    choice: CandidateResult | None
    why: str
    spent_epochs: int
    full_epochs: int  # a full sweep: every distinct candidate on every seed for the whole budget
    seconds: float
    spec_path: Path | None = None
    stopped: str | None = None  # why this worker stopped early (Ctrl-C); the same command continues
    branch_note: str | None = None  # which branch of Eq. 12 validation preferred
    noise: list[str] = field(default_factory=list)  # "within noise" statements about the choice
    within_noise_of: list[str] = field(default_factory=list)  # labels of the candidates the choice is within noise of
    vanilla_note: str | None = None  # said when the choice trains as vanilla (PDMP switched off)

    @property
    def pending(self) -> list[CandidateResult]:
        return [c for c in self.candidates if c.state in ("running", "interrupted", "waiting")]

    def to_json(self) -> dict:
        p = self.plan
        return {
            "study": p.study_name, "storage": p.storage if p.asynchronous else None, "method": p.base.method,
            "dataset": p.base.dataset, "dataset_identity": [p.ident.get("dataset"), p.ident.get("dataset_hash")],
            "seeds": p.seeds, "schedule": "asynchronous" if p.asynchronous else "synchronous", "budget": p.budget,
            "min_epochs": p.min_epochs, "eta": p.eta, "rungs": p.rungs(), "notes": p.notes, "grid_size": p.grid_size,
            "choice": self.choice.candidate.key if self.choice else None,
            "choice_label": self.choice.candidate.label if self.choice else None, "why": self.why,
            "noise": self.noise, "within_noise_of": self.within_noise_of, "as_vanilla": self.vanilla_note,
            "branch": self.branch_note, "spent_epochs": self.spent_epochs, "full_epochs": self.full_epochs,
            "seconds": self.seconds, "spec": str(self.spec_path) if self.spec_path else None,
            "candidates": [c.to_json() for c in self.candidates],
        }  # fmt: skip


def run(
    plan: Plan,
    *,
    trainer: Trainer | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
    on_step=None,
) -> TuneResult:
    """Tune: train candidates until the study is settled (this worker and, asynchronously, any
    other on the same storage), then summarise; write ``chosen.json`` and ``tune.json``.

    Stops at a Ctrl-C (``result.stopped``): the candidate's run keeps its checkpoint and the same
    call continues it. Raises PdmpError: a storage that cannot be opened or holds another plan's
    study, a tune directory another synchronous worker holds, a run that refuses.
    """
    log = log or (lambda s: None)
    trainer = trainer or RunTrainer(plan, command=command, on_step=on_step)
    plan.tune_dir.mkdir(parents=True, exist_ok=True)
    if plan.asynchronous:
        stopped, study = _run_async(plan, trainer, log, command)
        result = summarize(plan, trainer, study)
    else:
        with worker_lock(plan.tune_dir):
            stopped = _run_sync(plan, trainer, log, command)
            result = summarize(plan, trainer)
    result.stopped = stopped
    if not result.pending and stopped is None:
        write_outputs(result)
    return result


def summarize(plan: Plan, trainer: Trainer, study=None) -> TuneResult:
    """The study as it stands: each candidate's state, curve, value ± SE; the choice when settled."""
    standings = {c.key: standing(plan, trainer, c) for c in plan.candidates}
    if study is None:
        r = replay(plan, standings)
        states, notes = r.states, r.notes
    else:
        states, notes = _async_states(plan, study)
    rows = []
    for cand in plan.candidates:
        st = standings[cand.key]
        upto = min(st.epochs, plan.budget)
        value = st.value(upto) if upto else None
        per_seed = {s: (max(p.curve[: plan.budget]) if p.curve else None) for s, p in st.runs.items()}
        first = st.runs[plan.seeds[0]]
        rows.append(
            CandidateResult(
                cand, states.get(cand.key, "waiting"), st.curve(), value, st.best_epoch(upto), notes.get(cand.key),
                st.seconds(), first.run_dir, st.se(upto) if upto else None, st.spent(), per_seed,
            )
        )  # fmt: skip
    done = [r for r in rows if r.state == "complete"]
    settled = all(r.state in ("complete", "stopped", "dropped") for r in rows)
    choice = None
    if done and settled:  # the best value; ties as at a rung (:func:`_rank_key`), never the plan's order
        choice = min(done, key=lambda r: _rank_key(standings[r.candidate.key], plan.budget, r.candidate))
    result = TuneResult(plan, rows, choice, "", sum(r.epochs_spent for r in rows), plan.full_epochs, sum(r.seconds for r in rows))
    result.why, result.branch_note = _why(plan, rows, choice)
    if choice is not None:
        result.noise, result.within_noise_of, result.vanilla_note = _noise(plan, rows, choice)
    return result


def _async_states(plan: Plan, study) -> tuple[dict[str, str], dict[str, str]]:
    from optuna.trial import TrialState

    held = _held(study)
    failed = {
        t.params.get("candidate")
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if not t.user_attrs.get("duplicate")
    }
    states, notes = {}, {}
    for cand in plan.candidates:
        t = held.get(cand.key)
        if t is None:
            states[cand.key] = "interrupted" if cand.key in failed else "waiting"
            continue
        notes[cand.key] = t.user_attrs.get("note")
        if t.state == TrialState.COMPLETE:
            states[cand.key] = "complete"
        elif t.state == TrialState.PRUNED:
            states[cand.key] = "dropped" if t.user_attrs.get("dropped") else "stopped"
        else:
            states[cand.key] = "running"
    return states, {k: v for k, v in notes.items() if v}


def _pm(r: CandidateResult) -> str:
    return f"{r.value:.4f}" + (f" ± {r.se:.4f}" if r.se is not None else "")


def _why(plan: Plan, rows: list[CandidateResult], choice: CandidateResult | None) -> tuple[str, str | None]:
    if choice is None:
        if rows and all(r.state == "dropped" for r in rows):
            return "every candidate diverged; try smaller values", None
        left = [r for r in rows if r.state in ("running", "interrupted", "waiting")]
        return f"{len(left)} of {len(rows)} candidates still to train ({', '.join(r.candidate.label for r in left)})", None
    others = sorted((r for r in rows if r is not choice and r.value is not None), key=lambda r: -r.value)
    seeds = f" (mean of seeds {', '.join(map(str, plan.seeds))})" if len(plan.seeds) > 1 else ""
    parts = [
        f"{choice.candidate.label}: the best validation accuracy{seeds}, {_pm(choice)} at epoch {choice.best_epoch} "
        f"of {plan.budget}"
    ]
    if others:
        o = others[0]
        parts.append(f"next {o.candidate.label} {_pm(o)} ({o.state}{f' after {len(o.curve)} epochs' if o.state != 'complete' else ''})")
    n_stopped = sum(r.state == "stopped" for r in rows)
    n_dropped = sum(r.state == "dropped" for r in rows)
    parts.append(f"{n_stopped} stopped early by successive halving, {n_dropped} dropped (diverged)")
    branch_note = None
    if plan.branch_reason:
        best = {}
        for r in rows:
            m = r.candidate.params.get(BRANCH)
            if r.value is not None and r.state != "dropped" and (m not in best or r.value > best[m].value):
                best[m] = r
        from pdmp_cli.resources import profile_path

        m_p = Profile.load(profile_path(plan.base.profile)).performance_dominant
        desc = {m: f"m_o {m} (γr = {'γp' if m == m_p else '1/γp'})" for m in best}
        chosen = choice.candidate.params.get(BRANCH)
        rest = [f"{desc[m]}: best {r.value:.4f} ({r.candidate.label})" for m, r in best.items() if m != chosen]
        if choice.candidate.vanilla:
            branch_note = f"Eq. 12: no branch preferred: the choice {choice.candidate.label} sets every γ to 1 under either branch"
        else:
            branch_note = (
                f"Eq. 12: validation preferred {desc.get(chosen, chosen)} with {choice.value:.4f}"
                + (f" over {'; '.join(rest)}" if rest else "")
                + f" (both tried because {plan.branch_reason})"
            )
    return "; ".join(parts), branch_note


def _noise(plan: Plan, rows: list[CandidateResult], choice: CandidateResult) -> tuple[list[str], list[str], str | None]:
    """Whether the choice is within noise of the runner-up and of the setting that trains as vanilla."""
    from pdmp_cli.methods import METHODS

    off_name = "PDMP off" if METHODS.get(plan.base.method).uses_optimization_dominant else "the vanilla setting"
    lines, labels = [], []
    vanilla_note = None
    if choice.candidate.vanilla:
        what = "switches PDMP off: every modality's γ is 1" if METHODS.get(plan.base.method).uses_optimization_dominant else "trains exactly as vanilla"
        vanilla_note = f"the choice {choice.candidate.label} {what}, so it trains as --method vanilla"
    others = sorted((r for r in rows if r is not choice and r.value is not None and r.state != "dropped"), key=lambda r: -r.value)
    compare = []
    if others:
        compare.append(("the runner-up", others[0]))
    off = next((r for r in rows if r.candidate.vanilla and r is not choice and r.value is not None), None)
    if off is not None and (not others or off is not others[0]):
        compare.append((off_name, off))
    elif off is not None:
        compare[0] = (f"the runner-up ({off_name})", off)
    for who, r in compare:
        if choice.se is None or r.se is None:
            continue
        diff = choice.value - r.value
        se_diff = math.sqrt(choice.se**2 + r.se**2)
        z = diff / se_diff if se_diff > 0 else (0.0 if diff == 0 else math.inf)
        if z < NOISE_Z:
            labels.append(r.candidate.label)
            lines.append(
                f"within noise of {who} {r.candidate.label}: {choice.value:.4f} against {r.value:.4f}, a difference of "
                f"{diff:.4f} = {z:.1f} standard errors (< {NOISE_Z:g}); validation cannot tell them apart"
            )
    return lines, labels, vanilla_note


def chosen_spec(result: TuneResult) -> dict:
    """The spec file of the choice: ``base`` with its values, for the whole ``base.epochs``; the
    profile and a manifest path absolute (it works from any folder); ``_tune`` records how sure
    the choice is (``pdmp train --spec`` ignores keys starting with ``_``)."""
    c = result.choice.candidate
    spec = result.plan.spec_for(c)
    # what to train, not where or on what: pdmp train's own defaults and flags decide those
    out = spec.model_dump(mode="json", exclude=_NOT_IDENTITY - {"data_root"})
    if Path(str(out["profile"])).is_file():
        out["profile"] = str(Path(out["profile"]).resolve())
    if str(out["dataset"]).endswith(".toml") and Path(out["dataset"]).is_file():
        out["dataset"] = str(Path(out["dataset"]).resolve())
    out["_tune"] = {
        "choice": c.label, "value": result.choice.value, "se": result.choice.se, "seeds": result.plan.seeds,
        "budget": result.plan.budget, "within_noise_of": result.within_noise_of, "noise": result.noise,
        "as_vanilla": result.vanilla_note, "why": result.why, "spent_epochs": result.spent_epochs,
        "full_epochs": result.full_epochs, "summary": str((result.plan.tune_dir / SUMMARY).resolve()),
    }  # fmt: skip
    return out


def write_outputs(result: TuneResult) -> None:
    """``chosen.json`` (when there is a choice) and ``tune.json``, atomically (any worker may)."""
    d = result.plan.tune_dir
    if result.choice is not None:
        result.spec_path = fsutil.write_json(d / CHOSEN, chosen_spec(result))
    fsutil.write_json(d / SUMMARY, result.to_json())


# -----------------------------------------------------------------------------------------------
# the tuned Table I: every method's knob on the same budget, then its choice trained to the end


@dataclass
class TableEntry:
    method: str
    plan: Plan | None  # None: the method has no tunable hyperparameter (trained at its defaults)
    result: TuneResult | None = None
    final_dirs: list[Path] = field(default_factory=list)
    base: TrainSpec | None = None  # the method's spec (the final runs' when it has nothing to tune)

    @property
    def setting(self) -> str:
        if self.plan is None:
            return "defaults (no tunable hyperparameter)"
        c = self.result.choice if self.result is not None else None
        return c.candidate.label if c is not None else "-"


def table_summary(entries: list[TableEntry]) -> str:
    """One line per method: the setting its final runs use, and the tuning budget it had."""
    lines = ["tuned Table I: each method's setting, chosen on validation with the same budget"]
    for e in entries:
        if e.plan is None or e.result is None:
            lines.append(f"  {e.method}: {e.setting}")
            continue
        r, p = e.result, e.plan
        noise = f"; within noise of {', '.join(r.within_noise_of)}" if r.within_noise_of else ""
        off = "; = vanilla" if r.choice is not None and r.choice.candidate.vanilla else ""
        lines.append(
            f"  {e.method}: {e.setting} (validation {_pm(r.choice)}{noise}{off}; {len(p.candidates)} candidates, "
            f"budget {p.budget} epochs x {len(p.seeds)} seed(s), {r.spent_epochs} of {r.full_epochs} epochs spent)"
        )
    return "\n".join(lines)


def table_dir(tune_root: str | os.PathLike, base: TrainSpec) -> Path:
    """The tuned Table I's final runs: ``<root>/table-<dataset>-<hash>/`` (``pdmp report`` reads it)."""
    name, h = dataset_identity(base)
    return Path(tune_root) / f"table-{name}-{h}"


def final_dir(tune_root: Path, base: TrainSpec, method: str, seed: int) -> Path:
    """Where a method's final run of the tuned Table I goes: ``<table dir>/<method>-s<seed>``."""
    return table_dir(tune_root, base) / f"{method}-s{seed}"


def train_final(entry: TableEntry, tune_root: Path, seeds: list[int], command: str, log) -> str | None:
    """Train the method's choice (or its defaults) to the end on each seed, reading the test split
    (these runs alone do); writes ``tuned.json`` beside each. Returns why it stopped early, or None."""
    from pdmp_cli import train
    from pdmp_cli.train.setup import resume_spec

    for seed in seeds:
        d = final_dir(tune_root, entry.base, entry.method, seed)
        summary = d / rundir.SUMMARY
        status = None
        if summary.is_file():
            with contextlib.suppress(OSError, ValueError):
                status = json.loads(summary.read_text()).get("status")
        if entry.result is not None and entry.result.choice is not None:
            spec = entry.plan.spec_for(entry.result.choice.candidate, seed=seed, run_dir=str(d))
        else:
            spec = entry.base.model_copy(update={"seed": seed, "run_dir": str(d)})
        _same_final_run(d, spec)
        if status not in ("complete", "diverged"):
            log(f"{entry.method} ({entry.setting}), seed {seed}: training {spec.epochs} epochs (final run; reads the test split)")
            if (d / rundir.CHECKPOINTS / "last.pt").is_file():
                res = train.run(resume_spec(d), command, resume=True, quiet=True)
            else:
                if d.exists():
                    shutil.rmtree(d)
                res = train.run(resolve_spec(TrainSpec, spec.model_dump(mode="json")), command, quiet=True)
            if res.summary.status == "interrupted":
                return f"interrupted in the final run of {entry.method} (seed {seed}); run the same command again to continue"
        fsutil.write_json(d / TUNED, tuned_record(entry))
        entry.final_dirs.append(d)
    return None


def _same_final_run(d: Path, spec: TrainSpec) -> None:
    """Refuse (PdmpError) a final run folder that holds a run of another setting (a new tuning chose
    another value): reusing or resuming it would label the old setting's numbers with the new one."""
    try:
        old = json.loads((d / rundir.SPEC).read_text())
    except OSError:
        return  # no run there yet
    except ValueError:
        old = None
    want = spec.model_dump(mode="json", exclude=_NOT_IDENTITY)
    diff = sorted(k for k, v in want.items() if not isinstance(old, dict) or old.get(k) != v)
    if diff:
        was = ", ".join(f"{k} {old.get(k)}, not {want[k]}" for k in diff[:3]) if isinstance(old, dict) else "unreadable spec.json"
        raise PdmpError(
            f"{d} holds a final run of another setting ({was}); move or delete it to train this choice, "
            "or give another --tune-dir",
            2,
        )


def tuned_record(entry: TableEntry) -> dict:
    """What ``pdmp report`` shows in the tuned Table I's column: the setting and the budget it had."""
    if entry.plan is None or entry.result is None:
        return {"setting": entry.setting, "tuned": False, "budget": None}
    r, p = entry.result, entry.plan
    return {
        "setting": r.choice.candidate.label if r.choice else None, "tuned": True, "budget": p.budget, "seeds": p.seeds,
        "candidates": len(p.candidates), "spent_epochs": r.spent_epochs, "full_epochs": r.full_epochs,
        "value": r.choice.value if r.choice else None, "se": r.choice.se if r.choice else None,
        "within_noise_of": r.within_noise_of, "as_vanilla": r.vanilla_note, "tune_dir": str(p.tune_dir.resolve()),
    }  # fmt: skip


# -----------------------------------------------------------------------------------------------
# the command line's helpers: values, names, what is printed


def parse_values(items: list[str] | None, gamma_p: list[float] | None = None) -> dict[str, list]:
    """``["ogm-ge.alpha=0.1,0.8"]`` (``--values``) and ``--gamma-p`` -> ``{"ogm-ge.alpha": [0.1, 0.8], "gamma_p": [...]}``."""
    out: dict[str, list] = {"gamma_p": list(gamma_p)} if gamma_p else {}
    for item in items or []:
        key, eq, text = item.partition("=")
        vals = [v.strip() for v in text.split(",") if v.strip()]
        if not (eq and key.strip() and vals):
            raise PdmpError(f"--values needs FIELD=v1,v2 (e.g. --values ogm-ge.alpha=0.1,0.8), got {item!r}", 2)

        def parse(v):
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                return v

        out[key.strip()] = list(dict.fromkeys(parse(v) for v in vals))
    return out


def values_for(method: str, given: dict[str, list]) -> dict[str, list]:
    """The grid of ``method``: what it declares, with the given values replacing or adding to it
    (``gamma_p`` only for a method that reads it; ``<method>.<field>`` only for that method;
    a plain spec field such as ``lr`` for every method)."""
    from pdmp_cli.methods import METHODS

    space = method_space(method)
    for k, v in given.items():
        if k == "gamma_p" and not METHODS.get(method).uses_gamma_p:
            continue
        if "." in k and not k.startswith(f"{method}."):
            continue
        space[k] = v
    return space


def dir_name(base: TrainSpec, seeds: list[int] | None = None) -> str:
    """``synthetic-1a2b3c4d-pdmp-s0``: a plan's folder under ``--tune-dir``, named by the dataset's
    identity (its name and a hash of its manifest), the method and the seeds."""
    name, h = dataset_identity(base)
    seeds = seeds or [base.seed]
    return f"{name}-{h}-{base.method}-s{'-'.join(map(str, seeds))}"


def curve_text(curve: list[float], budget: int) -> str:
    """``0.41 0.55 0.62 ...``: the validation curve within the budget, two decimals each."""
    return " ".join(f"{v:.2f}" for v in curve[:budget]) or "-"


def table(result: TuneResult):
    """Each candidate's state and validation curve (a rich table; the notes are ``r.note``)."""
    from rich.table import Table

    seeds = len(result.plan.seeds) > 1
    t = Table(
        title=f"pdmp tune: {result.plan.base.method}, validation accuracy per epoch{' (mean over seeds)' if seeds else ''}",
        title_justify="left",
    )
    for col in ("candidate", "state", "epochs", "best val ± se (epoch)", "validation curve"):
        t.add_column(col, overflow="fold", justify="right" if col == "epochs" else "left")
    for r in result.candidates:
        mark = " *" if r is result.choice else ""
        best = f"{_pm(r)} ({r.best_epoch})" if r.value is not None else "-"
        t.add_row(r.candidate.display + mark, r.state, str(len(r.curve)), best, curve_text(r.curve, result.plan.budget))
    return t


def compute_line(result: TuneResult) -> str:
    p = result.plan
    n, b = len(result.candidates), p.budget
    pct = 100 * result.spent_epochs / result.full_epochs if result.full_epochs else 0
    seeds = f" x {len(p.seeds)} seeds" if len(p.seeds) > 1 else ""
    folded = f"; {p.grid_size - n} of the grid's {p.grid_size} points were duplicates, trained once" if p.grid_size > n else ""
    how = "asynchronous" if p.asynchronous else "synchronous"
    return (
        f"compute: {result.spent_epochs} of {result.full_epochs} epochs ({pct:.0f}% of a full sweep of "
        f"{n} candidates x {b} epochs{seeds}; {how} successive halving{folded}), {result.seconds:.0f} s of training"
    )
