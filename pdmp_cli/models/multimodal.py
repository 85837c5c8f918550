"""The multimodal classifiers: one encoder per modality and a fusion head (late fusion, the paper's
Eq. 2), or a model that fuses inside its encoders (:class:`~pdmp_cli.models.base.MaskedFusionModel`: ``se``, ``mmformer``).

The model interface every method and the training loop rely on (docs/training.md, "Add PDMP to your own
model")::

    model.modalities                 -> list[str], the dataset's modality order
    model.modality_parameters()      -> {m: [nn.Parameter]}: the parameters that belong to m alone;
                                        disjoint; shared parts (heads, squeeze layers, cross-modal
                                        transformers) are in none and are never scaled
    model(inputs, with_branches)     -> ModelOutput(logits, branch_logits, features)
"""

from __future__ import annotations

import torch
from torch import nn

from pdmp_cli.models.base import ModelOutput
from pdmp_cli.models.encoders import build_encoder
from pdmp_cli.models.fusions import FUSIONS, Fusion, build_fusion, builds_model


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
        docs/training.md, "Add PDMP to your own model"): disjoint lists, in the model's modality order.
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


def build_multimodal(encoder: str, fusion: str, in_channels: dict[str, int], num_classes: int) -> nn.Module:
    """The model of ``--fusion``: encoders + a late-fusion head, or an intermediate-fusion model."""
    if builds_model(fusion):
        if len(in_channels) < 2:
            raise ValueError(f"a fusion needs at least two modalities, got {list(in_channels)}")
        return FUSIONS.get(fusion)(encoder=encoder, in_channels=dict(in_channels), num_classes=num_classes)
    encoders = {m: build_encoder(encoder, c) for m, c in in_channels.items()}
    dims = {m: e.out_dim for m, e in encoders.items()}
    return MultimodalModel(encoders, build_fusion(fusion, dims, num_classes))


def build_unimodal(encoder: str, in_channels: int, num_classes: int) -> UnimodalModel:
    return UnimodalModel(build_encoder(encoder, in_channels), num_classes)
