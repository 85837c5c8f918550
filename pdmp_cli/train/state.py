"""The objects a method's hooks see during training (:mod:`pdmp_cli.methods`).

- :class:`TrainStep`: the model and the method's loss as one module (what DDP wraps);
- :class:`EpochContext`: what ``Method.on_epoch_start`` may use (model, optimizer, data; never test);
- :class:`EpochStats`: one epoch's running sums (tensors: a step never waits on the device);
- :class:`StepInfo`: what an ``on_step`` callback receives after every optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from pdmp_cli import distributed
from pdmp_cli.data.split import evaluation_view
from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import Method
from pdmp_cli.models.multimodal import MultimodalModel
from pdmp_cli.runtime import to_device
from pdmp_cli.specs import TrainSpec


@dataclass
class StepInfo:
    """What ``on_step`` callbacks receive after every optimizer step."""

    epoch: int  # 0-based
    step: int  # 0-based, within the epoch
    loss: torch.Tensor  # detached, on the device
    model: MultimodalModel
    optimizer: torch.optim.Optimizer


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
