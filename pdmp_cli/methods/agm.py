"""``agm``: Adaptive Gradient Modulation (Li et al., ICCV 2023), as its reference code
(lihongcs/AGM, the CREMA-D setting) computes it; facts in docs/baselines.md.

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
comes from ``k m + (1 - k) m.detach()``, whose value is m). k is updated at every step, the
running target r^ built from the running means *before* this step's scores are added (S starts
at 0, so the first step's r^ is 1), as the reference does (AGM_ICCV2023 ``run/CREMAD_main.py``
145-155: ``coeff`` from ``train_score`` of the previous steps, then ``train_score`` updated).
Under DDP the batch means s_i are averaged over ranks.

After backward, the reference's conditional clip (``run/CREMAD_main.py`` 233-238): when any
element of the classifier head's weight gradient leaves [-1, 1] (``max > 1 or min < -1``), the
gradient of every model parameter is clipped to a total norm of 1.0 (``clip_grad_norm_``).
k reaches e^15 at alpha 1.5, so without the clip a run can diverge (docs/training.md's
``synthetic-ave`` runs before the clip: one seed of three ended with infinite BatchNorm
variances). On by default; ``--set agm.clip=false`` turns it off. The head is the last linear
layer that makes the logits (:func:`head_weights`: concat/film ``fc``, gated ``fc_out``, sum
both ``fcs``, se ``head``, mmformer ``classifier``), the reference's ``fc_out`` (late fusion)
or ``head.fc`` (early fusion).

Choices (docs/training.md, "AGM"):

* **The padded passes carry gradients, as in the official code.** The reference
  (``model/CREMAD_net.py`` 57-67) runs the passes with zeroed inputs in ``eval()`` mode but
  *with* gradients, so each modality's response, and with it each encoder's gradient, is
  scaled by that modality's own k. We do the same. (BalanceBenchmark's port,
  ``AGM_trainer.py`` 172, runs them under ``torch.no_grad()``, so its hooks scale every
  parameter by the average of the k's; we do not follow the port.) One difference: for a late
  fusion we zero the *features* of the left-out modalities (the reference re-runs the encoders
  on zeroed inputs in ``eval()`` mode), so for concat m_i is exactly the branch logits s_i;
  fusions that fuse inside the encoders use the model's masked forward.
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

from pdmp_cli.errors import PdmpError
from pdmp_cli import distributed  # no-ops with one process
from pdmp_cli.methods import Method, register_method


def subset_logits(model, out, inputs, keep) -> torch.Tensor:
    """f(S): the fused logits with only the modalities in ``keep`` present (the rest zero)."""
    if hasattr(model, "fusion") and hasattr(model, "encoders"):  # late fusion: zero the features
        feats = out.features
        return model.fusion({m: f if m in keep else torch.zeros_like(f) for m, f in feats.items()})
    from pdmp_cli.models.base import batchnorm_stats_frozen

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


def head_weights(model) -> list[torch.nn.Parameter]:
    """The weight(s) of the linear layer that makes the logits: the reference's ``fc_out`` / ``head.fc``.

    Late fusion: the fusion's ``fc_out`` (gated), ``fc`` (concat, FiLM) or every ``fcs`` layer (sum,
    one head per modality); a model that fuses inside its encoders: its ``head`` (se) or
    ``classifier`` (mmformer).
    """
    fusion = getattr(model, "fusion", None)
    owners = [(fusion, ("fc_out", "fc", "fcs"))] if fusion is not None else [(model, ("head", "classifier"))]
    for owner, names in owners:
        for name in names:
            layer = getattr(owner, name, None)
            if isinstance(layer, torch.nn.Linear):
                return [layer.weight]
            if isinstance(layer, torch.nn.ModuleDict):
                return [m.weight for m in layer.values() if isinstance(m, torch.nn.Linear)]
    raise PdmpError(
        f"agm's gradient clip watches the classifier head, and this model ({type(model).__name__}) has none it "
        "knows (fc_out, fc, fcs, head, classifier); pass --set agm.clip=false or name the head so",
        exit_code=2,
    )


@torch.no_grad()
def conditional_clip_(head: list[torch.Tensor], params: list[torch.Tensor], max_norm: float = 1.0) -> torch.Tensor:
    """The reference's clip: when any element of the head's weight gradient is > 1 or < -1, clip
    the gradient of ``params`` to total norm ``max_norm``. Returns whether it clipped (0-dim bool
    tensor, no device sync: the clip is applied through a factor of 1 otherwise)."""
    grads = [g for g in (p.grad for p in head) if g is not None]
    if not grads:
        return torch.zeros((), dtype=torch.bool)
    fire = torch.stack([g.abs().max() for g in grads]).max() > 1
    all_grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(all_grads)
    # clip_grad_norm_'s factor, applied only when the head's gradient left [-1, 1]
    factor = torch.where(fire, torch.clamp(max_norm / (total + 1e-6), max=1.0), torch.ones_like(total))
    torch._foreach_mul_(all_grads, factor.to(all_grads[0].dtype))
    return fire


class AGMArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(1.5, gt=0, description="alpha of k = exp(alpha * min(r^ - r, 10)); reference CREMA-D: 1.5",
                         json_schema_extra={"tune": [0.1, 0.25, 0.5, 1.0, 1.5, 3.0]})  # pdmp tune: BalanceBenchmark's 0.1 to twice the reference's 1.5
    clip: bool = Field(
        True,
        description="the reference's clip: when an element of the head's weight gradient leaves [-1, 1], "
        "clip every parameter's gradient to total norm 1.0",
    )


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
        self.register_buffer("clipped", torch.zeros((), dtype=torch.long))  # steps the clip fired
        # plain lists (not submodules): the model's parameters stay the model's
        self._params = list(model.parameters()) if self.args.clip else []
        self._head = head_weights(model) if self.args.clip else []

    def describe(self) -> str:
        clip = "; gradients clipped to norm 1 when the head's leave [-1, 1]" if self.args.clip else "; no clip"
        return (f"AGM, alpha {self.args.alpha:g}: each modality's Shapley response scaled by "
                f"k = exp(alpha min(r^ - r, 10)){clip}")  # fmt: skip

    def forward_loss(self, model, inputs, labels, epoch, part):
        out = model(inputs, with_branches=False)
        f = {frozenset(self.modalities): out.logits}
        for size in range(len(self.modalities)):
            for s in itertools.combinations(self.modalities, size):
                f[frozenset(s)] = subset_logits(model, out, inputs, s)
        responses = shapley_responses(f, self.modalities)
        with torch.no_grad():
            scores = distributed.all_reduce_(agm_scores(responses, labels), "mean")
            # k from the running means of the steps before this one, then this step joins them
            self.k.copy_(agm_coefficients(scores, self.running, self.args.alpha))
            self.t += 1
            t = self.t.to(scores.dtype)
            self.running.mul_((t - 1) / t).add_(scores / t)
        k = self.k.to(out.logits.dtype)
        total = sum(k[i] * m + (1 - k[i]) * m.detach() for i, m in enumerate(responses.values()))
        out.branch_logits = responses
        return out, F.cross_entropy(total, labels)

    def after_backward(self, out, labels, epoch):
        if self.args.clip:
            self.clipped += conditional_clip_(self._head, self._params)
        return {m: self.k[i] for i, m in enumerate(self.modalities)}
