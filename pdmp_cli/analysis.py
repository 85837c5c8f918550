"""Modality analysis (Alg. 1, stage 1): unimodal training on a subset -> a dominance profile.

For each modality one unimodal model (encoder + linear head) is trained on a class-stratified
subset of the training split and evaluated on the evaluation split after every epoch. The
accuracy at the final epoch ranks the modalities by performance (first: the
performance-dominant modality m_p); the accuracy after ``early_epochs`` epochs ranks them by
how fast they learn (first: the optimization-dominant modality m_o, paper Sec. III-B). An
optional short vanilla multimodal *probe* ranks the branches of a fused model instead, which is
the criterion of Alg. 1, line 2; when it runs, it decides m_o.

    from pdmp_cli.analysis import run
    from pdmp_cli.specs import AnalyzeSpec
    [out] = run(AnalyzeSpec(dataset="synthetic", encoder="small", epochs=20, early_epochs=2,
                            lr=0.01, subset=[1.0]))
    out.profile.performance_dominant, out.cached, out.path

The measurements (accuracy curves) are cached with diskcache, keyed by everything that changes
them; the profile is re-derived from them on every run, so ``early_epochs`` only re-reads the
cached curves. A per-key file lock keeps two identical concurrent runs from both training.

With ``jobs`` > 1 (``--jobs``; default: the free cores ÷ ``threads`` on a CPU, one per GPU) the
unimodal models train at the same time, each in its own spawned process
(:func:`train_unimodal_parallel` over :mod:`pdmp_cli.pool`; one GPU each where there are several).
Each is seeded as in the sequential order and uses the same ``threads``, so the curves are
bit-identical to ``--jobs 1`` and share its cache entry.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pdmp_cli import __version__
from pdmp_cli.errors import PdmpError
from pdmp_cli.data.split import eval_split, with_validation
from pdmp_cli.fsutil import write_json
from pdmp_cli.profile import Profile, Provenance, ModalityResult, now_iso
from pdmp_cli.specs import AnalyzeSpec

ANALYSIS_VERSION = 2  # bump when the training or evaluation below changes its numbers (2: on validation)
NOISE_Z = 2.0  # a ranking is uncertain when its top two are < NOISE_Z binomial SEs apart


class StepCounter:
    """Optimizer steps taken by this module in this process: a cache hit adds none."""

    def __init__(self):
        self.value = 0

    def add(self, n: int = 1) -> None:
        self.value += n


training_steps = StepCounter()


@dataclass
class AnalysisOutcome:
    """One analysed subset: its profile, where it was written, and whether it was cached."""

    subset: float
    profile: Profile
    path: Path
    spec_path: Path
    cached: bool
    cache_key: str
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Pure functions: ranking, uncertainty, the profile from measured curves
# --------------------------------------------------------------------------------------------
def rank(accuracy: dict[str, float], order: list[str] | None = None) -> list[str]:
    """Modalities best first; ties keep ``order`` (default: the dict's order)."""
    order = list(order or accuracy)
    return sorted(accuracy, key=lambda m: (-accuracy[m], order.index(m)))


def noise_threshold(p1: float, p2: float, n: int, z: float = NOISE_Z) -> float:
    """z binomial standard errors of the difference of two accuracies measured on n samples."""
    return z * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)


def ranking_uncertain(accuracy: dict[str, float], n: int, z: float = NOISE_Z) -> bool:
    """True when the top two accuracies are less than ``z`` SEs apart (or tied)."""
    first, second = rank(accuracy)[:2]
    p1, p2 = accuracy[first], accuracy[second]
    return p1 == p2 or p1 - p2 < noise_threshold(p1, p2, n, z)


def _uncertainty_warning(what: str, accuracy: dict[str, float], n: int, subset: float) -> str:
    first, second = rank(accuracy)[:2]
    p1, p2 = accuracy[first], accuracy[second]
    return (
        f"{what} is uncertain at subset {subset:g}: {first} {p1:.3f} vs {second} {p2:.3f} differ by "
        f"{p1 - p2:.3f}, less than {NOISE_Z:g} standard errors ({noise_threshold(p1, p2, n):.3f}, "
        f"n={n}); use a larger --subset or more --epochs"
    )


TREND_MIN = 4  # epochs a trend is fitted over, at least (shorter curves: unknown)
TREND_ALPHA = 0.05  # one-sided significance of "still rising"


def trend_window(epochs: int) -> int:
    """The last epochs a curve's trend is fitted over: the second half, at least :data:`TREND_MIN`."""
    return min(epochs, max(TREND_MIN, math.ceil(epochs / 2)))


