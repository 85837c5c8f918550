"""Setting a run up: :func:`setup` does everything that can refuse before any file is written.

    run = setup(spec, device, resume=False)   # profile, data, checks, model, method, optimizer; writes nothing
    open_run_dir(run, command)               # the first write: a new run directory, or the resumed one's files

``pdmp train``, ``pdmp train --dry-run`` and the step-level tests all start with :func:`setup`.
:class:`Run` holds what the loop works on. :meth:`Run.state_dict` / :meth:`Run.load_state_dict`
are the one checkpoint format (``last.pt``; ``best.pt`` is its weights part), in the manner of
nanoGPT's one ``checkpoint`` dict and its resume block that reads exactly those keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pdmp_cli import __version__, distributed, fsutil, rundir
from pdmp_cli.data.check import load_checked
from pdmp_cli.data.packed import collate as packed_collate
from pdmp_cli.data.packed import load_packed, train_loader
from pdmp_cli.data.split import split_file, with_validation
from pdmp_cli.errors import PdmpError, format_validation_error
from pdmp_cli.methods import Method, build_method
from pdmp_cli.models.multimodal import MultimodalModel, build_multimodal
from pdmp_cli.profile import Profile
from pdmp_cli.rundir import EpochMetrics, RunSummary, selection_score, summarize
from pdmp_cli.runtime import place_model, seed_everything
from pdmp_cli.signals import ignore_stop_signals
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import amp, checkpoint
from pdmp_cli.train.schedule import LRSchedule
from pdmp_cli.train.state import EpochStats, TrainStep

# settings a resumed run may change (the flags `pdmp train --resume` accepts); any other difference
# from the checkpoint is refused. Where the run lives (run_dir, runs_root) is no setting: a moved
# run directory resumes.
RESUMABLE = frozenset({"epochs", "device", "devices", "precision", "num_workers", "data_root", "tensorboard", "threads"})
_LOCATION = frozenset({"run_dir", "runs_root"})


@dataclass
class Run:
    """One run, set up: what it trains, on what data, and how far it got.

    :func:`setup` fills every field from a spec. A test or a benchmark may build one by hand from a
    model, a method and an optimizer (the rest defaults: fp32, no data, no run directory) and hand
    it to :func:`pdmp_cli.train.loop.train_one_epoch`.
    """

    spec: TrainSpec
    device: torch.device
    model: MultimodalModel
    method: Method
    optimizer: torch.optim.Optimizer
    precision: amp.Precision | None = None  # None: fp32
    lr_schedule: LRSchedule | None = None
    data_gen: torch.Generator = field(default_factory=torch.Generator)  # the data order's own generator
    ddp_model: torch.nn.Module | None = None  # TrainStep in DDP (several processes), else None
    # the data
    bundle: object = None
    data_report: object = None
    packed_lines: list[str] = field(default_factory=list)
    val_split: dict = field(default_factory=dict)  # split.json: where validation comes from
    profile: Profile | None = None
    profile_path: str = ""
    evaluate_test: bool = True
    val_loader: object = None
    test_loader: object = None
    # how far it got (a resume restores these from last.pt)
    resumed: bool = False
    history: list[EpochMetrics] = field(default_factory=list)
    start_epoch: int = 0
    start_step: int = 0  # > 0: a mid-epoch checkpoint; ``stats`` holds that epoch's sums so far
    stats: EpochStats | None = None
    wall_before: float = 0.0
    best_score: float | None = None  # selection_score of the best epoch so far (best.pt)
    t0: float = field(default_factory=time.monotonic)
    # the run directory (open_run_dir)
    run_dir: Path | None = None
    sha: str | None = None  # sha256 of the profile copy
    spec_json: dict | None = None
    command: str = ""

    def __post_init__(self):
        if self.precision is None:
            self.precision = amp.Precision("fp32", self.device)

    def wall(self) -> float:
        return self.wall_before + time.monotonic() - self.t0

    # -- the one checkpoint format --------------------------------------------------------------
    def state_dict(self, epoch: int, step: int = 0, stats: EpochStats | None = None, data_gen_state=None) -> dict:
        """last.pt: everything needed to continue at (epoch, step), both 0-based. ``stats`` and
        ``data_gen_state`` (the epoch's starting order) only mid-epoch."""
        return {
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),  # its heads and buffers
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "data_gen": self.data_gen.get_state() if data_gen_state is None else data_gen_state,
            "rng": checkpoint.rng_state(),
            "stats": stats.state_dict() if stats is not None else None,
            "history": [m.model_dump() for m in self.history],
            "spec": self.spec_json,
            "wall_seconds": self.wall(),
            "profile_sha256": self.sha,
            "amp": self.precision.state_dict(),  # fp16: the GradScaler's scale; None otherwise
            "lr_schedule": self.lr_schedule.state_dict() if self.lr_schedule is not None else None,
        }

    def best_state(self, m: EpochMetrics) -> dict:
        """best.pt: the weights part of :meth:`state_dict` and the epoch ``m`` they scored."""
        return {"model": self.model.state_dict(), "method": self.method.state_dict(), "epoch": m.epoch,
                "test_accuracy": m.test_accuracy, "val_accuracy": m.val_accuracy, "spec": self.spec_json}  # fmt: skip

    def load_state_dict(self, ckpt: dict) -> None:
        """Continue from a last.pt (checked by :func:`require_current`): exactly its keys, no fallbacks."""
        self.model.load_state_dict(ckpt["model"])
        self.method.load_state_dict(ckpt["method"])  # its heads and state (prototypes, running means)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_schedule.load_state_dict(ckpt["lr_schedule"])
        checkpoint.set_rng_state(ckpt["rng"])
        self.data_gen.set_state(ckpt["data_gen"])
        self.history = [EpochMetrics.model_validate(h) for h in ckpt["history"]]
        self.start_epoch, self.start_step, self.wall_before = ckpt["epoch"], ckpt["step"], ckpt["wall_seconds"]
        if ckpt["stats"] is not None:
            self.stats = EpochStats(self.model.modalities, self.device)
            self.stats.load_state_dict(ckpt["stats"])
        self.precision.load_state_dict(ckpt["amp"])
        self.best_score = max((selection_score(m) for m in self.history), default=None)

    def save(self, name: str, state: dict) -> None:
        """Write ``checkpoints/<name>`` (rank 0 calls it); refuses if the run directory vanished."""
        require_run_dir(self.run_dir)
        checkpoint.save(self.run_dir / rundir.CHECKPOINTS / name, state)

    # -- summary.json ---------------------------------------------------------------------------
    def write_summary(self, status: str, message: str | None = None, in_place: bool = False) -> RunSummary:
        s = summarize(
            self.history, dataset=self.bundle.name, method=self.spec.method, fusion=self.spec.fusion,
            encoder=self.spec.encoder, gamma_p=self.spec.gamma_p, gamma=self.method.gamma, seed=self.spec.seed,
            profile_sha256=self.sha, status=status, epochs_planned=self.spec.epochs, wall_seconds=self.wall(),
            message=message, val_split=self.val_split, command=self.command, pdmp_version=__version__,
        )  # fmt: skip
        if distributed.is_main():
            require_run_dir(self.run_dir)
            fsutil.write_json(self.run_dir / rundir.SUMMARY, s.model_dump(mode="json"), in_place_fallback=in_place)
        return s


