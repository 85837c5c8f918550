"""``ogm-ge``: On-the-fly Gradient Modulation with Generalization Enhancement (Peng et al.,
CVPR 2022), the de-facto baseline of CREMA-D / AVE / KS, as its reference code does it.

Every step, for the two modalities a, v with branch logits s_a, s_v (the fusion's split):

    score_u = sum_i softmax(s_u(i))[y_i]             summed true-class probability
    rho_a   = score_a / score_v,  rho_v = 1 / rho_a
    k_u     = 1 - tanh(alpha * rho_u)  if rho_u > 1  else 1      (OGM-GE paper, Eq. 10)

then, for epochs in the window [start, end) (0-based), every convolution kernel of
modality u (its own parameters with more than two dims, as in the reference code) gets

    g <- k_u * g + N(0, std(g) + 1e-8)                (GE: Gaussian noise of the grad's std)

where std(g) is taken before scaling, and the noise is added to both encoders, as the
reference code does. At an exact tie (rho = 1) the first modality is damped, as by the
reference's ``if ratio_v > 1: damp v, else: damp a`` (its audio is the first of the
concatenation; earlier pdmp damped the second). Its rho_a is 1 / (score_v / score_a), here
score_a / score_v: the same number to one float32 rounding. The relu is a no-op on the branch
it is taken on (rho > 1), so k jumps from 1 to 1 - tanh(alpha) as a modality takes the lead
(0.336 at alpha 0.8); it is exactly 0 in float32 only when alpha * rho >= 9.01 (measured on
``synthetic``: rho <= 3, docs/baselines.md).
Defined for two modalities (the ratio rho_a = score_a / score_v has no N-modality form in the
reference code); with more, this method refuses.

Defaults (``--set ogm-ge.alpha=...``): alpha 0.8, the reference README's recommendation for
CREMA-D (pdmp defaulted to 0.1, the VGGSound value, before); window epochs 0-50 inclusive as the
reference's ``modulation_starts``/``modulation_ends`` (0, 50) with ``<= epoch <=``, written here
as the exclusive end 51. Reference bug left out: its ``name.split('.')[1]`` only finds
the encoders under a DataParallel prefix (GeWu-Lab/OGM-GE_CVPR2022 #38); here the kernels are the
model's modality-owned parameters, so the modulation always applies.

Under DDP (several processes) the scores are summed over ranks before the ratio, so k_u is the
global batch's and every rank scales alike; the noise comes from a generator every rank seeds
alike, so the gradients stay identical across ranks.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pdmp_cli.errors import PdmpError
from pdmp_cli import distributed  # no-ops with one process
from pdmp_cli.methods import Method, register_method


def ogm_coefficients(
    branch_logits: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float, reduce=None
) -> dict[str, torch.Tensor]:
    """k_u for the two modalities (0-dim tensors; no device sync).

    ``reduce``: an in-place sum over processes of the (2,) score tensor (DDP), or None.
    """
    a, v = list(branch_logits)
    scores = torch.stack(
        [torch.softmax(s.detach().float(), dim=1).gather(1, labels[:, None]).sum() for s in branch_logits.values()]
    )
    if reduce is not None:
        reduce(scores)
    score = dict(zip(branch_logits, scores))
    ratio_a = score[a] / score[v]
    ratio_v = 1.0 / ratio_a
    one = torch.ones_like(ratio_a)
    # the reference's test (main.py::train_epoch): ``if ratio_v > 1`` damps v, else a, so a tie damps a
    v_dominates = score[v] / score[a] > 1
    k_a = torch.where(v_dominates, one, 1 - torch.tanh(alpha * torch.relu(ratio_a)))
    k_v = torch.where(v_dominates, 1 - torch.tanh(alpha * torch.relu(ratio_v)), one)
    return {a: k_a, v: k_v}


def conv_kernels(encoder: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in encoder.parameters() if p.dim() > 2]


@torch.no_grad()
def modulate_(kernels: dict, coeffs: dict[str, torch.Tensor], noise: bool = True, generator=None) -> None:
    """g <- k_u * g (+ N(0, std(g) + 1e-8)) on each modality's convolution kernels, in place.

    ``kernels``: modality -> its kernels (a list of parameters) or a module (its >2-D parameters).
    The noise is drawn from ``generator`` when given, else from the global RNG.
    """
    for m, ks in kernels.items():
        for p in conv_kernels(ks) if isinstance(ks, torch.nn.Module) else ks:
            if p.grad is None:
                continue
            std = p.grad.std() + 1e-8  # of the unmodulated gradient (reference code)
            p.grad.mul_(coeffs[m])
            if noise:
                if generator is None:
                    p.grad.add_(torch.randn_like(p.grad) * std)
                else:
                    z = torch.randn(p.grad.shape, generator=generator, device=p.grad.device, dtype=p.grad.dtype)
                    p.grad.add_(z * std)


class OGMGEArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        0.8, gt=0, description="alpha of k = 1 - tanh(alpha * rho); reference README: 0.8 CREMA-D, 0.1 VGGSound",
        json_schema_extra={"tune": [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]},  # pdmp tune: six values, as many as γp gets
    )
    start: int = Field(0, ge=0, description="first epoch of the modulation window (0-based)")
    end: int = Field(51, ge=1, description="epoch the window ends (0-based, exclusive; reference: epochs 0-50 inclusive)")

    @model_validator(mode="after")
    def _window(self):
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be > start ({self.start})")
        return self


@register_method("ogm-ge")
class OGMGE(Method):
    Args = OGMGEArgs
    needs_branch_logits = True
    max_modalities = 2
    max_modalities_reason = "its coefficient is the ratio of two branches' scores (the reference has no N-modality form)"
    table_order = 20  # Table I: after G-Blending
    in_paper_table = True

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        self.kernels = {m: [p for p in ps if p.dim() > 2] for m, ps in model.modality_parameters().items()}
        for m, kernels in self.kernels.items():
            if not kernels:
                raise PdmpError(
                    f"ogm-ge modulates convolution kernels, and the {m} encoder has none; "
                    "use a convolutional --encoder (resnet18, small)",
                    exit_code=2,
                )
        self.alpha = self.args.alpha
        self.window = (self.args.start, self.args.end)

    def describe(self) -> str:
        s, e = self.window
        return f"OGM-GE, alpha {self.alpha:g}, modulation in epochs [{s}, {e}) (0-based), Gaussian noise (GE)"

    def after_backward(self, out, labels, epoch):
        start, end = self.window
        if not (start <= epoch < end):
            return self.gamma
        coeffs = ogm_coefficients(out.branch_logits, labels, self.alpha, reduce=distributed.all_reduce_)
        modulate_(self.kernels, coeffs, noise=True, generator=distributed.shared_generator(labels.device))
        return coeffs