def curve_trend(
    curve: list[float], eval_size: int, alpha: float = TREND_ALPHA
) -> tuple[bool | None, float | None, float | None]:
    """``(still_rising, rise, p)``: is the curve still climbing at its end, beyond evaluation noise?

    A least-squares line (``scipy.stats.linregress``) through the last :func:`trend_window`
    epochs (the second half of training): ``rise`` is its slope times the window's span, the
    accuracy gained over those epochs; ``p`` the one-sided p-value of a positive slope (t-test
    against the epochs' scatter around the line). Still rising when all three hold: the slope is
    significant (``p < alpha``); ``rise`` exceeds one binomial standard error of an accuracy
    at the window's mean level p̄ measured on ``eval_size`` samples, sqrt(p̄(1 - p̄)/n): more
    than re-drawing the validation split would move one accuracy; and the window reaches a new
    best, above every epoch before it (climbing back after a dip to a level the model already
    had is not improving). The first alone flags slopes of a point over dozens of epochs on a
    plateau; the second alone, a noisy jump; the third, a recovery.
    ``(None, None, None)`` for curves shorter than :data:`TREND_MIN` epochs.
    """
    from scipy import stats

    k = trend_window(len(curve))
    if len(curve) < TREND_MIN:
        return None, None, None
    tail = curve[-k:]
    if max(tail) == min(tail):  # a flat line: no slope, no scatter
        return False, 0.0, 1.0
    fit = stats.linregress(range(k), tail, alternative="greater")
    rise, p, level = float(fit.slope) * (k - 1), float(fit.pvalue), sum(tail) / k
    new_best = len(curve) == k or max(tail) > max(curve[:-k])
    return bool(p < alpha and rise > math.sqrt(level * (1 - level) / eval_size) and new_best), rise, p


class EarlyStopping:
    """``--epochs auto``: stop once validation accuracy has not improved for ``patience`` epochs
    (never before ``min_epochs``), or at ``cap``. ``best_epoch`` is 1-based."""

    def __init__(self, patience: int, cap: int, min_epochs: int = 1):
        self.patience, self.cap, self.min_epochs = patience, cap, min_epochs
        self.best, self.best_epoch, self.epoch = -math.inf, 0, 0

    def update(self, accuracy: float) -> bool:
        """Record one epoch's validation accuracy; True when training should stop now."""
        self.epoch += 1
        if accuracy > self.best:
            self.best, self.best_epoch = accuracy, self.epoch
        if self.epoch >= self.cap:
            return True
        return self.epoch >= self.min_epochs and self.epoch - self.best_epoch >= self.patience


def stop_epoch(curve: list[float], patience: int, cap: int, min_epochs: int = 1) -> int:
    """The epoch :class:`EarlyStopping` stops at on ``curve`` (its length if it never does)."""
    stop = EarlyStopping(patience, cap, min_epochs)
    for acc in curve:
        if stop.update(acc):
            return stop.epoch
    return len(curve)


SCALING_Z = 2.0  # "within uncertainty" for the data-scaling rule: z standard errors of the projected gap


def data_scaling(
    late: dict[str, float], half_late: dict[str, float], subset: float, eval_size: int, order: list[str] | None = None,
    z: float = SCALING_Z,
) -> tuple[dict, list[str]]:
    """Each modality's gain per doubling of the training data, and whether the ranking may flip by the full set.

    ``late``: late accuracy at ``subset``; ``half_late``: at the nested half, ``subset / 2``. Per
    modality m: the gain per doubling g_m = late_m - half_m, and the accuracy projected to the whole
    training split, d = log2(1 / subset) doublings away, along that line in log(data):
    proj_m = late_m + d g_m. A modality C ranked below the leader L *may overtake it* when

        g_C > g_L   and   proj_L - proj_C < z * SE,

    SE the binomial standard error of the projected gap: proj_m = (1 + d) late_m - d half_m, so
    var(proj_m) = (1 + d)^2 p(1-p)/n + d^2 q(1-q)/n (p, q: late_m, half_m; n: ``eval_size``), the
    two modalities' variances added. Returns ``(record, warnings)``; ``record["may_flip"]`` lists the
    modalities named.

    What it cannot see: the line in log(data) is an assumption. A curve that saturates (gains
    shrinking with every doubling) is over-extrapolated, so the rule errs toward warning; a modality
    that gains little until some amount of data and then takes off is invisible; and at a fixed
    number of epochs the half-subset model also takes half the optimizer steps, so a gain mixes more
    data with more training. With ``subset`` 1 there is nothing to extrapolate (no record).
    """
    order = list(order or late)
    ranking = rank(late, order)
    d = math.log2(1.0 / subset)
    gain = {m: late[m] - half_late[m] for m in order}
    proj = {m: late[m] + d * gain[m] for m in order}

    def var(m):
        p, q = late[m], half_late[m]
        return ((1 + d) ** 2 * p * (1 - p) + d**2 * q * (1 - q)) / eval_size

    leader = ranking[0]
    may_flip, warnings = [], []
    for c in ranking[1:]:
        gap, se = proj[leader] - proj[c], math.sqrt(var(leader) + var(c))
        if gain[c] > gain[leader] and gap < z * se:
            may_flip.append(c)
            warnings.append(
                f"the performance (late) ranking may flip with more data: {c} gains {gain[c]:+.3f} per doubling of "
                f"the training data (subset {subset / 2:g} -> {subset:g}: {half_late[c]:.3f} -> {late[c]:.3f}), "
                f"{leader} {gain[leader]:+.3f} ({half_late[leader]:.3f} -> {late[leader]:.3f}); along that trend "
                f"{c} reaches {proj[c]:.3f} by the full training set ({d:.2f} doublings) against {leader}'s "
                f"{proj[leader]:.3f}, within {z:g} standard errors ({z * se:.3f}); confirm with "
                f"`--subset {subset:g},{min(1.0, 2 * subset):g}`"
            )
    record = {
        "half_subset": subset / 2,
        "half_late_accuracy": dict(half_late),
        "gain_per_doubling": gain,
        "doublings_to_full": d,
        "projected_full": proj,
        "may_flip": may_flip,
    }
    return record, warnings


def _late(curve: list[float], auto: bool) -> float:
    """The converged accuracy: the last epoch's, or with early stopping the best epoch's (first of equals)."""
    return max(curve) if auto else curve[-1]