def setup(spec: TrainSpec, device: torch.device, *, resume: bool = False, evaluate_test: bool = True,
          dry_run: bool = False) -> Run:  # fmt: skip
    """Everything a run does before its first write; every refusal of ``pdmp train`` is raised here.

    ``resume``: restore ``spec.run_dir``'s last.pt (refused unless the spec matches it but for
    :data:`RESUMABLE`). ``evaluate_test=False`` (``pdmp tune``): no test sample is read.
    ``dry_run``: the data is checked but not packed, and the global batch is checked against
    ``spec.devices`` (no process group is running).

    Raises:
        PdmpError: a profile that does not fit the dataset, a method that cannot run with this
            profile or dataset, an occupied run directory, a resume that does not fit its run,
            a precision the device cannot run, a global batch that does not split over the ranks.
    """
    t0 = time.monotonic()
    # -- profile and data
    if resume:
        if not spec.run_dir:
            raise PdmpError("resume needs spec.run_dir: the run directory to continue", 2)
        profile_path = str(Path(spec.run_dir) / rundir.PROFILE)  # the copy: the original may have moved
    else:
        from pdmp_cli.resources import profile_path as find_profile

        profile_path = str(find_profile(spec.profile))  # a path, or a reference profile's name
    profile = Profile.load(profile_path)
    dataset = spec.dataset or profile.dataset
    # a broken dataset stops here with one line (or, with skip_bad, its bad samples are left out); a
    # dataset of files is packed after the check (pdmp_cli.data.packed), or read from its packed store
    # without a check when the data did not change: rank 0 checks and packs, every rank then reads
    packed_lines: list[str] = []
    if dry_run:
        bundle, data_report = load_checked(dataset, spec.data_root, skip_bad=spec.skip_bad)
    else:
        splits = ("train", "val", "test") if evaluate_test else ("train", "val")
        if distributed.active():
            distributed.on_main(lambda: load_packed(dataset, spec.data_root, skip_bad=spec.skip_bad, splits=splits)[2])
        bundle, data_report, packed_lines = load_packed(dataset, spec.data_root, skip_bad=spec.skip_bad, splits=splits)
    check_profile(profile, profile_path, dataset, bundle)
    # the epoch is chosen on validation: the manifest's own split, else one carved from train
    bundle, val_split = with_validation(bundle, spec.val_fraction, spec.seed, select_on_test=spec.select_on_test)
    if not evaluate_test and bundle.val is None:
        raise PdmpError("training without the test split needs a validation split; drop --select-on-test", 2)
    precision = amp.resolve(spec.precision, device)
    distributed.per_rank_batch(spec.batch_size, spec.devices if dry_run else None)  # must split evenly over the ranks
    spec = spec.model_copy(update={"dataset": dataset, "devices": distributed.world_size()})
    if not resume:
        check_run_dir(spec)  # an occupied --run-dir
    if spec.tensorboard:
        from pdmp_cli import tracking

        tracking.require()  # a missing package stops here, before any file is written

    # -- model, method, optimizer
    data_gen = seed_everything(spec.seed)  # every rank alike: same init, same data order
    model = build_model(spec, bundle, device)
    method = build_method(spec.method, model, spec, profile)
    optimizer = build_optimizer(model, spec, method)
    run = Run(
        spec=spec, device=device, model=model, method=method, optimizer=optimizer, precision=precision,
        lr_schedule=LRSchedule(optimizer, spec), data_gen=data_gen, bundle=bundle, data_report=data_report,
        packed_lines=packed_lines, val_split=val_split, profile=profile, profile_path=profile_path,
        evaluate_test=evaluate_test, resumed=resume, t0=t0,
    )  # fmt: skip
    if resume:
        restore(run)
    if not dry_run:
        run.test_loader = eval_loader(bundle, spec, device) if evaluate_test else None
        run.val_loader = eval_loader(bundle, spec, device, bundle.val) if bundle.val is not None else None
    if distributed.active():  # model + method's loss in DDP: rank 0's weights to all, method-owned heads included
        run.ddp_model = distributed.wrap(TrainStep(model, method), device, find_unused_parameters=method.find_unused_parameters)
    return run


