"""``pmr``: Prototypical Modal Rebalance (Fan et al., CVPR 2023), as its reference code
(fanyunfeng-bit/Modal-Imbalance-PMR, ``main_Prototype_grad.py``, CREMA-D script) does it.

Prototypes: at the start of every epoch, each class c's prototype for modality m is the mean
encoder feature of the samples of class c, with no gradient and the model in evaluation mode;
``p <- (1 - momentum) p_new + momentum p_old`` (the scripts use 0) for the prototypes of epoch 2
on; those of epochs 0 and 1 are the class means as they are, as in the reference (its
``calculate_prototype`` applies the momentum only for ``epoch > 0`` and is called with epoch 0
before training and again after epoch 0; earlier pdmp blended from the first epoch on, with
zeros at epoch 0). Which samples, as the reference per dataset
(``main_Prototype_grad.py::calculate_prototype`` and its callers, ``pmr.source``):

* ``auto`` (default): the dataset's **own validation split**, all of it, when it ships one (the
  reference does so on AVE, whose ``valSet.txt`` it loads: ``calculate_prototype(..., val_dataloader)``
  with no early break); otherwise a random ``fraction`` (a tenth) of the training split (the
  reference on CREMA-D, Kinetics-Sounds and VGGSound: the first ``len(loader) // 10`` shuffled
  training batches). A validation split pdmp *carved* from train counts as none.
* ``train`` / ``val``: always that source (``val``: the validation split, own or carved).

Never the test split: on its CG-MNIST script the reference's "validation" loader is the test
set; pdmp has no such path. Note that prototypes from the validation split make its labels part
of training (they set the prototypes the weaker modality is pulled toward), so a validation-
selected headline is then less independent of training than usual; the reference does this on
AVE and pdmp follows it there by default (``--set pmr.source=train`` keeps validation clean).
Every step, for each modality m with features f_m::

    sim_m(i, c) = -|| f_m(i) - p_m,c ||_2                    (B, K)
    score_m     = sum_i softmax(sim_m)(i, y_i)
    rho_m       = score_m / mean_{j != m} score_j            two modalities: rho_a = score_a / score_v
    loss        = CE(fused logits, y) + sum_m beta_m CE(sim_m, y)
    beta_m      = alpha if rho_m < 1 (the weaker modality) else 0        (a tie: none)

inside the window of epochs [start, end) (outside it: the fused CE only). Under DDP the scores
are summed over ranks, so every rank picks the same modality.

Choices (docs/training.md, "PMR"):

* Defaults from the reference's CREMA-D script: alpha 2.0, window epochs 0-70 inclusive
  (``start`` 0, exclusive ``end`` 71), momentum 0; the shared training settings (SGD lr 1e-3,
  batch 64, 100 epochs instead of the script's 130) come from the spec as for every method.
* The paper's prototype entropy regularisation (PER) is not in the reference code (PMR issues
  #4, #7, #9) and is left out here too: we run what the reference runs.
* Any N >= 2: the weaker-than-the-others rule above reduces to the reference's rho for two
  modalities (BalanceBenchmark falls back to an OGM-like rule for 3+ and crashes by reading).
* Prototypes from a seeded random tenth of the training split (or all of the validation split,
  above) in evaluation mode (no BatchNorm statistics are changed); an empty class keeps its
  previous prototype.
* **Prototype features without augmentation.** The reference reads its augmenting training
  loader; pdmp reads the training samples as evaluation does (the same reading as the validation
  split, as D&R), so a prototype is a class centre rather than a centre of random crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pdmp_cli import distributed  # no-ops with one process
from pdmp_cli.methods import Method, register_method
from pdmp_cli.methods._heads import late_fusion_shape


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-class mean features (K, D), whether each class had a sample (K,))."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return sums / counts.clamp_min(1)[:, None], counts > 0


def prototype_similarity(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """sim(i, c) = -||f(i) - p_c||_2, (B, K)."""
    return -torch.cdist(features.float(), prototypes.float())


def extra_loss_weights(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """beta_m = alpha for each modality with rho_m = score_m / mean_{j != m} score_j < 1, else 0."""
    n = scores.numel()
    others = (scores.sum() - scores) / (n - 1)
    return torch.where(scores / others < 1, torch.full_like(scores, alpha), torch.zeros_like(scores))


class PMRArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(2.0, ge=0, description="weight of the weaker modality's prototype CE; reference CREMA-D: 2.0",
                         json_schema_extra={"tune": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]})  # pdmp tune: halving/doubling the reference's 2.0
    momentum: float = Field(0.0, ge=0, lt=1, description="prototype EMA: p = (1-momentum) p_new + momentum p_old; reference: 0")
    start: int = Field(0, ge=0, description="first epoch of the rebalancing window (0-based)")
    end: int = Field(71, ge=1, description="epoch the window ends (0-based, exclusive; reference CREMA-D: epochs 0-70 inclusive)")
    fraction: float = Field(0.1, gt=0, le=1, description="share of the training split the prototypes are computed from (reference: a tenth)")
    source: Literal["auto", "train", "val"] = Field(
        "auto",
        description="prototype samples: auto = the dataset's own validation split when it ships one (the reference "
        "on AVE), else `fraction` of train (CREMA-D, KS, VGGSound); never test",
    )

    @model_validator(mode="after")
    def _window(self):
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be > start ({self.start})")
        return self


@register_method("pmr")
class PMR(Method):
    Args = PMRArgs
    table_order = 40  # Table I: after AGM
    in_paper_table = True

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        dims, self.num_classes = late_fusion_shape(model, self.name)
        for m, d in dims.items():
            self.register_buffer(f"proto_{m}", torch.zeros(self.num_classes, d))
        self.register_buffer("beta", torch.zeros(len(self.modalities)))  # last step's weights (logged)

    def prototypes(self, m: str) -> torch.Tensor:
        return getattr(self, f"proto_{m}")

    def describe(self) -> str:
        a = self.args
        src = {"auto": f"the dataset's own validation split if it has one, else {a.fraction:g} of train",
               "train": f"{a.fraction:g} of train", "val": "the validation split"}[a.source]  # fmt: skip
        return (f"PMR, alpha {a.alpha:g} on the weaker modality's prototype CE in epochs [{a.start}, {a.end}) "
                f"(0-based); prototypes from {src} each epoch, momentum {a.momentum:g}")  # fmt: skip

    def prototype_source(self, ctx) -> str:
        """``"val"`` or ``"train"``: ``auto`` takes the dataset's own validation split (not a carved one)."""
        if self.args.source == "auto":
            return "val" if getattr(ctx, "val_source", None) == "manifest" else "train"
        return self.args.source

    def on_epoch_start(self, ctx) -> None:
        if self.prototype_source(ctx) == "val":
            feats, labels = ctx.features("val")  # all of it, as the reference on AVE
        else:
            feats, labels = ctx.features("train", fraction=self.args.fraction)
        # the reference blends only from its third computation on: calculate_prototype skips the
        # momentum for ``epoch <= 0`` and is passed epoch 0 both before training and after epoch 0
        mu = self.args.momentum if self.args.momentum and ctx.epoch >= 2 else 0.0
        for m in self.modalities:
            new, seen = class_means(feats[m].to(self.prototypes(m).device), labels.to(self.prototypes(m).device), self.num_classes)
            p = self.prototypes(m)
            p.copy_(torch.where(seen[:, None], (1 - mu) * new + mu * p, p))

    def forward_loss(self, model, inputs, labels, epoch, part):
        out = model(inputs, with_branches=False)
        loss = F.cross_entropy(out.logits, labels)
        if not (self.args.start <= epoch < self.args.end):
            self.beta.zero_()
            return out, loss
        sims = {m: prototype_similarity(out.features[m], self.prototypes(m)) for m in self.modalities}
        with torch.no_grad():
            scores = torch.stack([torch.softmax(s, 1).gather(1, labels[:, None]).sum() for s in sims.values()])
            self.beta.copy_(extra_loss_weights(distributed.all_reduce_(scores), self.args.alpha))
        for i, s in enumerate(sims.values()):
            loss = loss + self.beta[i] * F.cross_entropy(s, labels)
        return out, loss
