"""FiLM fusion: the first modality's features are scaled and shifted by (gamma, beta)
computed from the others: f = fc(gamma(y) * x + beta(y)), y = [z_2; ...; z_M].

Not additively separable, so s_m comes from zeroing the other modalities (Fusion default).
"""

import torch
from torch import nn

from pdmp_cli.models.fusions import Fusion, register_fusion


class FiLMFusion(Fusion):
    def __init__(self, dims: dict[str, int], num_classes: int):
        super().__init__()
        self.modalities = list(dims)
        x_dim = dims[self.modalities[0]]
        y_dim = sum(dims[m] for m in self.modalities[1:])
        self.film = nn.Linear(y_dim, 2 * x_dim)
        self.fc = nn.Linear(x_dim, num_classes)

    def forward(self, feats):
        x = feats[self.modalities[0]]
        y = torch.cat([feats[m] for m in self.modalities[1:]], dim=1)
        gamma, beta = self.film(y).chunk(2, dim=1)
        return self.fc(gamma * x + beta)


@register_fusion("film")
def build_film(dims, num_classes):
    return FiLMFusion(dims, num_classes)
