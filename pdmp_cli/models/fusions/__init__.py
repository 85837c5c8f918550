"""Fusions (the paper's Eq. 2-4), registered by name. Adding one is adding one file here.

Two kinds share the one registry (and the one ``--fusion`` flag):

* late fusions (``@register_fusion``): the builder takes ``dims`` (modality -> feature size, in
  the dataset's modality order) and ``num_classes`` and returns a :class:`Fusion`, the fused
  classifier head that :class:`~pdmp_cli.models.multimodal.MultimodalModel` puts after one
  encoder per modality;
* intermediate fusions (``@register_model_fusion``), which fuse *inside* the encoders and so
  cannot be a head after them: the builder takes ``encoder`` (a registry name), ``in_channels``
  (modality -> channels) and ``num_classes`` and returns the whole model, with the interface of
  :class:`~pdmp_cli.models.base.MaskedFusionModel` (``se``, ``mmformer``).

:func:`pdmp_cli.models.multimodal.build_multimodal` builds either.
"""

import importlib
import pkgutil

import torch
from torch import nn

from pdmp_cli.registry import Registry

FUSIONS: Registry = Registry("fusion")
register_fusion = FUSIONS.register


def register_model_fusion(name: str):
    """Register a builder ``(encoder, in_channels, num_classes) -> model`` (an intermediate fusion)."""

    def deco(builder):
        builder.builds_model = True
        return FUSIONS.register(name)(builder)

    return deco


def builds_model(name: str) -> bool:
    """Whether fusion ``name`` builds the whole model (intermediate) rather than a head (late)."""
    return getattr(FUSIONS.get(name), "builds_model", False)


def late_fusions() -> list[str]:
    return [n for n in FUSIONS.names() if not builds_model(n)]


class Fusion(nn.Module):
    """Maps per-modality features {m: (B, D_m)} to fused logits (B, K).

    ``branch_logits`` gives each modality's own logits s_m. The default zeroes every other
    modality's features (the general method for fusions that do not split additively);
    additively separable fusions (concat, sum) override it with their exact decomposition,
    for which sum_m s_m equals the fused logits.
    """

    modalities: list[str]  # subclasses set it; forward(feats) -> (B, K) fused logits

    def branch_logits(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.modalities:
            only_m = {k: (v if k == m else torch.zeros_like(v)) for k, v in feats.items()}
            out[m] = self(only_m)
        return out


def build_fusion(name: str, dims: dict[str, int], num_classes: int) -> Fusion:
    if len(dims) < 2:
        raise ValueError(f"a fusion needs at least two modalities, got {list(dims)}")
    if builds_model(name):
        raise ValueError(f"fusion {name!r} fuses inside the encoders, so it is not a head: use build_multimodal")
    return FUSIONS.get(name)(dims=dims, num_classes=num_classes)


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