def restore(run: Run) -> None:
    """Load ``run.spec.run_dir``'s last.pt into ``run``, after checking it fits (writes nothing)."""
    run_dir = Path(run.spec.run_dir)
    ckpt = checkpoint.load_last(run_dir)
    require_current(run_dir, ckpt)
    saved, now = ckpt["spec"], run.spec.model_dump(mode="json")
    changed = sorted(k for k in now if k not in RESUMABLE | _LOCATION and saved.get(k) != now[k])
    if changed:
        raise PdmpError(
            f"cannot resume {run_dir}: {', '.join(changed)} differ from the checkpoint; "
            "start a new run to change them",
            exit_code=2,
        )
    sha = hashlib.sha256(Path(run.profile_path).read_bytes()).hexdigest()
    if sha != ckpt["profile_sha256"]:
        raise PdmpError(f"cannot resume {run_dir}: its profile.json changed since the run started", 2)
    if ckpt["epoch"] >= run.spec.epochs:
        raise PdmpError(
            f"run {run_dir} has already done {ckpt['epoch']} of {run.spec.epochs} epochs; "
            f"pass --epochs N with N > {ckpt['epoch']} to train further",
            exit_code=2,
        )
    run.load_state_dict(ckpt)
    run.run_dir, run.sha = run_dir, sha


def open_run_dir(run: Run, command: str = "") -> None:
    """The run's first write: a new run directory (rank 0 makes it and tells the others), or, on
    resume, metrics.jsonl rewritten from the checkpoint (a hard kill may have cut it short or long);
    then spec.json and split.json."""
    if run.resumed:
        if distributed.is_main():
            fsutil.write_text(run.run_dir / rundir.METRICS, "".join(m.model_dump_json() + "\n" for m in run.history))
    else:
        # rank 0 makes the directory (its name holds the time), or every rank raises its refusal
        def new_run_dir():
            d = make_run_dir(run.spec, run.bundle.name)
            return d, copy_profile(run.profile_path, d)

        run.run_dir, run.sha = distributed.on_main(new_run_dir)
    run.spec = run.spec.model_copy(update={"run_dir": str(run.run_dir)})
    run.spec_json = run.spec.model_dump(mode="json")
    run.command = command
    if distributed.is_main():
        fsutil.write_json(run.run_dir / rundir.SPEC, run.spec_json)
        fsutil.write_json(run.run_dir / rundir.SPLIT, split_file(run.bundle, run.val_split))


