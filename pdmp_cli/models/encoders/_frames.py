"""Shared by the encoders: fold a multi-frame input (B, C, T, H, W) into B*T frames, average over T;
and :class:`Stages`, how an encoder exposes its convolutional stages to intermediate fusions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def fold_frames(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, C, H, W) -> itself and T = 1; (B, C, T, H, W) -> its B*T frames (B*T, C, H, W) and T."""
    if x.dim() == 4:
        return x, 1
    if x.dim() != 5:
        raise ValueError(f"encoder expects (B,C,H,W) or (B,C,T,H,W), got shape {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), t


@dataclass(frozen=True)
class Stages:
    """An encoder seen as ``head(blocks[-1](...blocks[0](stem(x))))``, for fusions between stages
    (``se``: squeeze-excitation after blocks; ``mmformer``: tokens from the last block's map).

    The modules are the encoder's own (no copies): ``stem`` and ``head`` may be ``nn.Identity``.
    ``channels[i]``: the output channels of ``blocks[i]``.
    """

    stem: nn.Module
    blocks: tuple[nn.Module, ...]
    channels: tuple[int, ...]
    head: nn.Module  # (N, C, H, W) -> (N, out_dim)


class FrameFolding(nn.Module):
    """Runs ``backbone`` on every frame of a clip and averages the features over time.

    4-D inputs (B, C, H, W) pass straight through, so one encoder serves spectrograms,
    single images and frame stacks (the peer codebases' ResNet-18 convention).
    """

    def __init__(self, backbone: nn.Module, out_dim: int):
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim

    def stages(self) -> Stages | None:
        """The backbone's stages, or None when it has none to offer (then ``se``/``mmformer`` refuse)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, t = fold_frames(x)
        feats = self.backbone(frames)  # (B*T, D)
        return feats if x.dim() == 4 else feats.view(-1, t, feats.shape[-1]).mean(dim=1)  # (B, D)
