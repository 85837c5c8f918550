"""The training loop of ``pdmp train`` (Alg. 1, stage 2), nanoGPT-style: read it top to bottom.

    for epoch:
        method.on_epoch_start                            PMR, G-Blending, D&R, UDI; others nothing
        for batch:                                       (train_one_epoch)
            for part in method.parts:                    one part (MLA: one per modality)
                method.forward_loss -> method.backward   fused CE, one backward (MMPareto: several)
                -> method.after_backward   PDMP: Eq. 10-12 on the encoders' grads; OGM-GE; nothing
                -> clip -> optimizer.step -> accumulate metrics (tensors: no per-step device sync)
        evaluate (method.predict) -> checkpoints/last.pt (+ best.pt) -> metrics.jsonl -> summary.json

The hooks are documented in :mod:`pdmp_cli.methods`; the method's own modules are in the
optimizer, in the checkpoints and (through :class:`TrainStep`) inside the DDP forward.

The pieces above the loop (``build_model``, ``build_optimizer``, ``epoch_loader``,
``train_one_epoch``, ``evaluate``, ``save_last``) are separate functions, so a distributed or
mixed-precision variant can swap one without touching the others. The run-directory format is
defined in :mod:`pdmp_cli.rundir`.

Several processes (torchrun, ``pdmp train --devices N``): the model trains in DDP, each rank on
its shard of every global batch; the helpers of :mod:`pdmp_cli.distributed` (no-ops with
one process) agree on metrics and stops, and only rank 0 writes or prints. Mixed precision
(``spec.precision``) is :mod:`pdmp_cli.train.amp`: the modulation always sees unscaled gradients.

Reproducibility: the model is seeded by ``spec.seed``, the data order comes from its own
generator, and ``last.pt`` holds every RNG state, so ``resume`` continues exactly where the
run stopped (mid-epoch after Ctrl-C, or at an epoch end); on CPU with ``num_workers`` 0 the
metrics equal those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pdmp_cli import __version__, distributed, fsutil, rundir
from pdmp_cli.data.packed import collate as packed_collate
from pdmp_cli.data.packed import load_packed, train_loader
from pdmp_cli.data.split import evaluation_view, split_file, with_validation
from pdmp_cli.errors import PdmpError, format_validation_error
from pdmp_cli.methods import Method, build_method
from pdmp_cli.metrics import dependency, logit_mass, macro_f1
from pdmp_cli.models.multimodal import MultimodalModel, build_multimodal
from pdmp_cli.profile import Profile
from pdmp_cli.rundir import EpochMetrics, RunSummary, selection_score, summarize
from pdmp_cli.runtime import place_model, resolve_device, seed_everything, to_device, use_threads
from pdmp_cli.signals import GracefulInterrupt, ignore_stop_signals
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import amp, checkpoint, health
from pdmp_cli.train.schedule import LRSchedule

CHECK_EVERY = 20  # steps between non-finite-loss checks; each check waits for the device once

# settings a resumed run may change (the flags `pdmp train --resume` accepts); any other difference
# from the checkpoint is refused. Where the run lives (run_dir, runs_root) is no setting: a moved
# run directory resumes.
RESUMABLE = frozenset({"epochs", "device", "devices", "precision", "num_workers", "data_root", "tensorboard", "threads"})
_LOCATION = frozenset({"run_dir", "runs_root"})


@dataclass
class RunResult:
    run_dir: Path
    summary: RunSummary
    metrics: list[EpochMetrics]

    @property
    def status(self) -> str:
        return self.summary.status


@dataclass
class StepInfo:
    """What ``on_step`` callbacks receive after every optimizer step."""

    epoch: int  # 0-based
    step: int  # 0-based, within the epoch
    loss: torch.Tensor  # detached, on the device
    model: MultimodalModel
    optimizer: torch.optim.Optimizer


# -----------------------------------------------------------------------------------------------
# set-up: profile checks, run directory, model, optimizer, data order


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


class TrainStep(torch.nn.Module):
    """The model and the method's loss as one module: DDP wraps this, so the method's own modules
    (unimodal heads) are used inside the DDP forward and their gradients averaged over ranks."""

    def __init__(self, model: MultimodalModel, method: Method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, inputs, labels, epoch: int, part=None):
        out, loss = self.method.forward_loss(self.model, inputs, labels, epoch, part)
        # DDP looks for the parameters that took part in its outputs' tensors: only the loss
        # counts (``out`` may hold tensors of a modality this step does not train: MLA, UDI)
        return _Carried(out), loss


class _Carried:
    """Hands a value through DDP's forward without DDP looking into it."""

    def __init__(self, value):
        self.value = value