# -----------------------------------------------------------------------------------------------
# the pieces: profile and run-directory checks, model and optimizer, data loaders, checkpoints


def check_profile(profile: Profile, profile_path: str, dataset: str, bundle) -> None:
    """A profile must describe the data it is used with: same dataset, modalities, identity."""
    ours = {dataset, Path(dataset).stem, bundle.name}
    theirs = {profile.dataset, Path(profile.dataset).stem}
    if not ours & theirs:
        raise PdmpError(
            f"profile {profile_path} is for dataset {profile.dataset!r}, but the dataset is {dataset!r}; "
            f"use a profile of {bundle.name} (`pdmp analyze --dataset {dataset}`) or drop --dataset",
            exit_code=2,
        )
    if sorted(profile.modalities) != sorted(bundle.modalities):
        raise PdmpError(
            f"profile {profile_path} has modalities {profile.modalities}, but dataset {bundle.name!r} has "
            f"{bundle.modalities}; use a profile made on this dataset",
            exit_code=2,
        )
    if profile.dataset_identity and bundle.identity and profile.dataset_identity != bundle.identity:
        raise PdmpError(
            f"profile {profile_path} was made from other data (identity {profile.dataset_identity}) than "
            f"dataset {bundle.name!r} now gives (identity {bundle.identity}); the manifest or files changed: "
            f"re-run `pdmp analyze --dataset {dataset}`",
            exit_code=2,
        )


def check_run_dir(spec: TrainSpec) -> None:
    """Refuse a ``spec.run_dir`` that already holds a run (writes nothing; ``--dry-run`` uses it too)."""
    if not spec.run_dir:
        return
    p = Path(spec.run_dir)
    taken = [n for n in (rundir.SPEC, rundir.SUMMARY, rundir.METRICS, rundir.CHECKPOINTS) if (p / n).exists()]
    if taken:
        raise PdmpError(
            f"run directory {p} already holds a run; continue it with `pdmp train --resume {p}` "
            "or choose another --run-dir",
            exit_code=2,
        )