def _ranking_text(ranking: list[str]) -> str:
    return " > ".join(ranking)


def build_profile(
    *,
    dataset: str,
    identity: str | None,
    modalities: list[str],
    curves: dict[str, list[float]],
    eval_size: int,
    early_epochs: int,
    subset: float,
    seed: int,
    settings: dict,
    probe: dict | None = None,
    command: str = "",
    notes: list[str] | None = None,
    auto: bool = False,
    cap: int | None = None,
    seed_curves: dict[int, dict[str, list[float]]] | None = None,
    validation: dict | None = None,
    half_curves: dict[int, dict[str, list[float]]] | None = None,
) -> tuple[Profile, list[str]]:
    """The profile and its warnings from per-modality accuracy curves (pure).

    ``curves[m][e]`` is modality m's validation accuracy after epoch e+1; early accuracy is read
    after ``early_epochs`` epochs, late accuracy after the last one (``auto``: early stopping,
    curves may differ in length and late accuracy is the best epoch's; ``cap``: its max_epochs). ``probe`` (optional)
    holds the multimodal probe's ``branch_accuracy``; when given, its ranking decides m_o.
    ``seed_curves`` (``--seeds``): seed -> curves; accuracies are then means over the seeds and
    ``ranking_frequency`` counts each seed's rankings (``curves`` is the first seed's).
    ``half_curves`` (seed -> curves on the nested half of the subset, ``subset / 2``): the data
    scaling check (:func:`data_scaling`) on the seeds' mean late accuracies.

    Besides the noise rule (:func:`ranking_uncertain`), each curve's trend is checked
    (:func:`curve_trend`): a modality ranked below the first whose curve was still rising
    could still overtake it, so the ranking is flagged (``uncertain["late_trend"]``) with a
    warning naming it.
    """
    runs = seed_curves or {seed: curves}
    for cs in runs.values():
        lengths = {len(c) for c in cs.values()}
        if min(lengths) < max(early_epochs, 1) or (len(lengths) != 1 and not auto):
            raise ValueError("every curve needs the same length, at least early_epochs long")
    per_seed = {
        s: ({m: cs[m][early_epochs - 1] for m in modalities}, {m: _late(cs[m], auto) for m in modalities})
        for s, cs in runs.items()
    }
    early = {m: sum(e[m] for e, _ in per_seed.values()) / len(runs) for m in modalities}
    late = {m: sum(lt[m] for _, lt in per_seed.values()) / len(runs) for m in modalities}
    early_ranking, late_ranking = rank(early, modalities), rank(late, modalities)
    uncertain = {
        "early_ranking": ranking_uncertain(early, eval_size),
        "late_ranking": ranking_uncertain(late, eval_size),
    }
    warnings = []
    if uncertain["late_ranking"]:
        warnings.append(_uncertainty_warning("the performance (late) ranking", late, eval_size, subset))
    if uncertain["early_ranking"]:
        warnings.append(_uncertainty_warning("the optimization (early) ranking", early, eval_size, subset))

    # trends: a modality still rising at the end may overtake the ones above it. Early stopping
    # (auto) before the cap already found the curve no longer improving.
    def trend(curve):
        if auto and cap is not None and len(curve) < cap:
            return False, None, None
        return curve_trend(curve, eval_size)

    trends = {m: [trend(cs[m]) for cs in runs.values()] for m in modalities}
    rising = {m: (any(r for r, _, _ in tr) if all(r is not None for r, _, _ in tr) else None) for m, tr in trends.items()}
    rises = {
        m: (sum(x for _, x, _ in tr) / len(tr) if all(x is not None for _, x, _ in tr) else None) for m, tr in trends.items()
    }
    trend_p = {m: (max(q for _, _, q in tr) if all(q is not None for _, _, q in tr) else None) for m, tr in trends.items()}
    climbers = [m for m in late_ranking[1:] if rising[m]]
    uncertain["late_trend"] = bool(climbers)
    for m in climbers:
        k = trend_window(min(len(cs[m]) for cs in runs.values()))
        warnings.append(
            f"the performance (late) ranking could still flip at subset {subset:g}: {m} (ranked "
            f"{late_ranking.index(m) + 1}, {late[m]:.3f} vs {late_ranking[0]} {late[late_ranking[0]]:.3f}) was still "
            f"improving when training stopped (+{rises[m]:.3f} over its last {k} epochs: more than one standard "
            f"error of an accuracy, slope one-sided p < {TREND_ALPHA:g}); "
            f"train longer (more --epochs, or --epochs auto with enough --patience)"
        )

    frequency = None
    if len(runs) > 1:
        frequency = {"late": {}, "early": {}}
        for e, lt in per_seed.values():
            for key, acc in (("late", lt), ("early", e)):
                text = _ranking_text(rank(acc, modalities))
                frequency[key][text] = frequency[key].get(text, 0) + 1
        uncertain["late_seeds"] = len(frequency["late"]) > 1
        if uncertain["late_seeds"]:
            counts = ", ".join(f"{r} on {n} of {len(runs)}" for r, n in frequency["late"].items())
            warnings.append(f"the performance (late) ranking differs between seeds at subset {subset:g}: {counts}")
    scaling = None
    if half_curves:
        half = {m: sum(_late(cs[m], auto) for cs in half_curves.values()) / len(half_curves) for m in modalities}
        scaling, said = data_scaling(late, half, subset, eval_size, modalities)
        uncertain["data_scaling"] = bool(scaling["may_flip"])
        warnings.extend(said)
    notes = list(notes or [])

    m_o, criterion, probe_out = early_ranking[0], "unimodal-early", None
    if probe is not None:
        branch = probe["branch_accuracy"]
        probe_ranking = rank(branch, modalities)
        uncertain["probe_ranking"] = ranking_uncertain(branch, eval_size)
        if uncertain["probe_ranking"]:
            warnings.append(_uncertainty_warning("the probe's branch ranking", branch, eval_size, subset))
        probe_out = {**probe, "ranking": probe_ranking}
        m_o, criterion = probe_ranking[0], "multimodal-probe"
        # both criteria are recorded (early_ranking, probe.ranking); a disagreement is said aloud
        uncertain["criteria_disagree"] = probe_ranking[0] != early_ranking[0]
        if uncertain["criteria_disagree"]:
            warnings.append(
                f"the two m_o criteria disagree at subset {subset:g}: the multimodal probe's branches rank "
                f"{probe_ranking[0]} first (after {probe.get('epochs', '?')} epochs), early unimodal accuracy "
                f"{early_ranking[0]} (epoch {early_epochs}); the probe decided (Alg. 1, line 2), so gamma_r "
                f"follows {probe_ranking[0]}: try both with `pdmp tune`, or pass --probe-epochs 0 for the other"
            )
    first = next(iter(runs.values()))
    profile = Profile(
        dataset=dataset,
        dataset_identity=identity,
        modalities=modalities,
        subset=subset,
        seed=next(iter(runs)),
        settings=settings,
        results={
            m: ModalityResult(
                curve=first[m], early_accuracy=early[m], late_accuracy=late[m], eval_size=eval_size,
                still_rising=rising[m], rise=rises[m], trend_p=trend_p[m], stopped_epoch=len(first[m]) if auto else None,
            )  # fmt: skip
            for m in modalities
        },
        early_ranking=early_ranking,
        late_ranking=late_ranking,
        performance_dominant=late_ranking[0],
        optimization_dominant=m_o,
        optimization_criterion=criterion,
        probe=probe_out,
        uncertain=uncertain,
        validation=validation,
        seeds=list(runs) if len(runs) > 1 else None,
        ranking_frequency=frequency,
        data_scaling=scaling,
        notes=notes + warnings,
        provenance=Provenance(tool_version=__version__, created=now_iso(), command=command, source="measured"),
    )
    return profile, warnings