@dataclass
class EpochContext:
    """What :meth:`Method.on_epoch_start` may use: the model, the optimizer and the data (never test).

    ``outputs(split)`` / ``features(split)`` run the model in evaluation mode without gradients
    over ``"train"`` (the training split in dataset order) or ``"val"``; ``fraction`` < 1
    takes a seeded random subset (the same on every rank, fixed per epoch). Under DDP each rank
    runs its share and every rank gets all of it.

    ``view``: ``"eval"`` (default) reads the samples as evaluation does, without augmentation;
    ``"augmented"`` reads the training split as the training loader does (random crops and frames
    of a file-backed dataset; the synthetic datasets have none). A method asks for it by name.
    """

    epoch: int  # 0-based
    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    spec: TrainSpec
    bundle: object
    device: torch.device
    val_source: str = "carved"  # where ``"val"`` comes from: "manifest" (the dataset's own split) or "carved"

    def dataset(self, split: str, view: str = "eval"):
        if view not in ("eval", "augmented"):
            raise ValueError(f"view must be 'eval' or 'augmented', got {view!r}")
        if split == "train":
            return self.bundle.train if view == "augmented" else evaluation_view(self.bundle.train)
        if view == "augmented":
            raise ValueError(f"only the training split is augmented, got {split!r}")
        if split == "val":
            val = getattr(self.bundle, "val", None)
            if val is None:
                raise PdmpError(f"method {self.spec.method} needs a validation split and dataset {self.bundle.name} has none", 2)
            return val
        raise ValueError(f"split must be 'train' or 'val' (never test), got {split!r}")

    def batches(self, split: str, shuffle_seed=None, view: str = "eval"):
        """Yield every ``(inputs, labels)`` batch of ``split`` on the device, on every rank (not
        sharded); shuffled by a generator seeded with ``hash(shuffle_seed)`` when given."""
        data = self.dataset(split, view)
        gen = None if shuffle_seed is None else torch.Generator().manual_seed(hash(shuffle_seed) % 2**63)
        loader = DataLoader(
            data, batch_size=self.spec.batch_size, shuffle=shuffle_seed is not None, generator=gen,
            num_workers=self.spec.num_workers,
        )
        for inputs, labels in loader:
            yield to_device(inputs, self.device), labels.to(self.device)

    @torch.no_grad()
    def outputs(self, split: str, fraction: float = 1.0, view: str = "eval"):
        """Yield ``(ModelOutput, labels)`` batches of ``split`` (model in eval mode, no grad)."""
        data = self.dataset(split, view)
        n = len(data)
        idx = list(range(n))
        if fraction < 1:
            gen = torch.Generator().manual_seed(self.spec.seed * 100003 + self.epoch)
            idx = torch.randperm(n, generator=gen)[: max(1, int(n * fraction))].tolist()
        shard = distributed.eval_shard(len(idx))
        if shard is not None:
            idx = [idx[i] for i in shard]
        loader = DataLoader(
            torch.utils.data.Subset(data, idx), batch_size=self.spec.batch_size, shuffle=False,
            num_workers=self.spec.num_workers,
        )
        was_training = self.model.training
        self.model.eval()
        try:
            for inputs, labels in loader:
                yield self.model(to_device(inputs, self.device)), labels.to(self.device)
        finally:
            self.model.train(was_training)

    def features(self, split: str, fraction: float = 1.0, view: str = "eval") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every modality's encoder features ``{m: (N, D_m)}`` and the labels ``(N,)`` of ``split``."""
        feats: dict[str, list] = {}
        labels = []
        for out, y in self.outputs(split, fraction, view):
            for m, f in out.features.items():
                feats.setdefault(m, []).append(f.float())
            labels.append(y)
        return (
            {m: distributed.gather_cat(torch.cat(f)) for m, f in feats.items()},
            distributed.gather_cat(torch.cat(labels)),
        )


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