def make_run_dir(spec: TrainSpec, dataset_name: str) -> Path:
    """``spec.run_dir``, else ``<runs_root>/<time>-<dataset>-<method>-<fusion>-g<gamma_p>-s<seed>``."""
    if spec.run_dir:
        check_run_dir(spec)
        p = Path(spec.run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{Path(dataset_name).stem}-{spec.method}-{spec.fusion}-g{spec.gamma_p:g}-s{spec.seed}"
        p, n = Path(spec.runs_root) / name, 2
        while p.exists():
            p, n = Path(spec.runs_root) / f"{name}-{n}", n + 1
    fix = (
        "choose another --run-dir" if spec.run_dir
        else "choose a writable folder for runs (pdmp train --run-dir DIR, pdmp sweep --runs-dir DIR)"
    )
    fsutil.make_dir(p / rundir.CHECKPOINTS, fix)
    return p


def copy_profile(src: str, run_dir: Path) -> str:
    """Copy the profile's bytes into the run directory (atomically); return their sha256."""
    data = Path(src).read_bytes()
    fsutil.write_bytes(run_dir / rundir.PROFILE, data)
    return hashlib.sha256(data).hexdigest()


def build_model(spec: TrainSpec, bundle, device: torch.device) -> MultimodalModel:
    return place_model(build_multimodal(spec.encoder, spec.fusion, bundle.in_channels, bundle.num_classes), device)


def build_optimizer(model: MultimodalModel, spec: TrainSpec, method: Method) -> torch.optim.Optimizer:
    """The paper's SGD over the model's and the method's own parameters (heads), each once;
    the method may then adjust it (lr-scale multiplies every lr)."""
    params = list(model.parameters()) + list(method.parameters())
    if len({id(p) for p in params}) != len(params):
        raise RuntimeError(f"method {method.name} registers model parameters as its own; keep the model out of it")
    opt = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    method.configure_optimizer(opt)
    return opt


def epoch_loader(bundle, spec: TrainSpec, data_gen: torch.Generator, start_step: int, device) -> DataLoader:
    """This epoch's shuffled batches, from batch ``start_step`` on (a resumed epoch skips the rest).

    The order is one ``randperm`` of ``data_gen``; the loader draws its worker seed from the same
    generator, so the global RNGs (model noise, augmentation) are never touched by data order.
    Under DDP every rank draws the same order and keeps its shard of it: ``spec.batch_size`` is
    the global batch, and the ranks' batches of a step together are a single process's batch.
    """
    order = torch.randperm(len(bundle.train), generator=data_gen)
    packed = train_loader(  # the packed store: each sample's augmentation uniforms drawn here, from data_gen
        bundle.train, order, batch_size=spec.batch_size, start_step=start_step, data_gen=data_gen, device=device,
        num_workers=spec.num_workers, worker_init_fn=ignore_stop_signals,
    )
    if packed is not None:
        return packed
    return DataLoader(
        bundle.train,
        batch_size=distributed.per_rank_batch(spec.batch_size),
        sampler=distributed.shard(order[start_step * spec.batch_size :].tolist()),
        num_workers=spec.num_workers,
        generator=data_gen,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals,  # SIGTERM to the process group: the main process saves first
    )


def eval_loader(bundle, spec: TrainSpec, device, dataset=None) -> DataLoader:
    """Batches of ``dataset`` (default the test split; the loop also passes ``bundle.val``), in order."""
    dataset = bundle.test if dataset is None else dataset
    return DataLoader(
        dataset,
        batch_size=spec.batch_size,
        shuffle=False,
        sampler=distributed.eval_shard(len(dataset)),  # DDP: each rank a share; None: all, in order
        num_workers=spec.num_workers,
        generator=torch.Generator().manual_seed(0),  # keeps evaluation off the global RNG
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals,
        # built once per run: its workers start once, not at every epoch's evaluation (~0.35 s per
        # start for 2 workers here; benchmarks/hot_path.py). Evaluation draws nothing random.
        persistent_workers=spec.num_workers > 0,
        collate_fn=packed_collate,  # a packed split's batch as gathered; anything else default_collate
    )


def require_run_dir(run_dir: Path) -> None:
    """Stop (PdmpError) if the run directory vanished during the run: writing would silently
    re-create it without spec.json, profile.json and split.json, a run that can never be resumed."""
    if not Path(run_dir).is_dir():
        raise PdmpError(f"the run directory {run_dir} disappeared during the run (deleted or moved?); the run "
                        "stopped without re-creating it: put it back and resume, or start a new run", 1)


# what Run.state_dict writes (and EpochStats.state_dict): a last.pt without one of them is from an older pdmp
LAST_KEYS = frozenset({
    "model", "method", "optimizer", "epoch", "step", "data_gen", "rng", "stats", "history", "spec", "wall_seconds",
    "profile_sha256", "amp", "lr_schedule",
})
STATS_KEYS = frozenset({"steps", "seconds", "loss", "norm_steps", "norm_before", "norm_after", "gamma", "first_bad_step"})


def require_current(run_dir: Path, ckpt: dict) -> None:
    """Refuse (one line) to resume from a last.pt an older pdmp wrote: it lacks what this one saves."""
    stats, spec = ckpt.get("stats"), ckpt.get("spec")
    missing = sorted(LAST_KEYS - set(ckpt)) + sorted(STATS_KEYS - set(stats) if isinstance(stats, dict) else ())
    missing += [f"spec.{k}" for k in sorted(set(TrainSpec.model_fields) - set(spec) if isinstance(spec, dict) else ())]
    if missing:
        raise PdmpError(f"cannot resume {run_dir}: its checkpoint was written by an older pdmp (no "
                        f"{', '.join(missing)}); start a new run", 2)


def resume_spec(run_dir: str | os.PathLike, changes: dict | None = None) -> TrainSpec:
    """The saved spec of ``run_dir`` with ``changes`` (only :data:`RESUMABLE` keys)."""
    from pydantic import ValidationError

    p = Path(run_dir)
    if not (p / rundir.SPEC).is_file():
        raise PdmpError(f"{p} is not a run directory (no {rundir.SPEC}); give the directory `pdmp train` wrote", 2)
    bad = sorted(set(changes or {}) - RESUMABLE)
    if bad:
        raise PdmpError(f"a resumed run keeps its spec; {', '.join(bad)} cannot be changed (start a new run)", 2)
    try:
        saved = json.loads((p / rundir.SPEC).read_text())
        if not isinstance(saved, dict):
            raise PdmpError(f"{p / rundir.SPEC} holds no spec (a JSON {type(saved).__name__}); the run cannot be "
                            "resumed", 1)
        return TrainSpec.model_validate({**saved, **(changes or {}), "run_dir": str(p)})
    except json.JSONDecodeError as e:
        raise PdmpError(f"{p / rundir.SPEC} is not valid JSON ({e}); the run cannot be resumed", 1) from None
    except ValidationError as e:
        raise PdmpError(f"{p / rundir.SPEC}: {format_validation_error(e)}", 2) from None
