"""Shared wrapper: fold a multi-frame input (B, C, T, H, W) into B*T frames, average over T."""

import torch
from torch import nn


class FrameFolding(nn.Module):
    """Runs ``backbone`` on every frame of a clip and averages the features over time.

    4-D inputs (B, C, H, W) pass straight through, so one encoder serves spectrograms,
    single images and frame stacks (the peer codebases' ResNet-18 convention).
    """

    def __init__(self, backbone: nn.Module, out_dim: int):
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.backbone(x)  # (B, D)
        if x.dim() != 5:
            raise ValueError(f"encoder expects (B,C,H,W) or (B,C,T,H,W), got shape {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B*T, C, H, W)
        feats = self.backbone(frames)  # (B*T, D)
        return feats.view(b, t, -1).mean(dim=1)  # (B, D)