def encoder_grad_norms(owned: dict[str, list[torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    """L2 norm of each modality's own parameters' gradient (0-dim tensors: every step, no sync).

    ``owned``: ``model.modality_parameters()``, resolved once per epoch by the caller (late fusion:
    the encoders; se/mmformer: each stream). A modality without a gradient in this step (MLA's
    other parts, UDI's frozen anchor) gets 0 on the model's device (``get_total_norm([])`` would
    give a CPU tensor).
    """
    out = {}
    for m, params in owned.items():
        grads = [p.grad for p in params if p.grad is not None]
        out[m] = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=params[0].device)
    return out


class EpochStats:
    """Running sums over one epoch's steps, kept as tensors so a step never waits on the device.

    Read once per epoch by :meth:`means`. Saved in a mid-epoch checkpoint, so a resumed epoch
    reports the same numbers as an uninterrupted one. Steps with a non-finite gradient norm (an
    fp16 step the GradScaler skips) are left out of the gradient-norm means.
    """

    def __init__(self, modalities: list[str], device: torch.device):
        def zero():
            return torch.zeros((), device=device)

        self.steps = 0
        self.seconds = 0.0
        self.loss = zero()
        self.norm_steps = zero()  # steps whose gradient norms are all finite
        self.norm_before = {m: zero() for m in modalities}
        self.norm_after = {m: zero() for m in modalities}
        self.gamma = {m: zero() for m in modalities}
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, step: int, loss: torch.Tensor, before: dict, after: dict, gamma: dict) -> None:
        loss = loss.detach()
        self.steps += 1
        self.loss += loss
        finite = torch.stack([torch.isfinite(torch.as_tensor(d[m])) for d in (before, after) for m in self.gamma]).all()
        self.norm_steps += finite
        for m in self.gamma:
            self.norm_before[m] += torch.where(finite, before[m], 0.0)
            self.norm_after[m] += torch.where(finite, after[m], 0.0)
            self.gamma[m] += gamma[m]
        newly_bad = ~torch.isfinite(loss) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(newly_bad, step, self.first_bad_step)

    def bad_step(self) -> int | None:
        """0-based step of the first non-finite loss this epoch on any rank (waits for the device;
        under DDP a collective: every rank calls it at the same point)."""
        return distributed.first_step(self.first_bad_step)

    def means(self) -> dict:
        n, n_norm = max(self.steps, 1), max(float(self.norm_steps.item()), 1.0)

        def per_mod(d, n):
            return {m: float(v.item()) / n for m, v in d.items()}

        return {
            "train_loss": float(self.loss.item()) / n,
            "grad_norm_before": per_mod(self.norm_before, n_norm),
            "grad_norm_after": per_mod(self.norm_after, n_norm),
            "gamma": per_mod(self.gamma, n),
        }

    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "loss": self.loss.cpu(),
            "norm_steps": self.norm_steps.cpu(),
            "norm_before": {m: v.cpu() for m, v in self.norm_before.items()},
            "norm_after": {m: v.cpu() for m, v in self.norm_after.items()},
            "gamma": {m: v.cpu() for m, v in self.gamma.items()},
            "first_bad_step": self.first_bad_step.cpu(),
        }

    def load_state_dict(self, s: dict) -> None:
        dev = self.loss.device
        self.steps, self.seconds = s["steps"], s["seconds"]
        self.loss = s["loss"].to(dev)
        self.norm_steps = s["norm_steps"].to(dev)
        self.norm_before = {m: v.to(dev) for m, v in s["norm_before"].items()}
        self.norm_after = {m: v.to(dev) for m, v in s["norm_after"].items()}
        self.gamma = {m: v.to(dev) for m, v in s["gamma"].items()}
        self.first_bad_step = s["first_bad_step"].to(dev)


# -----------------------------------------------------------------------------------------------
# one epoch, evaluation, checkpoints


def train_one_epoch(
    model: MultimodalModel,
    method: Method,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    stats: EpochStats,
    *,
    epoch: int,
    start_step: int,
    grad_clip: float | None,
    device: torch.device,
    stop: GracefulInterrupt,
    on_step: Callable[[StepInfo], None] | None = None,
    advance: Callable[[], None] | None = None,
    precision: amp.Precision | None = None,
    ddp_model: torch.nn.Module | None = None,
) -> str | None:
    """One pass over ``loader``. Returns None when done, else ``"diverged"`` or ``"interrupted"``.

    ``ddp_model``: ``model`` wrapped in DDP (several processes); it runs the forward pass, so
    backward averages the gradients over ranks. ``precision``: autocast and fp16 loss scaling.
    Without ``ddp_model`` the model and the method's loss run as a :class:`TrainStep`.
    """
    forward = ddp_model if ddp_model is not None else TrainStep(model, method)
    precision = precision or amp.Precision("fp32", device)
    forward.train()
    owned = model.modality_parameters()  # once per epoch, not twice per step (gradient norms)
    # the packed store on CUDA: crop, flip and normalisation of the whole batch on the device, after the copy
    finish = getattr(getattr(loader, "dataset", None), "finish_on_device", None)
    for step, (inputs, labels) in enumerate(loader, start=start_step):
        inputs, labels = to_device(inputs, device), labels.to(device, non_blocking=True)
        if finish is not None:
            inputs = finish(inputs)
        for part in method.parts(epoch):  # one optimizer step each; every method but MLA: one
            with precision.autocast():
                carried, loss = forward(inputs, labels, epoch, part)  # method.forward_loss: CE of the fused logits
                out = carried.value
            optimizer.zero_grad(set_to_none=True)
            method.backward(loss, precision)  # DDP: every rank now holds the same gradients, averaged over ranks
            precision.unscale_(optimizer)  # fp16: true gradients before the norms and the modulation
            before = encoder_grad_norms(owned)
            gamma = method.after_backward(out, labels, epoch)  # PDMP: Eq. 10-12, encoders' grads only
            after = encoder_grad_norms(owned)
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(optimizer_params(optimizer), grad_clip)
            precision.step(optimizer)
        stats.add(step, loss, before, after, gamma)  # the batch's last step
        if on_step is not None:
            on_step(StepInfo(epoch, step, loss.detach(), model, optimizer))
        if advance is not None:
            advance()
        # a non-finite loss is noticed within CHECK_EVERY steps; those steps' weights are never saved.
        # Under DDP, a Ctrl-C too (every rank must stop at the same step: one collective per check)
        at_check = (step + 1) % CHECK_EVERY == 0
        if at_check and stats.bad_step() is not None:
            return "diverged"
        if distributed.any_rank(stop.requested, now=at_check):
            return "diverged" if stats.bad_step() is not None else "interrupted"
    return "diverged" if stats.bad_step() is not None else None


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for g in optimizer.param_groups for p in g["params"]]


