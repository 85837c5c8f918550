"""FiLM fusion (Perez et al., 2018), in the direction of OGM-GE's and PMR's reference code
(``models/fusion_modules.py::FiLM`` with ``x_film=True``, called as ``fusion_module(a, v)``):
the **first** modality x (audio on the audio-visual datasets) produces gamma and beta, which
scale and shift the features of the others, y = [z_2; ...; z_M]::

    gamma, beta = split(film(x)),   f = fc(gamma * y + beta)          (``film``)

``film-swap`` is the other direction (the reference's ``x_film=False``; pdmp's ``film`` before
issue 23): the others produce gamma and beta, which modulate the first,
``f = fc(gamma(y) * x + beta(y))``.

Not additively separable, so s_m comes from zeroing the other modalities (Fusion default).
"""

import torch
from torch import nn

from pdmp_cli.models.fusions import Fusion, register_fusion


class FiLMFusion(Fusion):
    """``first_films=True``: the first modality produces (gamma, beta) for the others (the
    reference); False: the others produce them for the first."""

    def __init__(self, dims: dict[str, int], num_classes: int, first_films: bool = True):
        super().__init__()
        self.modalities = list(dims)
        self.first_films = first_films
        first = dims[self.modalities[0]]
        rest = sum(dims[m] for m in self.modalities[1:])
        source, target = (first, rest) if first_films else (rest, first)
        self.film = nn.Linear(source, 2 * target)  # the reference's ``fc``: the (gamma, beta) generator
        self.fc = nn.Linear(target, num_classes)  # the reference's ``fc_out``

    def forward(self, feats):
        x = feats[self.modalities[0]]
        y = torch.cat([feats[m] for m in self.modalities[1:]], dim=1)
        source, target = (x, y) if self.first_films else (y, x)
        gamma, beta = self.film(source).chunk(2, dim=1)
        return self.fc(gamma * target + beta)


@register_fusion("film")
def build_film(dims, num_classes):
    return FiLMFusion(dims, num_classes, first_films=True)


@register_fusion("film-swap")
def build_film_swap(dims, num_classes):
    return FiLMFusion(dims, num_classes, first_films=False)
