"""The multimodal classifier: one encoder per modality, a fusion head (BRIEF.md, Eq. 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pdmp_cli.models.encoders import build_encoder
from pdmp_cli.models.fusions import Fusion, build_fusion


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, K) fused logits
    branch_logits: dict[str, torch.Tensor]  # modality -> (B, K): s_m
    features: dict[str, torch.Tensor]  # modality -> (B, D_m)


class MultimodalModel(nn.Module):
    """``encoders`` (a ModuleDict keyed by modality) followed by ``fusion``.

    PDMP scales the gradients of ``model.encoders[m]`` only; the fusion (and its head) is
    left alone, which is what separates it from a larger learning rate (paper, Discussion).
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: Fusion):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Modality -> the parameters that belong to it alone (its encoder); the fusion head is shared.

        The one notion of "modality-owned" that PDMP and the baselines scale (see MODEL_API in the
        README, "Add PDMP to your own model"): disjoint lists, in the model's modality order.
        """
        return {m: list(enc.parameters()) for m, enc in self.encoders.items()}

    def forward(self, inputs: dict[str, torch.Tensor], with_branches: bool = True) -> ModelOutput:
        feats = {m: enc(inputs[m]) for m, enc in self.encoders.items()}
        logits = self.fusion(feats)
        branches = self.fusion.branch_logits(feats) if with_branches else {}
        return ModelOutput(logits=logits, branch_logits=branches, features=feats)


class UnimodalModel(nn.Module):
    """One encoder and a linear head: the models of the analysis stage (Alg. 1, stage 1)."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_multimodal(encoder: str, fusion: str, in_channels: dict[str, int], num_classes: int) -> MultimodalModel:
    encoders = {m: build_encoder(encoder, c) for m, c in in_channels.items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    return MultimodalModel(encoders, build_fusion(fusion, dims, num_classes))


def build_unimodal(encoder: str, in_channels: int, num_classes: int) -> UnimodalModel:
    return UnimodalModel(build_encoder(encoder, in_channels), num_classes)
