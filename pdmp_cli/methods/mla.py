"""``mla``: Multimodal Learning with Alternating Unimodal Adaptation (Zhang et al., CVPR 2024),
as its reference code (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation,
ab6c184: ``main.py::train_epoch`` with ``--gs_flag``, ``utils/utils.py::GSPlugin``) does it.

Training, per batch, for each modality m in the dataset's order (audio, then visual, ...)::

    z_m = encoder_m(x_m);  loss_m = CE(head(z_m), y)        one SHARED head Linear(D, K)
    backward(loss_m)
    [optional: OWM projection of the head weight's gradient (below)]
    optimizer.step();  zero the gradients

so a batch makes M optimizer steps and there is no fused loss. The head-gradient projection
(orthogonal weight modification, OWM), described by the paper, keeps the shared head from
forgetting what the other modalities taught it; the official code never applies it (below), so
it is off by default and ``--set mla.projection=true`` turns it on. With r the batch-mean
feature (1, D), batch index b of n per epoch::

    alpha = 0.1 ** (1 + b / n)
    k = P r^T                                   (D, 1)
    P <- P - k k^T / (alpha + r k)              P starts as the identity (D, D)
    P <- P / ||P||_F
    grad(head.weight) <- grad(head.weight) P^T  (the bias is not projected)

The very first step of the run (``exp_count == 0``) neither updates P nor projects: OWM has no
earlier task to protect yet.

Evaluation: the prediction combines the unimodal outputs head(z_m):
``fixed``: sum_m w_m head(z_m) with given weights (uniform by default); ``dynamic`` (the
paper's test-time uncertainty-based fusion): per sample, with H_m the entropy of
softmax(head(z_m)), ``w_m = exp(max_j H_j - H_m) / sum_k exp(max_j H_j - H_k)``.

Choices where the reference code has a bug or leaves something open (docs/training.md, "MLA"):

* **No projection by default (``projection=False``), as the official code runs.**
  ``GSPlugin.before_update`` only projects when a parameter of the head is named
  ``"module.weight"``, but it is called with the bare ``nn.Linear`` (names ``weight``, ``bias``),
  so in the official code the projection is never applied and P never updated: the published
  MLA numbers come from runs without it, and Table I's baseline is the method as published.
  ``projection=True`` applies it as the paper describes. Beware: with the Frobenius
  normalisation P's entries shrink like 1/sqrt(D), so the projection also shrinks the head's
  weight gradient about that much (x0.044 at D 512), a smaller head learning rate as much as a
  projection. (pdmp before this change defaulted to ``projection=True``; docs/training.md, "MLA", says
  which tables used which.)
* **Scalar denominator.** The official update divides by ``alpha + torch.mm(k, r)``, a (D, D)
  matrix (an elementwise division), where OWM (Zeng et al., 2019) and the MLA paper divide by
  the scalar ``alpha + r P r^T``. The code path never runs (above), so we follow the papers.
* **Dynamic weights per sample.** The official ``calculate_entropy`` takes ``softmax(dim=0)``
  over the whole (B, K) batch and sums, giving one weight per modality per *batch*, so a
  sample's prediction depends on the other samples of its evaluation batch (and on the
  evaluation batch size). We compute the paper's per-sample entropy over classes.
* **Fixed weights.** The official training script calls ``main(av_alpha=0.55)``, so its fixed
  fusion evaluates 0.55 audio / 0.45 visual (0.35/0.25/0.4 for a/v/t); the ``--av_alpha``
  default 0.5 only applies to evaluation-only runs. We default to uniform weights 1/M (no
  modality favoured); ``fixed_weights`` sets others.
* **Steps move only what the modality's loss reached.** The reference ran on torch 1.8, where
  ``optimizer.zero_grad()`` leaves zero-filled gradients, so in the visual step SGD's momentum and
  weight decay also moved the audio encoder again. We zero with ``set_to_none`` (torch 2's
  default): step m updates encoder m and the head only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from pdmp_cli.errors import PdmpError
from pdmp_cli import distributed  # no-ops with one process
from pdmp_cli.methods import Method, register_method
from pdmp_cli.methods._heads import late_fusion_shape
from pdmp_cli.models.base import batchnorm_stats_frozen

# --- the method's computations (pure functions, unit-tested by hand) ------------------------------


def owm_alpha(batch_index: int, batches_per_epoch: int) -> float:
    """The OWM regulariser of the reference code: ``0.1 ** (1 + b / n)`` (b 0-based within the epoch)."""
    return 0.1 ** (1.0 + batch_index / batches_per_epoch)


@torch.no_grad()
def owm_update(P: torch.Tensor, features: torch.Tensor, alpha: float) -> torch.Tensor:
    """The new projection matrix after seeing ``features`` (B, D): rank-one OWM update, then P / ||P||_F."""
    r = features.detach().float().mean(dim=0, keepdim=True)  # (1, D) batch-mean feature
    k = P @ r.T  # (D, 1)
    P = P - (k @ k.T) / (alpha + (r @ k))  # (r @ k) is (1, 1): the scalar r P r^T
    return P / torch.linalg.matrix_norm(P, ord="fro")


@torch.no_grad()
def project_(grad: torch.Tensor, P: torch.Tensor) -> None:
    """``grad (K, D) <- grad P^T`` in place (the head weight's gradient)."""
    grad.copy_(grad @ P.T.to(grad.dtype))


def entropy_weights(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-sample fusion weights from each modality's predictive entropy (the paper's dynamic fusion).

    ``H_m = -sum_c p_mc log p_mc`` with ``p_m = softmax(logits_m)`` over classes;
    ``w_m = exp(max_j H_j - H_m)`` normalised over modalities. Returns modality -> (B,) weights.
    """
    ent = torch.stack(
        [-(torch.softmax(s.float(), 1) * torch.log_softmax(s.float(), 1)).sum(1) for s in logits.values()]
    )  # (M, B)
    w = torch.exp(ent.max(dim=0, keepdim=True).values - ent)
    w = w / w.sum(dim=0, keepdim=True)
    return dict(zip(logits, w))


def combine(logits: dict[str, torch.Tensor], weights: dict[str, torch.Tensor | float]) -> torch.Tensor:
    """``sum_m w_m * logits_m``; a weight is a float or a (B,) tensor (one per sample)."""
    out = None
    for m, s in logits.items():
        w = weights[m]
        term = s * (w[:, None] if torch.is_tensor(w) else w)
        out = term if out is None else out + term
    return out


# --- the registered method ------------------------------------------------------------------------


class MLAArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projection: bool = Field(
        False,
        description="apply the OWM head-gradient projection the paper describes; false (default): as the "
        "official code runs, whose projection is never applied (the published numbers)",
    )
    fusion: Literal["dynamic", "fixed"] = Field(
        "dynamic", description="prediction: per-sample entropy weights (dynamic) or fixed_weights (fixed)"
    )
    fixed_weights: list[float] | None = Field(
        None, description="weights of the fixed fusion in the dataset's modality order (default 1/M each)"
    )

    @field_validator("fixed_weights")
    @classmethod
    def _positive(cls, v):
        if v is not None and (not v or any(w < 0 for w in v) or sum(v) <= 0):
            raise ValueError("must be non-negative numbers with a positive sum, one per modality")
        return v


@register_method("mla")
class MLA(Method):
    """Alternating unimodal steps through one shared head; entropy-weighted prediction."""

    Args = MLAArgs
    table_order = 60  # Table I: after MMPareto
    in_paper_table = True
    find_unused_parameters = True  # the model's own fusion head is not used; each step leaves M-1 encoders out

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        dims, num_classes = late_fusion_shape(model, self.name)
        if len(set(dims.values())) != 1:
            raise PdmpError(
                f"mla passes every modality through one shared head, and the feature sizes differ ({dims}); "
                "use one encoder kind for all modalities",
                exit_code=2,
            )
        d = next(iter(dims.values()))
        w = self.args.fixed_weights
        if w is not None and len(w) != len(self.modalities):
            raise PdmpError(
                f"mla.fixed_weights has {len(w)} values and the dataset {len(self.modalities)} modalities "
                f"({', '.join(self.modalities)}); give one weight per modality",
                exit_code=2,
            )
        w = w or [1.0] * len(self.modalities)
        self.weights = {m: x / sum(w) for m, x in zip(self.modalities, w)}
        self.head = nn.Linear(d, num_classes)  # the shared head (the reference: fc_out of size D -> K)
        self.register_buffer("P", torch.eye(d))  # OWM projection (reference: GSPlugin.Pl)
        # counters as plain ints (no device sync per step), saved with the method (get_extra_state)
        self.exp_count = 0  # optimizer steps so far, all epochs (reference: GSPlugin.exp_count)
        self.batch_index = 0  # batches done in this epoch
        self.batches = 1  # batches per epoch
        self._part = None

    def get_extra_state(self):
        return {"exp_count": self.exp_count, "batch_index": self.batch_index, "batches": self.batches}

    def set_extra_state(self, state) -> None:
        self.exp_count, self.batch_index, self.batches = state["exp_count"], state["batch_index"], state["batches"]

    def describe(self) -> str:
        proj = "OWM head-gradient projection" if self.args.projection else "no projection (as the official code runs)"
        fused = "per-sample entropy weights" if self.args.fusion == "dynamic" else f"fixed weights {self.weights}"
        return f"MLA: one step per modality per batch ({', '.join(self.modalities)}), shared head, {proj}; prediction: {fused}"

    def on_epoch_start(self, ctx) -> None:
        self.batch_index = 0
        self.batches = math.ceil(len(ctx.dataset("train")) / ctx.spec.batch_size)

    def parts(self, epoch):
        return self.modalities

    def forward_loss(self, model, inputs, labels, epoch, part):
        # every part runs the whole model, but only modality `part`'s encoder gets a gradient; an
        # encoder not stepped yet this batch gives the same features as in the first part, so this
        # equals the reference's single forward per batch. BatchNorm statistics move once per batch.
        once = part == self.modalities[0] or not model.training
        with contextlib.nullcontext() if once else batchnorm_stats_frozen(model):
            out = model(inputs, with_branches=False)
        self._part = part
        return out, F.cross_entropy(self.head(out.features[part]), labels)

    def after_backward(self, out, labels, epoch):
        if self.args.projection and self.exp_count > 0 and self.head.weight.grad is not None:
            # the batch-mean feature of the whole (global) batch, so every rank holds the same P
            feats = distributed.all_reduce_(out.features[self._part].detach().float().mean(0, keepdim=True), "mean")
            alpha = owm_alpha(self.batch_index, self.batches)
            self.P.copy_(owm_update(self.P, feats, alpha))
            project_(self.head.weight.grad, self.P)
        self.exp_count += 1
        if self._part == self.modalities[-1]:
            self.batch_index += 1
        return self.gamma

    def unimodal_logits(self, out) -> dict[str, torch.Tensor]:
        return {m: self.head(out.features[m]) for m in self.modalities}

    def predict(self, out):
        logits = self.unimodal_logits(out)
        weights = entropy_weights(logits) if self.args.fusion == "dynamic" else self.weights
        # branch accuracy = each modality through the shared head
        return dataclasses.replace(out, logits=combine(logits, weights), branch_logits=logits)