def subset_study_rows(outcomes: list[AnalysisOutcome]) -> list[dict]:
    """The subset-scale study (the paper's Table VI) as rows: late accuracy per modality, the gap
    between the top two, the ranking, whether it is uncertain (noise, or a modality below the
    first still rising: ``rising`` names them), and whether it agrees with the largest subset's."""
    largest = max(outcomes, key=lambda o: o.subset).profile.late_ranking if outcomes else []
    rows = []
    for o in outcomes:
        p = o.profile
        late = {m: p.results[m].late_accuracy for m in p.modalities}
        top, second = p.late_ranking[:2]
        rows.append(
            {
                "subset": o.subset,
                "late_accuracy": late,
                "difference": late[top] - late[second],
                "ranking": list(p.late_ranking),
                "uncertain": p.uncertain.get("late_ranking", False),
                "rising": [m for m in p.late_ranking if p.results[m].still_rising],
                "agrees": list(p.late_ranking) == list(largest),
                "cached": o.cached,
            }
        )
    return rows


def manual_profile(
    dataset: str,
    performance_dominant: str,
    optimization_dominant: str | None,
    modalities: list[str] | None = None,
    notes: list[str] | None = None,
    command: str = "",
) -> Profile:
    """A hand-written profile (``pdmp profile new``): the two dominant modalities, nothing measured.

    Without ``modalities`` the dataset is loaded to learn its modalities and content identity.
    """
    identity = None
    if modalities is None:
        from pdmp_cli.data import load_dataset

        try:
            bundle = load_dataset(dataset)
        except PdmpError as e:
            raise PdmpError(f"{e}; or pass --modalities to write a profile without loading the dataset", 2) from None
        dataset, identity, modalities = bundle.name, bundle.identity, list(bundle.modalities)
    elif dataset.endswith(".toml"):
        dataset = Path(dataset).stem
    if len(set(modalities)) != len(modalities) or len(modalities) < 2:
        raise PdmpError(f"--modalities must name at least two different modalities, got {modalities}", 2)
    for flag, m in (("--performance-dominant", performance_dominant), ("--optimization-dominant", optimization_dominant)):
        if m is not None and m not in modalities:
            raise PdmpError(
                f"{flag} {m!r} is not a modality of dataset {dataset} ({', '.join(modalities)}); choose one of them",
                2,
            )
    return Profile(
        dataset=dataset,
        dataset_identity=identity,
        modalities=modalities,
        performance_dominant=performance_dominant,
        optimization_dominant=optimization_dominant,
        optimization_criterion="manual",
        notes=list(notes or []) + ["written by hand with `pdmp profile new`; nothing in it was measured"],
        provenance=Provenance(tool_version=__version__, created=now_iso(), command=command, source="manual"),
    )


