"""Gated fusion: f = fc_out(sigmoid(fc_x(x)) * fc_y(y)), the gate computed from the first
modality x, the gated value from the others y = [z_2; ...; z_M], as OGM-GE's and PMR's reference
code (``models/fusion_modules.py::GatedFusion``, ``x_gate=True``, called as ``fusion_module(a, v)``:
audio gates visual), with its hidden size 512 (pdmp used 256 before issue 23).

Not additively separable, so s_m comes from zeroing the other modalities (Fusion default).
"""

import torch
from torch import nn

from pdmp_cli.models.fusions import Fusion, register_fusion


class GatedFusion(Fusion):
    def __init__(self, dims: dict[str, int], num_classes: int, hidden: int = 512):
        super().__init__()
        self.modalities = list(dims)
        self.fc_x = nn.Linear(dims[self.modalities[0]], hidden)
        self.fc_y = nn.Linear(sum(dims[m] for m in self.modalities[1:]), hidden)
        self.fc_out = nn.Linear(hidden, num_classes)

    def forward(self, feats):
        x = feats[self.modalities[0]]
        y = torch.cat([feats[m] for m in self.modalities[1:]], dim=1)
        return self.fc_out(torch.sigmoid(self.fc_x(x)) * self.fc_y(y))


@register_fusion("gated")
def build_gated(dims, num_classes):
    return GatedFusion(dims, num_classes)
