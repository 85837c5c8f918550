"""Concatenation fusion (Eq. 2-4): f(x) = W [z_1; ...; z_M] + b = sum_m (W_m z_m + b / M)."""

import torch
from torch import nn

from pdmp_cli.models.fusions import Fusion, register_fusion


class ConcatFusion(Fusion):
    def __init__(self, dims: dict[str, int], num_classes: int):
        super().__init__()
        self.modalities = list(dims)
        self.dims = dict(dims)
        self.fc = nn.Linear(sum(dims.values()), num_classes)

    def forward(self, feats):
        return self.fc(torch.cat([feats[m] for m in self.modalities], dim=1))

    def branch_logits(self, feats):
        # Eq. 3-4: slice the head's weight per modality; the bias is shared equally (peer convention).
        out, start = {}, 0
        bias_share = self.fc.bias / len(self.modalities)
        for m in self.modalities:
            w_m = self.fc.weight[:, start : start + self.dims[m]]  # (K, D_m)
            out[m] = feats[m] @ w_m.t() + bias_share
            start += self.dims[m]
        return out


@register_fusion("concat")
def build_concat(dims, num_classes):
    return ConcatFusion(dims, num_classes)