# --------------------------------------------------------------------------------------------
# Paths, cache keys, locking
# --------------------------------------------------------------------------------------------
def default_stem(dataset_arg: str, name: str, identity: str | None) -> str:
    """The name of a profile written without ``--out``: a dataset of ``data_manifests/`` (given by
    name) keeps its name (``profiles/cremad.json``); a manifest of your own is named by its dataset
    name plus the first 8 hex digits of its data identity (``profiles/my-data-1a2b3c4d.json``), so
    two datasets whose folders share a name never share a profile file."""
    from pdmp_cli.data.manifest import manifest_dir, manifest_path

    try:
        builtin = manifest_path(dataset_arg).resolve().parent == manifest_dir().resolve()
    except PdmpError:
        builtin = True
    return name if builtin or not identity else f"{name}-{identity[:8]}"


def profile_path(out: str | None, dataset: str, subset: float, many: bool) -> Path:
    """``--out`` or ``profiles/<dataset>.json`` (``dataset``: :func:`default_stem`); with several
    subsets ``<stem>.subset-<s>.json``."""
    base = Path(out) if out else Path("profiles") / f"{dataset}.json"
    if many:
        base = base.with_name(f"{base.stem}.subset-{subset:g}{base.suffix or '.json'}")
    return base


def spec_path_for(profile: Path) -> Path:
    """Where the resolved spec of a profile is saved: ``<stem>.spec.json`` beside it."""
    return profile.with_name(f"{profile.stem}.spec.json")


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise PdmpError(f"--out {path} is a directory; give a file path such as {path / 'profile.json'}", 2)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise PdmpError(f"cannot write {path}: {parent} is not writable; choose another --out", 2)


_MEASURED_SETTINGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "encoder")


def check_overwrite(path: Path, dataset: str, identity: str | None, spec: AnalyzeSpec, subset: float, force: bool) -> None:
    """Refuse (PdmpError) to replace ``path`` when it holds another result: a profile of another
    dataset (name or content identity: two datasets whose folders share a name), or of this one
    measured with other settings, or a file that is no profile pdmp analyze wrote (a hand-written
    one). ``force`` replaces it anyway. The same dataset and settings again: replaced (a rerun)."""
    import json

    if force or not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    why = None
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict) or "dataset_identity" not in old:
        why = "a file that is not a profile measured by pdmp analyze (a hand-written one?)"
    elif old.get("dataset") != dataset or old.get("dataset_identity") != identity:
        why = (f"the profile of dataset {old.get('dataset')} (data identity {old.get('dataset_identity')}), not of "
               f"{dataset} (data identity {identity})")
    else:
        now = {k: getattr(spec, k) for k in _MEASURED_SETTINGS} | {"subset": subset}
        was = {k: old["settings"].get(k) for k in _MEASURED_SETTINGS} | {"subset": old.get("subset")}
        diff = [f"{k} {was[k]!r} -> {now[k]!r}" for k in now if was[k] is not None and was[k] != now[k]]
        if diff:
            why = f"a profile of {dataset} measured with other settings ({', '.join(diff)})"
    if why:
        other = path.with_name(f"{path.stem}-{identity[:8]}{path.suffix}") if identity else None
        where = f" such as --out {other}" if other is not None and not other.exists() else ""
        raise PdmpError(f"{path} already holds {why}; pass --force to replace it, or --out another path{where}", 2)


def cache_key(
    kind: str, identity: str, modalities: list[str], subset: float, spec: AnalyzeSpec, device: str,
    validation: dict | None = None,
) -> str:  # fmt: skip
    """Everything that changes a measurement: data, subset, seed, settings, the validation split
    (``validation``: :func:`~pdmp_cli.data.split.record_of`), device, code version."""
    from pdmp_cli.cache import stable_hash

    settings = {k: getattr(spec, k) for k in _MEASURED_SETTINGS}
    if spec.epochs == "auto":
        settings.update(patience=spec.patience, max_epochs=spec.max_epochs, early_epochs=spec.early_epochs)
    if kind == "probe":
        settings.update(probe_epochs=spec.probe_epochs, probe_fusion=spec.probe_fusion)
    return stable_hash(
        {
            "kind": kind,
            "pdmp": __version__,
            "analysis": ANALYSIS_VERSION,
            "dataset_identity": identity,
            "modalities": modalities,
            "subset": subset,
            "settings": settings,
            "validation": validation,
            "device": device,
        }
    )


@contextmanager
def _key_lock(key: str, on_wait=None):
    """An exclusive lock per cache key, across processes (released if the holder dies)."""
    from pdmp_cli.cache import cache_dir

    lock_dir = cache_dir() / "analysis" / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: diskcache's lock (not released if the holder is killed)
        import diskcache

        from pdmp_cli.cache import open_cache

        with open_cache("analysis") as cache, diskcache.Lock(cache, f"lock/{key}", expire=24 * 3600):
            yield
        return
    with open(lock_dir / f"{key}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _curve(c) -> bool:
    return isinstance(c, list) and bool(c) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in c)


def unimodal_record_ok(modalities):
    """Whether a cached unimodal record has the shape pdmp writes: a curve per modality, a date."""
    return lambda r: (isinstance(r.get("curves"), dict) and set(r["curves"]) == set(modalities)
                      and all(map(_curve, r["curves"].values())) and isinstance(r.get("measured"), str))


def probe_record_ok(modalities):
    """Whether a cached probe record has the shape :func:`train_probe` returns."""
    return lambda r: (_curve(r.get("fused_curve")) and isinstance(r.get("branch_curves"), dict)
                      and set(r["branch_curves"]) == set(modalities) and all(map(_curve, r["branch_curves"].values()))
                      and isinstance(r.get("branch_accuracy"), dict))


