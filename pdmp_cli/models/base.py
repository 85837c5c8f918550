"""What every multimodal model returns, and the base of models that fuse inside their encoders
(kept apart from :mod:`pdmp_cli.models.multimodal` so fusion files can import it)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Collection

import torch
from torch import nn


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, K) fused logits
    branch_logits: dict[str, torch.Tensor]  # modality -> (B, K): s_m
    features: dict[str, torch.Tensor]  # modality -> (B, D_m)


@contextlib.contextmanager
def batchnorm_stats_frozen(model: nn.Module):
    """BatchNorm layers in training mode use batch statistics but leave their running statistics
    (and counters) alone, so extra forward passes (masked branches) do not change the model."""
    bns = [b for b in model.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm) and b.track_running_stats]
    for b in bns:
        b.track_running_stats = False
    try:
        yield
    finally:
        for b in bns:
            b.track_running_stats = True


class MaskedFusionModel(nn.Module):
    """A model that fuses inside its encoders, so its logits do not split per modality.

    Subclasses implement :meth:`masked`: the forward pass in which only the modalities in ``keep``
    are present and every other modality's stream is replaced by zeros, as mmFormer's modality
    masking does (its ``MaskModal`` zeroes a missing modality's features); the other inputs are
    never read. The branch logits s_m (Eq. 5, branch accuracy, OGM-GE) are ``masked(inputs, [m])``;
    the fused logits are ``masked(inputs, all modalities)``, the same code path. Masked passes in
    training mode use batch statistics but never update BatchNorm's running statistics.
    """

    modalities: list[str]

    def masked(self, inputs: dict[str, torch.Tensor], keep: Collection[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits (B, K), features {m: (B, D)} of the kept modalities) with only ``keep`` present."""
        raise NotImplementedError

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor], with_branches: bool = True) -> ModelOutput:
        logits, feats = self.masked(inputs, self.modalities)
        branches = {}
        if with_branches:
            with batchnorm_stats_frozen(self) if self.training else contextlib.nullcontext():
                branches = {m: self.masked(inputs, (m,))[0] for m in self.modalities}
        return ModelOutput(logits=logits, branch_logits=branches, features=feats)
