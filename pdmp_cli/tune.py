"""``pdmp tune``: choose γp (or any hyperparameter a method registers) on the validation split,
by successive halving through Optuna, reusing every partial run.

    from pdmp_cli import sweep, tune
    base = sweep.base_spec("profiles/synthetic.json")
    plan = tune.make_plan(base, "tune/synthetic", values={"gamma_p": [1, 2, 5, 10, 15, 20]})
    result = tune.run(plan)                  # Ctrl-C, then the same call again: it continues
    result.choice, result.why                # the candidate validation preferred, and why
    result.spent_epochs, result.full_epochs  # compute spent against a full sweep
    # plan.tune_dir/chosen.json: `pdmp train --spec tune/synthetic/chosen.json`

How it decides. Each candidate (one γp; with PDMP, when the profile cannot settle m_o, one γp
and one branch of Eq. 12) is one Optuna trial, trained by :func:`pdmp_cli.train.run` in its own
run directory under ``<tune_dir>/runs/``. After every epoch the trial reports its best
validation accuracy so far (what the run's validation-selected epoch would give if it stopped
there) and asks Optuna's ``SuccessiveHalvingPruner`` whether to go on: at the rungs (epochs
``r, r*eta, r*eta**2, ...`` below the budget) a candidate continues only if its value is in the
top ``1/eta`` of the candidates that have reached that rung. Optuna implements the asynchronous
variant (ASHA, Li et al., MLSys 2020): a candidate is judged against those that arrived at the
rung before it (the first always continues), so several workers never wait for each other.
Candidates are trained in the order given. A run trains only up to the next rung; continuing
it is ``pdmp train --resume`` with more epochs, so nothing is ever trained twice: a candidate
that goes on past a rung continues its run, an interrupted one resumes from its checkpoint,
and a finished or stopped one is read back (the same decisions are replayed from its curve).
A candidate whose loss becomes non-finite is dropped, with the run's message as the reason.
The choice is the finished candidate with the best validation accuracy (ties: the first).

Only the validation split is read: the runs are trained with ``evaluate_test=False``, so no
test sample is loaded or evaluated while tuning. ``chosen.json`` is then trained to the end
by ``pdmp train --spec``, which reports test accuracy at the validation-selected epoch.

Several workers (processes, GPUs, nodes) may run the same ``pdmp tune`` command against one
Optuna storage (``--storage``: SQLite by default, in the tune directory; a database URL on a
cluster). Each takes the next candidate no other worker holds; a worker that died is noticed
by Optuna's heartbeat (its trial becomes FAIL after ``GRACE_SECONDS``) and its candidate is
resumed by the next worker that looks. The last worker to finish writes the choice.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from pdmp_cli import rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.profile import Profile, write_json_atomic
from pdmp_cli.specs import TrainSpec, resolve_spec

DEFAULT_GAMMA_P = [1.0, 2.0, 5.0, 10.0, 15.0, 20.0]
DEFAULT_ETA = 2  # "keep the better half"
HEARTBEAT_SECONDS = 60  # a live worker touches its trial this often
GRACE_SECONDS = 180  # a trial silent this long belongs to a dead worker: FAIL, and its candidate is resumed
CHOSEN, SUMMARY = "chosen.json", "tune.json"
# spec fields that say where or on what a run trains, not what it learns
_NOT_IDENTITY = {"run_dir", "runs_root", "device", "devices", "num_workers", "data_root"}
BRANCH = "m_o"  # the pseudo-parameter of a candidate: which modality Eq. 12 takes as optimization-dominant


# -----------------------------------------------------------------------------------------------
# the plan: candidates, rungs, where things go


@dataclass(frozen=True)
class Candidate:
    """One point of the search: spec overrides (``gamma_p``, ``<method>.<field>``) and a profile."""

    key: str  # file-name-safe, unique in the plan: the run directory's name and the trial's parameter
    params: dict  # what is tuned, e.g. {"gamma_p": 5.0} or {"gamma_p": 5.0, "m_o": "audio"}
    profile: str  # the profile path the run uses (a copy with another m_o for the other branch of Eq. 12)

    @property
    def label(self) -> str:
        parts = []
        for k, v in self.params.items():
            name = "γp" if k == "gamma_p" else k
            parts.append(f"{name} {v:g}" if isinstance(v, float) else f"{name} {v}")
        return " · ".join(parts)


@dataclass
class Plan:
    base: TrainSpec  # every candidate's spec is this one with the candidate's overrides
    candidates: list[Candidate]
    budget: int  # epochs a candidate that is never stopped reaches
    min_epochs: int  # the first rung
    eta: int  # reduction factor: 1/eta of the candidates go on at each rung
    tune_dir: Path
    storage: str  # Optuna storage URL
    study_name: str
    notes: list[str] = field(default_factory=list)
    branch_reason: str | None = None  # why both branches of Eq. 12 are tried (None: they are not)

    def rungs(self) -> list[int]:
        """Epochs at which candidates are compared (Optuna's rung steps below the budget)."""
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
    """The grid a method registers: γp for methods that read it (:data:`DEFAULT_GAMMA_P`), and
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


def branch_profile(profile_path: str, profile: Profile, m_o: str, out_dir: Path) -> str:
    """``profile_path`` itself when it names ``m_o``, else a copy with ``m_o`` (criterion manual)."""
    if profile.optimization_dominant == m_o:
        return profile_path
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
    return str(path)


def _key(params: dict) -> str:
    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    return "_".join(f"{k.replace('.', '-')}-{fmt(v)}" for k, v in params.items())


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
) -> Plan:
    """The candidates and rungs for tuning ``base.method`` on ``base``'s data.

    ``values``: field -> values (default: what the method registers, :func:`method_space`).
    ``budget``: epochs of a candidate never stopped (default ``base.epochs``); ``min_epochs``:
    the first rung (default ``budget // eta**2``, at least 1). ``branches``: try both branches of
    Eq. 12 (default: when the profile cannot settle m_o, :func:`eq12_branches`; only for a
    method that reads m_o). Raises PdmpError for a plan that cannot tune anything.
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
    budget = budget or base.epochs
    if budget < 1:
        raise PdmpError(f"--budget must be >= 1 epoch, got {budget}", 2)
    if eta < 2:
        raise PdmpError(f"--eta must be >= 2 (1/eta of the candidates go on at each rung), got {eta}", 2)
    # two rungs by default (e.g. 5 and 10 of 20): a γp's effect takes a few epochs to show, and
    # comparing after one or two epochs favours whatever learns fastest at first (short-horizon bias)
    min_epochs = min_epochs or max(1, budget // eta**2)
    if not 1 <= min_epochs <= budget:
        raise PdmpError(f"--min-epochs must be between 1 and the budget ({budget}), got {min_epochs}", 2)
    space = dict(values) if values else method_space(base.method)
    for k, v in space.items():
        if not v:
            raise PdmpError(f"no values given for {k}", 2)
        if k != "gamma_p" and "." not in k and k not in TrainSpec.model_fields:
            raise PdmpError(f"{k} is not a spec field or <method>.<field>; e.g. gamma_p or ogm-ge.alpha", 2)
    tune_dir = Path(tune_dir)
    profile = Profile.load(profile_path(base.profile))  # a path, or a reference profile's name
    cls = METHODS.get(base.method)
    reads_m_o = cls.uses_optimization_dominant
    notes, reason = [], None
    m_os = [None]
    if reads_m_o and branches is not False:
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
        raise PdmpError(
            f"method {base.method} registers nothing to tune; give values, e.g. --values gamma_p=1,5,10", 2
        )
    names = list(space)
    candidates = []
    for combo in itertools.product(*(space[n] for n in names), m_os):
        params = dict(zip(names, combo[:-1]))
        if "gamma_p" in params:
            params["gamma_p"] = float(params["gamma_p"])  # 5 and 5.0: one candidate, one run directory
        prof = base.profile
        if combo[-1] is not None:
            params[BRANCH] = combo[-1]
            prof = branch_profile(base.profile, profile, combo[-1], tune_dir)
        cand = Candidate(_key(params), params, prof)
        apply_params(base, params, profile=prof)  # a bad value fails here, before anything trains
        candidates.append(cand)
    if len({c.key for c in candidates}) != len(candidates):
        raise PdmpError("two candidates have the same values; remove the repeated ones", 2)
    ident = {
        "spec": base.model_dump(mode="json", exclude=_NOT_IDENTITY),
        "candidates": [c.key for c in candidates],
        "budget": budget,
        "min_epochs": min_epochs,
        "eta": eta,
    }
    name = study_name or f"pdmp-tune-{Path(str(base.dataset)).stem}-{base.method}-s{base.seed}-{stable_hash(ident)[:8]}"
    storage = storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"
    return Plan(base, candidates, budget, min_epochs, eta, tune_dir, storage, name, notes, reason)


# -----------------------------------------------------------------------------------------------
# trainers: the real one (pdmp_cli.train.run, resumed rung by rung) and the protocol tests fake


@dataclass
class Progress:
    """Where a candidate's run stands."""

    curve: list[float]  # validation accuracy after each epoch done
    status: str | None = None  # None (nothing yet), complete, interrupted, diverged, running
    message: str | None = None
    seconds: float = 0.0  # training time of those epochs
    run_dir: str | None = None


class Trainer(Protocol):
    def progress(self, cand: Candidate) -> Progress: ...

    def advance(self, cand: Candidate, epochs: int) -> Progress:
        """Train ``cand`` until it has done ``epochs`` epochs (resuming what it did); return where it stands."""
        ...


class RunTrainer:
    """Trains each candidate in ``<tune_dir>/runs/<key>`` with :func:`pdmp_cli.train.run`,
    ``evaluate_test=False``; continuing a run is a resume with more epochs."""

    def __init__(self, plan: Plan, *, command: str = "", on_step=None):
        self.plan, self.command, self.on_step = plan, command, on_step

    def run_dir(self, cand: Candidate) -> Path:
        """``runs/<key>-<hash of its spec>``: another plan with the same spec (other rungs, budget or
        candidates) reuses the run; another spec (say another lr) never does."""
        from pdmp_cli.cache import stable_hash

        spec = self.plan.spec_for(cand).model_dump(mode="json", exclude=_NOT_IDENTITY | {"epochs"})
        return self.plan.tune_dir / "runs" / f"{cand.key}-{stable_hash(spec)[:8]}"

    def progress(self, cand: Candidate) -> Progress:
        import json

        d = self.run_dir(cand)
        if not (d / rundir.SPEC).is_file():
            return Progress([], run_dir=str(d))
        history, _ = rundir.read_metrics(d)
        try:
            s = json.loads((d / rundir.SUMMARY).read_text())
        except (OSError, ValueError):
            s = {}
        return _progress(history, s.get("status"), s.get("message"), d)

    def advance(self, cand: Candidate, epochs: int) -> Progress:
        from pdmp_cli import train
        from pdmp_cli.train.loop import resume_spec

        d = self.run_dir(cand)
        if (d / rundir.CHECKPOINTS / "last.pt").is_file():
            res = train.run(
                resume_spec(d, {"epochs": epochs}), self.command, resume=True, quiet=True,
                on_step=self.on_step, evaluate_test=False,
            )  # fmt: skip
        else:
            if d.exists():  # started, but no epoch finished: nothing to reuse
                shutil.rmtree(d)
            spec = self.plan.spec_for(cand, epochs=epochs, run_dir=str(d))
            res = train.run(spec, self.command, quiet=True, on_step=self.on_step, evaluate_test=False)
        return _progress(res.metrics, res.summary.status, res.summary.message, res.run_dir)


def _progress(history, status, message, run_dir) -> Progress:
    curve = []
    for m in history:
        if m.val_accuracy is None:
            raise PdmpError(f"run {run_dir} has no validation accuracy; pdmp tune needs a validation split", 2)
        curve.append(m.val_accuracy)
    return Progress(curve, status, message, sum(m.epoch_seconds for m in history), str(run_dir))


# -----------------------------------------------------------------------------------------------
# Optuna: storage, the study, the objective


class _Interrupted(Exception):
    """Ctrl-C inside a candidate: its run saved a checkpoint; the trial is marked FAIL."""


class _Duplicate(Exception):
    """Another worker took the same candidate a moment earlier; this trial stands down."""


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its per-trial lines; pdmp tune prints its own
    return optuna


def open_storage(url: str):
    """An Optuna RDB storage (SQLite, PostgreSQL, MySQL...) with a heartbeat, so the trial of a
    worker that died is failed after :data:`GRACE_SECONDS` and its candidate resumed."""
    optuna = _quiet_optuna()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    import warnings

    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
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
    """candidate key -> the trial that holds it: the latest one not FAIL (running, done or stopped)."""
    from optuna.trial import TrialState

    held = {}
    for t in study.get_trials(deepcopy=False):
        key = t.params.get("candidate")
        if key is None or t.number == exclude or t.state in (TrialState.FAIL, TrialState.WAITING):
            continue
        if key not in held or t.number < held[key].number:
            held[key] = t
    return held


def _sampler(plan: Plan):
    """Hands a new trial the first candidate, in the plan's order, that no trial holds."""
    optuna = _quiet_optuna()
    keys = [c.key for c in plan.candidates]

    class NextCandidate(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            held = _held(study, exclude=trial.number)
            return next((k for k in keys if k not in held), keys[0])

    return NextCandidate()


def open_study(plan: Plan):
    optuna = _quiet_optuna()
    return optuna.create_study(
        study_name=plan.study_name, storage=open_storage(plan.storage), direction="maximize",
        sampler=_sampler(plan), pruner=_pruner(plan), load_if_exists=True,
    )  # fmt: skip


def _objective(plan: Plan, trainer: Trainer, log: Callable[[str], None]):
    import optuna

    keys = [c.key for c in plan.candidates]
    by_key = plan.by_key()

    def objective(trial) -> float:
        key = trial.suggest_categorical("candidate", keys)
        holder = _held(trial.study).get(key)
        if holder is not None and holder.number != trial.number:
            raise _Duplicate(key)
        cand = by_key[key]
        trial.set_user_attr("label", cand.label)
        best: list[float] = []

        def report(curve: list[float], start: int) -> None:
            for epoch in range(start + 1, min(len(curve), plan.budget) + 1):
                best.append(max(best[-1], curve[epoch - 1]) if best else curve[epoch - 1])
                trial.report(best[-1], epoch)
                if epoch < plan.budget and trial.should_prune():  # the budget's end is no rung: it finished
                    n = sum(1 for t in _LiveTrials(trial.study).get_trials(deepcopy=False) if epoch in t.intermediate_values)
                    note = (
                        f"stopped after epoch {epoch}: best validation accuracy {best[-1]:.4f} was not in the "
                        f"top 1/{plan.eta} of the {n} candidates that had reached epoch {epoch}"
                    )
                    trial.set_user_attr("note", note)
                    log(f"{cand.label}: {note}")
                    raise optuna.TrialPruned(note)

        prog = trainer.progress(cand)
        if prog.curve:
            log(f"{cand.label}: {len(prog.curve)} epochs already in {prog.run_dir}; reused")
        report(prog.curve, 0)  # a reused run: its epochs judged as if trained now
        for target in plan.targets():
            if prog.status == "diverged":
                break
            if len(prog.curve) >= target:
                continue
            done = len(prog.curve)
            log(f"{cand.label}: training epoch{f's {done + 1}-' if target > done + 1 else ' '}{target}")
            prog = trainer.advance(cand, target)
            if prog.status == "interrupted":
                for epoch in range(done + 1, len(prog.curve) + 1):
                    trial.report(max(prog.curve[:epoch]), epoch)
                raise _Interrupted(prog.message or "interrupted")
            report(prog.curve, done)
        if prog.status == "diverged":
            note = f"dropped: diverged ({prog.message})"
            trial.set_user_attr("note", note)
            trial.set_user_attr("dropped", True)
            log(f"{cand.label}: {note}")
            raise optuna.TrialPruned(note)
        return best[-1]

    return objective


# -----------------------------------------------------------------------------------------------
# running and the result


@dataclass
class CandidateResult:
    candidate: Candidate
    state: str  # complete | stopped (by successive halving) | dropped (diverged) | running | interrupted | waiting
    curve: list[float]  # validation accuracy per epoch (all epochs its run did)
    value: float | None  # best validation accuracy within the budget (what successive halving compared)
    best_epoch: int | None
    note: str | None = None
    seconds: float = 0.0
    run_dir: str | None = None

    def to_json(self) -> dict:
        return {
            "key": self.candidate.key, "label": self.candidate.label, "params": self.candidate.params,
            "profile": self.candidate.profile, "state": self.state, "epochs": len(self.curve),
            "value": self.value, "best_epoch": self.best_epoch, "curve": self.curve, "note": self.note,
            "seconds": self.seconds, "run_dir": self.run_dir,
        }  # fmt: skip


@dataclass
class TuneResult:
    plan: Plan
    candidates: list[CandidateResult]
    choice: CandidateResult | None
    why: str
    spent_epochs: int
    full_epochs: int  # a full sweep: every candidate for the whole budget
    seconds: float
    spec_path: Path | None = None
    stopped: str | None = None  # why this worker stopped early (Ctrl-C); the same command continues
    branch_note: str | None = None  # which branch of Eq. 12 validation preferred

    @property
    def pending(self) -> list[CandidateResult]:
        return [c for c in self.candidates if c.state in ("running", "interrupted", "waiting")]

    def to_json(self) -> dict:
        p = self.plan
        return {
            "study": p.study_name, "storage": p.storage, "method": p.base.method, "dataset": p.base.dataset,
            "seed": p.base.seed, "budget": p.budget, "min_epochs": p.min_epochs, "eta": p.eta, "rungs": p.rungs(),
            "notes": p.notes, "choice": self.choice.candidate.key if self.choice else None, "why": self.why,
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
    """Tune: take candidates until none is left (this worker and any other on the same storage),
    then summarise; write ``chosen.json`` and ``tune.json`` when every candidate is settled.

    Stops at a Ctrl-C (``result.stopped``): the candidate's run keeps its checkpoint and the same
    call continues it. Raises PdmpError: a storage that cannot be opened, a run that refuses.
    """
    log = log or (lambda s: None)
    trainer = trainer or RunTrainer(plan, command=command, on_step=on_step)
    plan.tune_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(plan)
    objective = _objective(plan, trainer, log)
    stopped = None
    try:
        while True:
            held = _held(study)
            if all(c.key in held for c in plan.candidates):
                break
            study.optimize(objective, n_trials=1, catch=(_Duplicate,), gc_after_trial=False)
    except _Interrupted as e:
        stopped = f"{e}; give the same command again to continue the tuning"
    except KeyboardInterrupt:
        stopped = "interrupted; give the same command again to continue the tuning"
    result = summarize(plan, study, trainer)
    result.stopped = stopped
    if not result.pending and stopped is None:
        write_outputs(result)
    return result


def summarize(plan: Plan, study, trainer: Trainer) -> TuneResult:
    from optuna.trial import TrialState

    held = _held(study)
    failed = {t.params.get("candidate") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    rows = []
    for cand in plan.candidates:
        prog = trainer.progress(cand)
        t = held.get(cand.key)
        within = prog.curve[: plan.budget]
        value = max(within) if within else None
        best_epoch = within.index(value) + 1 if within else None
        note = t.user_attrs.get("note") if t is not None else None
        if t is None:
            state = "interrupted" if cand.key in failed else "waiting"
        elif t.state == TrialState.COMPLETE:
            state = "complete"
        elif t.state == TrialState.PRUNED:
            state = "dropped" if t.user_attrs.get("dropped") else "stopped"
        else:
            state = "running"
        rows.append(CandidateResult(cand, state, prog.curve, value, best_epoch, note, prog.seconds, prog.run_dir))
    done = [r for r in rows if r.state == "complete"]
    settled = all(r.state in ("complete", "stopped", "dropped") for r in rows)
    choice = max(done, key=lambda r: r.value) if done and settled else None  # max keeps the first of equals
    why, branch_note = _why(plan, rows, choice)
    spent = sum(len(r.curve) for r in rows)
    return TuneResult(plan, rows, choice, why, spent, len(rows) * plan.budget, sum(r.seconds for r in rows), branch_note=branch_note)


def _why(plan: Plan, rows: list[CandidateResult], choice: CandidateResult | None) -> tuple[str, str | None]:
    if choice is None:
        if rows and all(r.state == "dropped" for r in rows):
            return "every candidate diverged; try smaller values", None
        left = [r for r in rows if r.state in ("running", "interrupted", "waiting")]
        return f"{len(left)} of {len(rows)} candidates still to train ({', '.join(r.candidate.label for r in left)})", None
    others = sorted((r for r in rows if r is not choice and r.value is not None), key=lambda r: -r.value)
    parts = [
        f"{choice.candidate.label}: the best validation accuracy, {choice.value:.4f} at epoch {choice.best_epoch} "
        f"of {plan.budget}"
    ]
    if others:
        o = others[0]
        parts.append(f"next {o.candidate.label} {o.value:.4f} ({o.state}{f' after {len(o.curve)} epochs' if o.state != 'complete' else ''})")
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
        branch_note = (
            f"Eq. 12: validation preferred {desc.get(chosen, chosen)} with {choice.value:.4f}"
            + (f" over {'; '.join(rest)}" if rest else "")
            + f" (both tried because {plan.branch_reason})"
        )
    return "; ".join(parts), branch_note


def chosen_spec(result: TuneResult) -> dict:
    """The spec file of the choice: ``base`` with its values, for the whole ``base.epochs``."""
    c = result.choice.candidate
    spec = result.plan.spec_for(c)
    # what to train, not where or on what: pdmp train's own defaults and flags decide those
    return spec.model_dump(mode="json", exclude=_NOT_IDENTITY - {"data_root"})


def write_outputs(result: TuneResult) -> None:
    """``chosen.json`` (when there is a choice) and ``tune.json``, atomically (any worker may)."""
    d = result.plan.tune_dir
    if result.choice is not None:
        result.spec_path = write_json_atomic(d / CHOSEN, chosen_spec(result))
    write_json_atomic(d / SUMMARY, result.to_json())


# -----------------------------------------------------------------------------------------------
# the command line's helpers: values, names, what is printed


def parse_values(items: list[str] | None, gamma_p: list[float] | None = None) -> dict[str, list]:
    """``["ogm-ge.alpha=0.1,0.8"]`` (``--values``) and ``--gamma-p`` -> ``{"ogm-ge.alpha": [0.1, 0.8], "gamma_p": [...]}``."""
    import json

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
    """The grid of ``method``: what it registers, with the given values replacing or adding to it
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


def dir_name(base: TrainSpec) -> str:
    """``synthetic-pdmp-s0``: a plan's folder under ``--tune-dir``."""
    return f"{Path(str(base.dataset)).stem}-{base.method}-s{base.seed}"


def curve_text(curve: list[float], budget: int) -> str:
    """``0.41 0.55 0.62 ...``: the validation curve within the budget, two decimals each."""
    return " ".join(f"{v:.2f}" for v in curve[:budget]) or "-"


def table(result: TuneResult):
    """Each candidate's state and validation curve (a rich table; the notes are ``r.note``)."""
    from rich.table import Table

    t = Table(title=f"pdmp tune: {result.plan.base.method}, validation accuracy per epoch", title_justify="left")
    for col in ("candidate", "state", "epochs", "best val (epoch)", "validation curve"):
        t.add_column(col, overflow="fold", justify="right" if col == "epochs" else "left")
    for r in result.candidates:
        mark = " *" if r is result.choice else ""
        best = f"{r.value:.4f} ({r.best_epoch})" if r.value is not None else "-"
        t.add_row(r.candidate.label + mark, r.state, str(len(r.curve)), best, curve_text(r.curve, result.plan.budget))
    return t


def compute_line(result: TuneResult) -> str:
    n, b = len(result.candidates), result.plan.budget
    pct = 100 * result.spent_epochs / result.full_epochs if result.full_epochs else 0
    return (
        f"compute: {result.spent_epochs} of {result.full_epochs} epochs ({pct:.0f}% of a full sweep of "
        f"{n} candidates x {b} epochs), {result.seconds:.0f} s of training"
    )