def _cached(key: str, measure, use_cache: bool, on_wait=None, valid=None) -> tuple[dict, bool]:
    """``measure()`` once per key: served from the cache when present (unless ``use_cache`` is
    False, which recomputes and refreshes the entry). Records are stored as JSON text (no pickle,
    :mod:`pdmp_cli.cache`); an entry that is not a JSON object (or fails ``valid``: a planted or
    foreign record) is a miss, measured and replaced. A fresh record is returned as it reads back,
    so a hit and a miss give the same value."""
    from pdmp_cli.cache import json_from_text, json_to_text, note_foreign, open_cache

    def hit_of(cache):
        raw = cache.get(key)
        rec = json_from_text(raw)
        ok = isinstance(rec, dict) and (valid is None or valid(rec))
        if raw is not None and not ok:
            note_foreign("analysis")
        return rec if ok else None

    with open_cache("analysis") as cache:
        if use_cache and (hit := hit_of(cache)) is not None:
            return hit, True
        with _key_lock(key, on_wait):
            if use_cache and (hit := hit_of(cache)) is not None:  # a concurrent run finished it
                return hit, True
            text = json_to_text(measure())
            cache.set(key, text)
            return json_from_text(text), False


# --------------------------------------------------------------------------------------------
# Training: one unimodal model per modality, and the optional multimodal probe
# --------------------------------------------------------------------------------------------
def _loaders(bundle, indices: list[int], spec: AnalyzeSpec):
    import torch
    from torch.utils.data import DataLoader, Subset

    train = DataLoader(
        Subset(bundle.train, indices),
        batch_size=spec.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(spec.seed),
        num_workers=spec.num_workers,
    )
    evaluation, _ = eval_split(bundle)  # the validation split (test only under --select-on-test)
    return train, DataLoader(evaluation, batch_size=max(spec.batch_size, 256), num_workers=spec.num_workers)


def _optimizer(model, spec: AnalyzeSpec):
    import torch

    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def stop_if_nonfinite(bad_steps: int, what: str, epoch: int, spec: AnalyzeSpec) -> None:
    """As ``pdmp train`` does: a non-finite training loss stops the analysis (nothing cached or
    written) instead of ranking a model that learnt nothing."""
    if bad_steps:
        raise PdmpError(f"{what}'s training loss became inf/nan in {bad_steps} steps of epoch {epoch + 1}; the "
                        f"analysis stopped and nothing was cached or written; try a smaller --lr than {spec.lr:g}", 1)


