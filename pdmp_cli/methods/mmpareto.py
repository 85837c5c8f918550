"""``mmpareto``: MMPareto (Wei and Hu, ICML 2024), as its reference code
(GeWu-Lab/MMPareto_ICML2024, a339db3: ``code/MMPareto.py``, ``code/min_norm_solvers.py``) does it.

The model gets one linear head per modality on its encoder features (method-owned) beside the
fused head; the losses are L_mm = CE(fused) and L_m = CE(head_m(f_m)). Every step, for each
modality m, with g_mm and g_m the gradients of L_mm and L_m w.r.t. m's own parameters (its
encoder; heads excluded), flattened over all of them::

    cos(g_mm, g_m) > 0  ->  (k0, k1) = (0.5, 0.5)
    otherwise           ->  (k0, k1) = MinNorm(g_mm, g_m): the min-norm point of their convex hull,
                            k0 = (g_m.g_m - g_mm.g_m) / |g_mm - g_m|^2   (MGDA, two tasks)

then L_mm + sum_m L_m is back-propagated (the heads keep that gradient), and every parameter p
of modality m gets, with g_sum its gradient of the summed loss::

    new = 2 k0 g_mm(p) + 2 k1 g_m(p)
    new <- new * |g_sum(p)| / |new|   if |g_sum(p)| > |new|       (per parameter tensor)
    grad(p) = scale * new                                          (scale 1.5, hard-coded there)

The per-loss gradients come from ``torch.autograd.grad`` on the same graph (the reference calls
``backward`` three times and zeroes in between: the same numbers). Under DDP they are averaged
over ranks before the cosine (the reference sees the whole batch), and the summed loss goes
through DDP's own backward. fp16: the per-loss gradients are computed on the scaled loss and
unscaled like the rest.

Choices (docs/training.md, "MMPareto"):

* MinNorm's clamps follow min_norm_solvers.py (0.999 / 0.001 when one gradient dominates).
* Any N >= 2 (each modality's pair (L_mm, L_m) is solved on its own, as the reference does
  for each of its two). BalanceBenchmark's copy compares a gradient with itself (cos always 1)
  and leaves the MinNorm weights at 0 (by reading); not so here.
* Defaults: scale 1.5 as the reference; its lr 2e-3 and 50 epochs are replaced by the paper's
  shared settings (SGD lr 1e-3, batch 64, 100 epochs) from the spec as for every method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pdmp_cli import distributed  # no-ops with one process
from pdmp_cli.methods import Method, register_method
from pdmp_cli.methods._heads import late_fusion_shape


def min_norm_2(g1: torch.Tensor, g2: torch.Tensor) -> tuple[float, float]:
    """Weights (c, 1 - c) of the min-norm point c g1 + (1 - c) g2 (min_norm_solvers.py, two tasks)."""
    v11, v12, v22 = float(g1 @ g1), float(g1 @ g2), float(g2 @ g2)
    if v12 >= v11:
        c = 0.999
    elif v12 >= v22:
        c = 0.001
    else:
        c = (v22 - v12) / (v11 + v22 - 2 * v12)
    return c, 1 - c


def pareto_weights(g_mm: torch.Tensor, g_uni: torch.Tensor) -> tuple[float, float]:
    """(k0, k1): (0.5, 0.5) when the two gradients agree (cosine > 0), else MinNorm."""
    if F.cosine_similarity(g_mm, g_uni, dim=0) > 0:
        return 0.5, 0.5
    return min_norm_2(g_mm, g_uni)


def combine(g_sum: torch.Tensor, g_mm: torch.Tensor, g_uni: torch.Tensor, k: tuple[float, float], scale: float) -> torch.Tensor:
    """scale * (2 k0 g_mm + 2 k1 g_uni), stretched to |g_sum| when that is larger (one parameter)."""
    new = 2 * k[0] * g_mm + 2 * k[1] * g_uni
    ratio = g_sum.norm() / new.norm().clamp_min(1e-30)  # a zero combination stays zero
    return torch.where(ratio > 1, ratio * new, new) * scale


class MMParetoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: float = Field(1.5, gt=0, description="factor on the combined encoder gradients (reference: gamma = 1.5, hard-coded)")


@register_method("mmpareto")
class MMPareto(Method):
    Args = MMParetoArgs
    table_order = 50  # Table I: after PMR
    in_paper_table = True

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        dims, num_classes = late_fusion_shape(model, self.name)
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})
        self._params = {m: [p for p in ps if p.requires_grad] for m, ps in model.modality_parameters().items()}
        self._terms: dict = {}
        self._task_grads: dict = {}
        self.register_buffer("k", torch.full((len(self.modalities), 2), 0.5))  # last step's (k0, k1) per modality

    def describe(self) -> str:
        return (f"MMPareto: fused CE + {len(self.modalities)} unimodal head CEs; per modality MinNorm weights when "
                f"the gradients conflict, x{self.args.scale:g}")  # fmt: skip

    def forward_loss(self, model, inputs, labels, epoch, part):
        out = model(inputs, with_branches=False)
        self._terms = {"mm": F.cross_entropy(out.logits, labels)}
        self._terms.update({m: F.cross_entropy(self.heads[m](out.features[m]), labels) for m in self.modalities})
        return out, sum(self._terms.values())

    def backward(self, loss, precision) -> None:
        scaler = precision.scaler
        scale = scaler.get_scale() if scaler is not None else 1.0
        every = [p for m in self.modalities for p in self._params[m]]
        g_mm = torch.autograd.grad(self._terms["mm"] * scale, every, retain_graph=True, allow_unused=True)
        grads, i = {}, 0
        for m in self.modalities:
            n = len(self._params[m])
            g_m = torch.autograd.grad(self._terms[m] * scale, self._params[m], retain_graph=True, allow_unused=True)
            pair = []
            for gs in (g_mm[i : i + n], g_m):
                flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() / scale for g, p in zip(gs, self._params[m])])
                pair.append(distributed.all_reduce_(flat, "mean"))
            grads[m] = pair
            i += n
        self._task_grads = grads
        precision.backward(loss)  # the summed loss: heads and fusion keep this gradient

    @torch.no_grad()
    def after_backward(self, out, labels, epoch):
        for j, m in enumerate(self.modalities):
            g_mm, g_uni = self._task_grads[m]
            k = pareto_weights(g_mm, g_uni)
            self.k[j] = torch.tensor(k, dtype=self.k.dtype)
            start = 0
            for p in self._params[m]:
                n = p.numel()
                if p.grad is not None:
                    part = slice(start, start + n)
                    p.grad.copy_(combine(p.grad, g_mm[part].view_as(p), g_uni[part].view_as(p), k, self.args.scale))
                start += n
        self._terms, self._task_grads = {}, {}
        return self.gamma