@torch.no_grad()
def evaluate(model: MultimodalModel, loader: DataLoader, device: torch.device, num_classes: int, predict=None) -> dict:
    """Accuracy, macro-F1, each branch's accuracy (argmax of s_m) and Eq. 5 on the test split.

    ``predict``: the method's prediction rule (``out -> out'``, read for the logits and the branch
    logits); default the model's output as it is.
    """
    model.eval()
    preds, labels_all = [], []
    branch_preds: dict[str, list] = {m: [] for m in model.modalities}
    mass = {m: 0.0 for m in model.modalities}
    for inputs, labels in loader:
        out = model(to_device(inputs, device))
        if predict is not None:
            out = predict(out)
        preds.append(out.logits.argmax(dim=1).cpu())
        labels_all.append(labels)
        for m, s in out.branch_logits.items():
            branch_preds[m].append(s.argmax(dim=1).cpu())
        for m, v in logit_mass(out.branch_logits).items():
            mass[m] += v
    model.train()
    # DDP: each rank evaluated its shard; every rank gets all predictions (identity with one process)
    preds, labels = distributed.gather_cat(torch.cat(preds)), distributed.gather_cat(torch.cat(labels_all))
    branch = {m: distributed.gather_cat(torch.cat(p)) for m, p in branch_preds.items()}
    mass = distributed.sum_floats(mass)
    dep = dependency(mass)
    w = dep.get("w")
    return {
        "accuracy": (preds == labels).float().mean().item(),
        "macro_f1": macro_f1(preds, labels, num_classes),
        "branch_accuracy": {m: (p == labels).float().mean().item() for m, p in branch.items()},
        "w": w if w is not None and w == w and abs(w) != float("inf") else None,
        "shares": {m: dep[f"share/{m}"] for m in model.modalities},
    }


def require_run_dir(run_dir: Path) -> None:
    """Stop (PdmpError) if the run directory vanished during the run: writing would silently
    re-create it without spec.json, profile.json and split.json, a run that can never be resumed."""
    if not Path(run_dir).is_dir():
        raise PdmpError(f"the run directory {run_dir} disappeared during the run (deleted or moved?); the run "
                        "stopped without re-creating it: put it back and resume, or start a new run", 1)


# what save_last writes (and EpochStats.state_dict): a last.pt without one of them is from an older pdmp
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


def save_last(
    run_dir: Path, *, model, optimizer, epoch, step, data_gen_state, stats, history, spec_json, wall, sha, amp_state=None,
    method: Method | None = None, lr_schedule: LRSchedule | None = None,
):
    """checkpoints/last.pt: everything needed to continue at (epoch, step), both 0-based."""
    require_run_dir(run_dir)
    checkpoint.save(
        run_dir / rundir.CHECKPOINTS / "last.pt",
        {
            "model": model.state_dict(),
            "method": method.state_dict() if method is not None else {},  # its heads and buffers
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "data_gen": data_gen_state,
            "rng": checkpoint.rng_state(),
            "stats": stats.state_dict() if stats is not None else None,
            "history": [m.model_dump() for m in history],
            "spec": spec_json,
            "wall_seconds": wall,
            "profile_sha256": sha,
            "amp": amp_state,  # fp16: the GradScaler's scale; None otherwise
            "lr_schedule": lr_schedule.state_dict() if lr_schedule is not None else None,
        },
    )


def _scale_note(spec: TrainSpec, device: torch.device) -> str:
    """How the run is spread and in what precision, for the start line ('' for one process in fp32)."""
    w = distributed.world_size()
    ddp = (f" x {w} processes (DDP over {distributed.backend()}; global batch {spec.batch_size} = {w} x "
           f"{spec.batch_size // w})" if distributed.active() else "")
    return ddp + (f"; precision {spec.precision}" if spec.precision != "fp32" else "")


def _val_words(record: dict) -> str:
    """``120 validation (carved 0.1 of train)``, ``no validation: selected on test``..."""
    if record["selection"] == "test":
        return "no validation: best epoch selected on test"
    how = f"carved {record['fraction']:g} of train, seed {record['seed']}" if record["source"] == "carved" else "the dataset's own"
    return f"{record['val_size']} validation ({how})"


