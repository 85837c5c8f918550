"""``agm``: Adaptive Gradient Modulation (Li et al., ICCV 2023), as its reference code
(lihongcs/AGM, the CREMA-D setting) computes it; facts in BASELINES.md.

Each modality's *mono-modal response* is its Shapley value in the fused logits, with the
other modalities' features set to zero (f(S): the fused logits when only the modalities in S
keep their features). For two modalities (the reference's formula)::

    m_a = 1/2 [f(a,v) - f(0,v) + f(a,0)],    m_v = 1/2 [f(a,v) - f(a,0) + f(0,v)]

so m_a + m_v = f(a,v); with N modalities, m_i = phi_i + f(none)/N (phi: the exact Shapley
value over the 2^N subsets), which is the same formula for N = 2 and keeps sum_i m_i = f(all).
For concat fusion m_i equals the exact branch logits s_i. Then, every step::

    s_i   = mean_batch CE(m_i, y)   (probabilities clamped at 1e-8)
    r_i   = exp(M/(M-1) * (mean_j s_j - s_i))        two modalities: r_a = exp(s_v - s_a)
    S_i  <- S_i (t-1)/t + s_i / t                      running mean of s_i over the run's steps
    r^_i  = exp(M/(M-1) * (mean_j S_j - S_i))          the running target
    k_i   = exp(alpha * min(r^_i - r_i, 10))           (k may exceed 1)

and the loss CE(sum_i m_i, y) is back-propagated with the gradient through m_i scaled by k_i
(the reference scales it with identity modules and backward hooks; here the same gradient
comes from ``k m + (1 - k) m.detach()``, whose value is m). At the first step of each epoch
the coefficients and running means are not updated (the previous step's k is used; 1 at the
very start), as the reference does. Under DDP the batch means s_i are averaged over ranks.

Choices (README, "AGM"):

* **The padded passes carry gradients.** The reference computes f(0,v) and f(a,0) under
  ``torch.no_grad()``, so its hooks scale only the gradient through f(a,v), by the *average*
  of k_a and k_v: every parameter gets the same factor and the modulation never tells the
  modalities apart (BASELINES.md, "Pitfall"). We follow the paper: the gradient through each
  modality's response is scaled by its own k.
* **Any N >= 2** through the Shapley form above (the paper runs AGM tri-modal on CEFA);
  BalanceBenchmark's N-modality version flips the sign of r (by reading), we do not.
* Defaults: alpha 1.5 and modulation for the whole run, the reference's CREMA-D setting
  (AGM issue #3); the shared training settings (SGD lr 1e-3, batch 64, 100 epochs) come from the
  spec as for every method.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from pdmp_cli.methods import Method, register_method


def subset_logits(model, out, inputs, keep) -> torch.Tensor:
    """f(S): the fused logits with only the modalities in ``keep`` present (the rest zero)."""
    if hasattr(model, "fusion") and hasattr(model, "encoders"):  # late fusion: zero the features
        feats = out.features
        return model.fusion({m: f if m in keep else torch.zeros_like(f) for m, f in feats.items()})
    from pdmp_cli.models.multimodal import batchnorm_stats_frozen

    with batchnorm_stats_frozen(model) if model.training else contextlib.nullcontext():
        return model.masked(inputs, tuple(keep))[0]


def shapley_responses(f: dict[frozenset, torch.Tensor], modalities: list[str]) -> dict[str, torch.Tensor]:
    """m_i = phi_i + f(none)/N from the fused logits f(S) of every subset S (keys: frozensets)."""
    n = len(modalities)
    resp = {}
    for i in modalities:
        others = [m for m in modalities if m != i]
        phi = 0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                phi = phi + weight * (f[frozenset(s) | {i}] - f[frozenset(s)])
        resp[i] = phi + f[frozenset()] / n
    return resp


def agm_scores(responses: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """s_i = batch-mean CE of m_i, probabilities clamped at 1e-8 (reference), as a (N,) tensor."""
    return torch.stack(
        [-torch.log(torch.softmax(m.detach().float(), 1).gather(1, labels[:, None]).clamp_min(1e-8)).mean()
         for m in responses.values()]
    )  # fmt: skip


def agm_ratio(scores: torch.Tensor) -> torch.Tensor:
    """r_i = exp(M/(M-1) (mean_j s_j - s_i)); two modalities: r_a = exp(s_v - s_a)."""
    m = scores.numel()
    return torch.exp(m / (m - 1) * (scores.mean() - scores))


def agm_coefficients(scores: torch.Tensor, running: torch.Tensor, alpha: float) -> torch.Tensor:
    """k_i = exp(alpha * min(r^_i - r_i, 10)) from this step's scores and the running means."""
    return torch.exp(alpha * torch.clamp(agm_ratio(running) - agm_ratio(scores), max=10.0))


class AGMArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(1.5, gt=0, description="alpha of k = exp(alpha * min(r^ - r, 10)); reference CREMA-D: 1.5")


@register_method("agm")
class AGM(Method):
    Args = AGMArgs
    table_order = 30  # Table I: after OGM-GE
    in_paper_table = True

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        n = len(self.modalities)
        self.register_buffer("k", torch.ones(n))  # the coefficients in use
        self.register_buffer("running", torch.zeros(n))  # S_i
        self.register_buffer("t", torch.zeros((), dtype=torch.long))  # steps that updated S
        self.register_buffer("epoch_seen", torch.full((), -1, dtype=torch.long))

    def describe(self) -> str:
        return f"AGM, alpha {self.args.alpha:g}: each modality's Shapley response scaled by k = exp(alpha min(r^ - r, 10))"

    def forward_loss(self, model, inputs, labels, epoch, part):
        out = model(inputs, with_branches=False)
        f = {frozenset(self.modalities): out.logits}
        for size in range(len(self.modalities)):
            for s in itertools.combinations(self.modalities, size):
                f[frozenset(s)] = subset_logits(model, out, inputs, s)
        responses = shapley_responses(f, self.modalities)
        with torch.no_grad():
            first_step = int(self.epoch_seen) != epoch  # one sync per step: a bool read by Python
            self.epoch_seen.fill_(epoch)
            if not first_step:
                from pdmp_cli.train import distributed  # no-ops with one process

                scores = distributed.all_reduce_(agm_scores(responses, labels), "mean")
                self.t += 1
                t = self.t.to(scores.dtype)
                self.running.mul_((t - 1) / t).add_(scores / t)
                self.k.copy_(agm_coefficients(scores, self.running, self.args.alpha))
        k = self.k.to(out.logits.dtype)
        total = sum(k[i] * m + (1 - k[i]) * m.detach() for i, m in enumerate(responses.values()))
        out.branch_logits = responses
        return out, F.cross_entropy(total, labels)

    def after_backward(self, out, labels, epoch):
        return {m: self.k[i] for i, m in enumerate(self.modalities)}