def train_unimodal(bundle, modality: str, indices: list[int], spec: AnalyzeSpec, device, advance=None) -> list[float]:
    """Train one unimodal model on ``indices`` of the training split; its accuracy on the
    validation split (:func:`~pdmp_cli.data.split.eval_split`) after each epoch.

    ``spec.epochs == "auto"``: until validation accuracy stops improving (:class:`EarlyStopping`:
    ``spec.patience`` epochs without a new best, at least ``early_epochs``, at most ``spec.max_epochs``).
    """
    import torch
    import torch.nn.functional as F

    from pdmp_cli.models.multimodal import build_unimodal
    from pdmp_cli.runtime import place_input, place_model, seed_everything

    seed_everything(spec.seed)  # each modality starts from the same seed, whatever ran before
    model = place_model(build_unimodal(spec.encoder, bundle.in_channels[modality], bundle.num_classes), device)
    opt = _optimizer(model, spec)
    train_loader, eval_loader = _loaders(bundle, indices, spec)
    n_eval = len(eval_loader.dataset)
    stop = EarlyStopping(spec.patience, spec.max_epochs, spec.early_epochs) if spec.epochs == "auto" else None
    curve = []
    for epoch in range(spec.max_epochs if stop else spec.epochs):
        model.train()
        bad = torch.zeros((), dtype=torch.int64, device=device)  # non-finite losses: read once per epoch
        for inputs, y in train_loader:
            x, y = place_input(inputs[modality], device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            bad += ~torch.isfinite(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            training_steps.add()
        stop_if_nonfinite(int(bad), f"the {modality} model", epoch, spec)
        model.eval()
        correct = 0
        with torch.no_grad():
            for inputs, y in eval_loader:
                pred = model(place_input(inputs[modality], device)).argmax(dim=1)
                correct += (pred == y.to(device)).sum().item()
        curve.append(correct / n_eval)
        if advance:
            advance(curve[-1])
        if stop is not None and stop.update(curve[-1]):
            break
    return curve


def _unimodal_job(spec: AnalyzeSpec, modality: str, indices: list[int], device: str, report) -> tuple[list[float], int]:
    """One modality's :func:`train_unimodal` in its own process (:mod:`pdmp_cli.pool`): each epoch's
    accuracy goes to ``report``; returns ``(curve, optimizer steps)``."""
    import torch

    from pdmp_cli.data import load_dataset
    from pdmp_cli.runtime import use_threads

    use_threads(spec)
    dev = torch.device(device)
    bundle = load_dataset(spec.dataset, data_root=spec.data_root)  # from the cache: the parent's data
    bundle, _ = with_validation(bundle, spec.val_fraction, spec.seed, select_on_test=spec.select_on_test)
    before = training_steps.value
    curve = train_unimodal(bundle, modality, indices, spec, dev, report)
    return curve, training_steps.value - before


def _gpu_count(device) -> int:
    import torch

    return torch.cuda.device_count() if device.type == "cuda" else 0


def worker_devices(modalities: list[str], device) -> list[str]:
    """Where each modality's process trains: GPUs round-robin (modality i on GPU i mod count), else ``device``."""
    import torch

    if device.type == "cuda":
        n = torch.cuda.device_count()
        return [f"cuda:{i % n}" for i in range(len(modalities))]
    return [str(device)] * len(modalities)


def train_unimodal_parallel(
    bundle, indices: list[int], spec: AnalyzeSpec, device, task=None, jobs: int | None = None
) -> dict[str, list[float]]:
    """:func:`train_unimodal` for every modality, ``jobs`` at a time, each in its own spawned process
    (:func:`pdmp_cli.pool.run_tasks`; default: one per modality).

    ``task(m)`` (optional) returns modality m's progress callback. Every process loads the dataset
    itself (served from the cache), fixes its threads (``spec.threads``) and trains with the same
    seed as the sequential order, so the curves are bit-identical to it. A failure in any process
    raises PdmpError naming the modality; Ctrl-C stops them all (KeyboardInterrupt: nothing is cached).
    """
    from pdmp_cli.pool import Task, run_tasks

    mods = list(bundle.modalities)
    advance = {m: task(m) if task else None for m in mods}
    tasks = [Task(m, _unimodal_job, (spec, m, indices, d), d) for m, d in zip(mods, worker_devices(mods, device))]

    def message(m, acc):
        if advance[m]:
            advance[m](acc)

    out = run_tasks(tasks, jobs or len(mods), on_message=message, stop_on_error=True)
    if out.stopped_by is not None:
        raise KeyboardInterrupt
    if out.errors:
        m, msg = next(iter(out.errors.items()))
        # a PdmpError comes as its own line, with its own remedy; an unexpected one as "Type: message"
        unexpected = re.match(r"^\w+(Error|Exception|Interrupt|Exit): ", msg)
        hint = "; run with --jobs 1 to see it in full" if unexpected else ""
        raise PdmpError(f"training the {m} model in its own process failed: {msg}{hint}", 1)
    curves = {}
    for m in mods:
        curves[m], steps = out.results[m]
        training_steps.add(steps)
    return curves


def train_probe(bundle, indices: list[int], spec: AnalyzeSpec, device, advance=None) -> dict:
    """A short vanilla multimodal run (``probe_fusion``): fused and per-branch validation accuracy per epoch."""
    import torch
    import torch.nn.functional as F

    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.runtime import place_model, seed_everything, to_device

    seed_everything(spec.seed)
    model = place_model(build_multimodal(spec.encoder, spec.probe_fusion, bundle.in_channels, bundle.num_classes), device)
    opt = _optimizer(model, spec)
    train_loader, eval_loader = _loaders(bundle, indices, spec)
    fused, branches = [], {m: [] for m in bundle.modalities}
    for epoch in range(spec.probe_epochs):
        model.train()
        bad = torch.zeros((), dtype=torch.int64, device=device)
        for inputs, y in train_loader:
            out = model(to_device(inputs, device), with_branches=False)
            loss = F.cross_entropy(out.logits, y.to(device))
            bad += ~torch.isfinite(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            training_steps.add()
        stop_if_nonfinite(int(bad), "the multimodal probe", epoch, spec)
        model.eval()
        correct = {"fused": 0, **{m: 0 for m in bundle.modalities}}
        with torch.no_grad():
            for inputs, y in eval_loader:
                y = y.to(device)
                out = model(to_device(inputs, device))
                correct["fused"] += (out.logits.argmax(1) == y).sum().item()
                for m, s in out.branch_logits.items():
                    correct[m] += (s.argmax(1) == y).sum().item()
        n = len(eval_loader.dataset)
        fused.append(correct["fused"] / n)
        for m in bundle.modalities:
            branches[m].append(correct[m] / n)
        if advance:
            advance(fused[-1])
    return {
        "fusion": spec.probe_fusion,
        "epochs": spec.probe_epochs,
        "fused_curve": fused,
        "branch_curves": branches,
        "branch_accuracy": {m: c[-1] for m, c in branches.items()},
    }


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------
def run(spec: AnalyzeSpec, command: str = "", progress: bool = True, console=None, force: bool = False) -> list[AnalysisOutcome]:
    """Analyse every subset of ``spec``: one profile (and its resolved spec) written per subset.
    An existing profile of another dataset or other settings is replaced only with ``force``
    (:func:`check_overwrite`).

    Raises PdmpError for an unknown dataset, an unwritable output, or an unusable device.
    """
    from pdmp_cli.data.check import load_checked
    from pdmp_cli.runtime import resolve_device, stratified_subset

    from pdmp_cli.pool import default_jobs
    from pdmp_cli.runtime import use_threads

    spec = spec.model_copy(update={"threads": use_threads(spec)})  # fixed before any work
    device = resolve_device(spec.device)

    @functools.cache
    def jobs() -> int:  # asked only when a model trains: the free-core probe takes a quarter second
        return spec.jobs or default_jobs(device.type, spec.threads, _gpu_count(device))

    # a broken dataset (missing or corrupt files, unknown labels) stops here with one line
    bundle, _ = load_checked(spec.dataset, spec.data_root, skip_bad=spec.skip_bad)
    many = len(spec.subset) > 1
    stem = default_stem(spec.dataset, bundle.name, bundle.identity)
    paths = [profile_path(spec.out, stem, s, many) for s in spec.subset]
    for p, s in zip(paths, spec.subset):
        _check_writable(p)
        check_overwrite(p, bundle.name, bundle.identity, spec, s, force)

    def waiting():
        if console is not None:
            console.print("another pdmp analyze is computing the same analysis; waiting for its result")

    outcomes = []
    from pdmp_cli.progress import EpochBars  # bars on a terminal, one line per epoch with an ETA otherwise

    seeds = spec.seeds or [spec.seed]
    epochs = spec.max_epochs if spec.epochs == "auto" else spec.epochs  # the bars' length (auto: the cap)
    with EpochBars(progress, console) as bars:
        for subset, path in zip(spec.subset, paths):
            # one measurement per seed, each with its own validation split and subset, cached alone
            seed_curves, splits, keys, cached, indices = {}, {}, [], True, []
            # one subset s < 1: also its nested half, for each modality's gain per doubling (data_scaling)
            scaling, half_curves = spec.scaling and not many and subset < 1, {}
            for seed in seeds:
                sspec = spec.model_copy(update={"seed": seed})
                sbundle, split = with_validation(bundle, spec.val_fraction, seed, select_on_test=spec.select_on_test)
                sidx = stratified_subset(sbundle.train_labels, subset, seed)
                what = f"subset {subset:g}" + (f" · seed {seed}" if len(seeds) > 1 else "")

                def measure_unimodal(sbundle=sbundle, sidx=sidx, sspec=sspec, what=what):
                    t0 = time.perf_counter()
                    if len(sbundle.modalities) > 1 and jobs() > 1:  # each modality in its own process
                        curves = train_unimodal_parallel(
                            sbundle, sidx, sspec, device, lambda m: bars.task(f"{what} · {m}", epochs), jobs=jobs()
                        )
                    else:
                        curves = {
                            m: train_unimodal(sbundle, m, sidx, sspec, device, bars.task(f"{what} · {m}", epochs))
                            for m in sbundle.modalities
                        }
                    return {"curves": curves, "measured": now_iso(), "seconds": time.perf_counter() - t0}

                key = cache_key("unimodal", bundle.identity, bundle.modalities, subset, sspec, device.type, split)
                record, hit = _cached(key, measure_unimodal, spec.cache, waiting, unimodal_record_ok(bundle.modalities))
                seed_curves[seed], splits[seed], cached = record["curves"], split, cached and hit
                keys.append(key)
                if scaling:  # the nested half of this subset (stratified_subset is nested: same draws, fewer kept)
                    hidx = stratified_subset(sbundle.train_labels, subset / 2, seed)
                    hkey = cache_key("unimodal", bundle.identity, bundle.modalities, subset / 2, sspec, device.type, split)
                    half_what = f"subset {subset / 2:g} (half)" + (f" · seed {seed}" if len(seeds) > 1 else "")
                    hrecord, hhit = _cached(
                        hkey, lambda hidx=hidx, w=half_what: measure_unimodal(sidx=hidx, what=w), spec.cache, waiting,
                        unimodal_record_ok(bundle.modalities),
                    )
                    half_curves[seed], cached = hrecord["curves"], cached and hhit
                if seed == seeds[0]:
                    first_bundle, indices, measured = sbundle, sidx, record["measured"]
            probe, probe_cached = None, True
            if spec.probe_epochs > 0:  # on the first seed
                sspec = spec.model_copy(update={"seed": seeds[0]})
                pkey = cache_key("probe", bundle.identity, bundle.modalities, subset, sspec, device.type, splits[seeds[0]])
                probe, probe_cached = _cached(
                    pkey,
                    lambda: train_probe(
                        first_bundle, indices, sspec, device, bars.task(f"subset {subset:g} · probe", spec.probe_epochs)
                    ),
                    spec.cache,
                    waiting,
                    probe_record_ok(bundle.modalities),
                )
            notes = []
            if cached:
                notes.append(f"unimodal curves served from the analysis cache (measured {measured})")
            settings = {
                **spec.model_dump(mode="json", exclude={"dataset", "subset", "out", "cache", "device", "jobs"}),
                "device": device.type,
                "train_samples": len(indices),
            }
            profile, warnings = build_profile(
                dataset=bundle.name,
                identity=bundle.identity,
                modalities=list(bundle.modalities),
                curves=seed_curves[seeds[0]],
                eval_size=len(eval_split(first_bundle)[0]),
                early_epochs=spec.early_epochs,
                subset=subset,
                seed=seeds[0],
                settings=settings,
                probe=probe,
                command=command,
                notes=notes,
                auto=spec.epochs == "auto",
                cap=spec.max_epochs,
                seed_curves=seed_curves if len(seeds) > 1 else None,
                validation=splits[seeds[0]],
                half_curves=half_curves or None,
            )
            key = keys[0]
            spath = spec_path_for(path)
            try:
                write_json(spath, spec.model_copy(update={"subset": [subset], "out": str(path)}).model_dump(mode="json"))
                profile.save(path)
            except OSError as e:
                raise PdmpError(f"cannot write {path}: {e.strerror}; choose another --out", 1) from None
            outcomes.append(
                AnalysisOutcome(
                    subset=subset,
                    profile=profile,
                    path=path,
                    spec_path=spath,
                    cached=cached and probe_cached,
                    cache_key=key,
                    warnings=warnings,
                )
            )
    return outcomes