def _epoch_line(m: EpochMetrics, epochs: int) -> str:
    w = f"{m.w:.3g}" if m.w is not None else "-"
    branches = " ".join(f"{k} {v:.3f}" for k, v in m.branch_accuracy.items())
    gammas = " ".join(f"{k} {v:.3g}" for k, v in m.gamma.items())
    val = f"val {m.val_accuracy:.4f}  " if m.val_accuracy is not None else ""
    test = f"acc {m.test_accuracy:.4f}  f1 {m.test_macro_f1:.4f}  " if m.test_accuracy is not None else ""
    return (
        f"epoch {m.epoch:>3}/{epochs}  loss {m.train_loss:.4f}  {val}{test}w {w}  branch acc: {branches}  "
        f"gamma: {gammas}  {m.epoch_seconds:.1f}s"
    )


# -----------------------------------------------------------------------------------------------
# the run


def resume_spec(run_dir: str | os.PathLike, changes: dict | None = None) -> TrainSpec:
    """The saved spec of ``run_dir`` with ``changes`` (only :data:`RESUMABLE` keys)."""
    from pydantic import ValidationError

    p = Path(run_dir)
    if not (p / rundir.SPEC).is_file():
        raise PdmpError(f"{p} is not a run directory (no {rundir.SPEC}); give the directory `pdmp train` wrote", 2)
    bad = sorted(set(changes or {}) - RESUMABLE)
    if bad:
        raise PdmpError(f"a resumed run keeps its spec; {', '.join(bad)} cannot be changed (start a new run)", 2)
    import json

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


def run(
    spec: TrainSpec,
    command: str = "",
    *,
    resume: bool = False,
    console=None,
    quiet: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    evaluate_test: bool = True,
) -> RunResult:
    """Train one multimodal model as ``spec`` says and write its run directory.

    ``resume=True`` continues the run in ``spec.run_dir`` from ``checkpoints/last.pt`` (its
    saved profile copy is used; only epochs, device, num_workers and data_root may differ).
    Returns the :class:`RunResult`; ``summary.status`` is ``"complete"``, ``"diverged"``
    (non-finite loss: ``summary.message`` names epoch and step, last.pt keeps the last good
    state) or ``"interrupted"`` (Ctrl-C: last.pt is resumable).

    Started by torchrun (several processes), every process calls this: it joins the process
    group, trains its shard in DDP, and rank 0 alone writes the run directory and prints.

    ``evaluate_test=False`` (``pdmp tune``): no test sample is ever read (the dataset check skips
    them too); each epoch's test fields are None and its branch accuracies, w and shares are
    measured on the validation split.

    Raises:
        PdmpError: a profile that does not fit the dataset, a method that cannot run with this
            profile or dataset, an occupied run directory, a resume that does not fit its run,
            a precision the device cannot run, a global batch that does not split over the ranks.
    """
    # intra-op threads fixed before any work (and saved in spec.json): same thread count, same numbers
    spec = spec.model_copy(update={"threads": use_threads(spec)})
    device, started = distributed.setup(resolve_device(spec.device))  # torchrun: join its group
    try:
        return _run(
            spec, device, command, resume=resume, console=console,
            quiet=quiet or not distributed.is_main(), on_step=on_step, evaluate_test=evaluate_test,
        )
    finally:
        distributed.teardown(started)


def _run(spec: TrainSpec, device: torch.device, command: str, *, resume, console, quiet, on_step, evaluate_test=True) -> RunResult:
    t0 = time.monotonic()
    if console is None or quiet:
        from rich.console import Console

        console = Console(quiet=quiet)

    # -- profile and data -------------------------------------------------------------------------
    if resume:
        if not spec.run_dir:
            raise PdmpError("resume needs spec.run_dir: the run directory to continue", 2)
        run_dir = Path(spec.run_dir)
        profile_path = str(run_dir / rundir.PROFILE)  # the copy: the original may have moved
    else:
        from pdmp_cli.resources import profile_path as find_profile

        profile_path = str(find_profile(spec.profile))  # a path, or a reference profile's name
    profile = Profile.load(profile_path)
    dataset = spec.dataset or profile.dataset
    # a broken dataset stops here with one line (or, with skip_bad, its bad samples are left out); a
    # dataset of files is packed after the check (pdmp_cli.data.packed), or read from its packed store
    # without a check when the data did not change: rank 0 checks and packs, every rank then reads
    packed_splits = ("train", "val", "test") if evaluate_test else ("train", "val")
    if distributed.active():
        distributed.on_main(lambda: load_packed(dataset, spec.data_root, skip_bad=spec.skip_bad, splits=packed_splits)[2])
    bundle, data_report, packed_lines = load_packed(dataset, spec.data_root, skip_bad=spec.skip_bad, splits=packed_splits)
    check_profile(profile, profile_path, dataset, bundle)
    # the epoch is chosen on validation: the manifest's own split, else one carved from train
    bundle, val_split = with_validation(bundle, spec.val_fraction, spec.seed, select_on_test=spec.select_on_test)
    if not evaluate_test and bundle.val is None:
        raise PdmpError("training without the test split needs a validation split; drop --select-on-test", 2)
    spec = spec.model_copy(update={"dataset": dataset, "devices": distributed.world_size()})

    # -- model, method, optimizer (everything that can refuse happens before any file is written)
    precision = amp.resolve(spec.precision, device)
    distributed.per_rank_batch(spec.batch_size)  # the global batch must split evenly over the ranks
    data_gen = seed_everything(spec.seed)  # every rank alike: same init, same data order
    model = build_model(spec, bundle, device)
    method = build_method(spec.method, model, spec, profile)
    optimizer = build_optimizer(model, spec, method)
    lr_schedule = LRSchedule(optimizer, spec)  # before a resume loads the optimizer's state
    if spec.tensorboard:
        from pdmp_cli import tracking

        tracking.require()  # a missing package stops here, before any file is written
    stats: EpochStats | None = None
    history: list[EpochMetrics] = []
    start_epoch, start_step, wall_before = 0, 0, 0.0

    if resume:
        ckpt = checkpoint.load_last(run_dir)
        require_current(run_dir, ckpt)
        saved, now = ckpt["spec"], spec.model_dump(mode="json")
        changed = sorted(k for k in now if k not in RESUMABLE | _LOCATION and saved.get(k) != now[k])
        if changed:
            raise PdmpError(
                f"cannot resume {run_dir}: {', '.join(changed)} differ from the checkpoint; "
                "start a new run to change them",
                exit_code=2,
            )
        sha = hashlib.sha256(Path(profile_path).read_bytes()).hexdigest()
        if sha != ckpt["profile_sha256"]:
            raise PdmpError(f"cannot resume {run_dir}: its profile.json changed since the run started", 2)
        if ckpt["epoch"] >= spec.epochs:
            raise PdmpError(
                f"run {run_dir} has already done {ckpt['epoch']} of {spec.epochs} epochs; "
                f"pass --epochs N with N > {ckpt['epoch']} to train further",
                exit_code=2,
            )
        model.load_state_dict(ckpt["model"])
        method.load_state_dict(ckpt["method"])  # its heads and state (prototypes, running means)
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_schedule.load_state_dict(ckpt["lr_schedule"])
        checkpoint.set_rng_state(ckpt["rng"])
        data_gen.set_state(ckpt["data_gen"])
        history = [EpochMetrics.model_validate(h) for h in ckpt["history"]]
        start_epoch, start_step, wall_before = ckpt["epoch"], ckpt["step"], ckpt["wall_seconds"]
        if ckpt["stats"] is not None:
            stats = EpochStats(model.modalities, device)
            stats.load_state_dict(ckpt["stats"])
        precision.load_state_dict(ckpt["amp"])
        # metrics.jsonl is rewritten from the checkpoint: a hard kill may have cut it short or long
        if distributed.is_main():
            lines = "".join(m.model_dump_json() + "\n" for m in history)
            fsutil.write_text(run_dir / rundir.METRICS, lines)
    else:
        # rank 0 makes the directory (its name holds the time) and tells the others, or every rank
        # raises its refusal (an occupied --run-dir)
        def new_run_dir():
            d = make_run_dir(spec, bundle.name)
            return d, copy_profile(profile_path, d)

        run_dir, sha = distributed.on_main(new_run_dir)
    ddp_model = (  # model + method's loss in DDP: rank 0's weights to all, method-owned heads included
        distributed.wrap(TrainStep(model, method), device, find_unused_parameters=method.find_unused_parameters)
        if distributed.active() else None
    )
    spec = spec.model_copy(update={"run_dir": str(run_dir)})
    spec_json = spec.model_dump(mode="json")
    if distributed.is_main():
        fsutil.write_json(run_dir / rundir.SPEC, spec_json)
        fsutil.write_json(run_dir / rundir.SPLIT, split_file(bundle, val_split))

    def write_summary(status: str, message: str | None = None, in_place: bool = False) -> RunSummary:
        s = summarize(
            history,
            dataset=bundle.name,
            method=spec.method,
            fusion=spec.fusion,
            encoder=spec.encoder,
            gamma_p=spec.gamma_p,
            gamma=method.gamma,
            seed=spec.seed,
            profile_sha256=sha,
            status=status,
            epochs_planned=spec.epochs,
            wall_seconds=wall_before + time.monotonic() - t0,
            message=message,
            val_split=val_split,
            command=command,
            pdmp_version=__version__,
        )
        if distributed.is_main():
            require_run_dir(run_dir)
            fsutil.write_json(run_dir / rundir.SUMMARY, s.model_dump(mode="json"), in_place_fallback=in_place)
        return s

    where = f" (resuming at epoch {start_epoch + 1}" + (f", after step {start_step})" if start_step else ")")
    console.print(f"run directory: {run_dir}" + (where if resume else ""), soft_wrap=True)
    console.print(
        f"data: {bundle.name}, {len(bundle.train)} train / {_val_words(val_split)} / "
        f"{f'{len(bundle.test)} test' if evaluate_test else 'test split not read'}, "
        f"{'+'.join(bundle.modalities)}, {bundle.num_classes} classes; model: {spec.encoder} encoders, "
        f"{spec.fusion} fusion; device {device}, {spec.threads} thread{'s' if spec.threads != 1 else ''}"
        f"{_scale_note(spec, device)}",
        soft_wrap=True,
    )
    if data_report.skipped:
        console.print(f"left out {data_report.skipped} bad samples (skip_bad)", soft_wrap=True)
    for line in packed_lines:
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"method {spec.method}: {method.describe()}", highlight=False, soft_wrap=True)
    if spec.lr_schedule != "none":
        console.print(lr_schedule.describe(spec), highlight=False, soft_wrap=True)
    summary = write_summary("running")
    huge_note = None  # a warning once weights grow far past normal (health.oversized)

    # -- the loop ---------------------------------------------------------------------------------
    test_loader = eval_loader(bundle, spec, device) if evaluate_test else None
    val_loader = eval_loader(bundle, spec, device, bundle.val) if bundle.val is not None else None
    best_acc = max((selection_score(m) for m in history), default=None)
    from pdmp_cli.progress import Rate, cpu_estimate_line
    from pdmp_cli.tracking import TensorBoard

    tensorboard = TensorBoard(run_dir if spec.tensorboard and distributed.is_main() else None, start_epoch)
    rate = Rate(spec.epochs, start_epoch)  # the ETA of each epoch line
    progress = None
    if not console.quiet and console.is_terminal:  # a log file gets the epoch lines only
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        )
        progress.start()
    try:
        with GracefulInterrupt() as stop:
            for epoch in range(start_epoch, spec.epochs):
                step0 = start_step if epoch == start_epoch else 0
                if step0 == 0 or stats is None:
                    stats = EpochStats(model.modalities, device)
                epoch_gen_state = data_gen.get_state()  # a mid-epoch checkpoint replays this order
                if step0 == 0:  # PMR prototypes, G-Blending weights, D&R re-initialisation, stages
                    method.on_epoch_start(EpochContext(epoch, model, optimizer, spec, bundle, device, val_split["source"]))
                loader = epoch_loader(bundle, spec, data_gen, step0, device)
                task = None
                if progress is not None:
                    task = progress.add_task(f"epoch {epoch + 1}/{spec.epochs}", total=step0 + len(loader), completed=step0)
                t_epoch = time.monotonic()
                outcome = train_one_epoch(
                    model, method, optimizer, loader, stats,
                    epoch=epoch, start_step=step0, grad_clip=spec.grad_clip, device=device, stop=stop,
                    on_step=on_step, advance=(lambda: progress.advance(task)) if task is not None else None,
                    precision=precision, ddp_model=ddp_model,
                )
                stats.seconds += time.monotonic() - t_epoch
                if task is not None:
                    progress.remove_task(task)

                if outcome == "diverged":
                    bad = stats.bad_step()
                    msg = (
                        f"the loss became non-finite at epoch {epoch + 1}, step {bad + 1}; "
                        f"{health.remedy(spec)}; {health.kept_note(run_dir, len(history))}"
                    )
                    summary = write_summary("diverged", msg)
                    return RunResult(run_dir, summary, history)

                distributed.average_stats_(stats)  # DDP: the global batch's loss; all ranks alike
                distributed.sync_buffers(model)  # DDP: rank 0's BatchNorm statistics everywhere
                # a finite loss does not make a finite model (BatchNorm statistics can overflow):
                # weights, buffers and gradient norms are checked before any checkpoint is written
                blown = health.blown_up(model, stats, precision.kind)
                if blown:
                    msg = (
                        f"the model blew up in epoch {epoch + 1}: {blown}; {health.remedy(spec)}; "
                        f"{health.kept_note(run_dir, len(history))}"
                    )
                    summary = write_summary("diverged", msg)
                    return RunResult(run_dir, summary, history)
                if huge_note is None and (huge := health.oversized(model)):  # finite, but far past normal
                    huge_note = f"warning: after epoch {epoch + 1}, {huge}; {health.remedy(spec)}"
                    console.print(huge_note, highlight=False, soft_wrap=True)

                if outcome == "interrupted":
                    wall = wall_before + time.monotonic() - t0
                    if distributed.is_main():
                        save_last(
                            run_dir, model=model, optimizer=optimizer, epoch=epoch, step=stats.steps,
                            data_gen_state=epoch_gen_state, stats=stats, history=history, spec_json=spec_json,
                            wall=wall, sha=sha, amp_state=precision.state_dict(), method=method,
                            lr_schedule=lr_schedule,
                        )
                    msg = (
                        f"interrupted at epoch {epoch + 1}, step {stats.steps}; "
                        f"continue with `pdmp train --resume {run_dir}`"
                    )
                    summary = write_summary("interrupted", msg)
                    return RunResult(run_dir, summary, history)

                vev = evaluate(model, val_loader, device, bundle.num_classes, method.predict) if val_loader is not None else {}
                test_ev = evaluate(model, test_loader, device, bundle.num_classes, method.predict) if test_loader is not None else None
                ev = test_ev or vev  # the branch accuracies, w and shares: on test, else on validation
                means = stats.means()
                m = EpochMetrics(
                    epoch=epoch + 1,
                    train_loss=means["train_loss"],
                    test_accuracy=test_ev["accuracy"] if test_ev else None,
                    test_macro_f1=test_ev["macro_f1"] if test_ev else None,
                    val_accuracy=vev.get("accuracy"),
                    val_macro_f1=vev.get("macro_f1"),
                    branch_accuracy=ev["branch_accuracy"],
                    w=ev["w"],
                    shares=ev["shares"],
                    grad_norm_before=means["grad_norm_before"],
                    grad_norm_after=means["grad_norm_after"],
                    gamma=means["gamma"],
                    lr=optimizer.param_groups[0]["lr"],
                    epoch_seconds=stats.seconds,
                )
                history.append(m)
                lr_schedule.step()  # the next epoch's lr (m.lr is the one this epoch trained with)
                if best_acc is None or selection_score(m) > best_acc:  # best.pt: the best validation epoch
                    best_acc = selection_score(m)
                    if distributed.is_main():
                        require_run_dir(run_dir)
                        checkpoint.save(
                            run_dir / rundir.CHECKPOINTS / "best.pt",
                            {"model": model.state_dict(), "method": method.state_dict(), "epoch": m.epoch, "test_accuracy": m.test_accuracy,
                             "val_accuracy": m.val_accuracy, "spec": spec_json},
                        )
                if distributed.is_main():
                    save_last(
                        run_dir, model=model, optimizer=optimizer, epoch=epoch + 1, step=0,
                        data_gen_state=data_gen.get_state(), stats=None, history=history, spec_json=spec_json,
                        wall=wall_before + time.monotonic() - t0, sha=sha, amp_state=precision.state_dict(),
                        method=method, lr_schedule=lr_schedule,
                    )
                    rundir.append_metrics(run_dir, m)
                    tensorboard.log(m)
                summary = write_summary("running")
                rate.update(epoch + 1)
                console.print(f"{_epoch_line(m, spec.epochs)}  {rate.eta()}".rstrip(), highlight=False, soft_wrap=True)
                if epoch == start_epoch and (note := cpu_estimate_line(rate.per_unit, spec.epochs - epoch - 1, device)):
                    console.print(note, highlight=False, soft_wrap=True)
                stats = None
                if distributed.any_rank(stop.requested) and epoch + 1 < spec.epochs:
                    msg = f"interrupted after epoch {epoch + 1}; continue with `pdmp train --resume {run_dir}`"
                    summary = write_summary("interrupted", msg)
                    return RunResult(run_dir, summary, history)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now; last.pt is the last finished epoch
        msg = (
            f"interrupted; {len(history)} epochs saved, continue with `pdmp train --resume {run_dir}`"
            if (run_dir / rundir.CHECKPOINTS / "last.pt").exists()
            else "interrupted before the first epoch finished; nothing to resume"
        )
        summary = write_summary("interrupted", msg)
        return RunResult(run_dir, summary, history)
    except (PdmpError, OSError) as e:  # a write failed (run directory no longer writable), or the data
        err = e if isinstance(e, PdmpError) else PdmpError(f"{type(e).__name__}: {e}", 1)
        msg = f"the run stopped: {err}" + (
            f"; then continue with `pdmp train --resume {run_dir}`"
            if (run_dir / rundir.CHECKPOINTS / "last.pt").exists() else ""
        )
        try:  # never leave the summary at "running"; in place if the folder itself became read-only
            write_summary("interrupted", msg, in_place=True)
        except PdmpError:
            pass  # nothing can be written there any more; the error raised says why
        raise PdmpError(msg, err.exit_code) from None
    except Exception as e:  # anything else (a bug, CUDA out of memory): raised as it is, but the summary
        last = run_dir / rundir.CHECKPOINTS / "last.pt"  # never stays "running"
        msg = f"the run stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ") + (
            f"; continue with `pdmp train --resume {run_dir}`" if last.exists() else "")
        try:
            write_summary("interrupted", msg, in_place=True)
        except (PdmpError, OSError):
            pass
        raise
    finally:
        if progress is not None:
            progress.stop()
        tensorboard.close()

    summary = write_summary("complete", huge_note)  # the warning stays with the run
    return RunResult(run_dir, summary, history)
