"""Encoders, registered by name. Adding one is adding one file in this folder.

An encoder builder takes ``in_channels`` and returns an ``nn.Module`` with an ``out_dim``
attribute that maps (B, C, H, W) -- or (B, C, T, H, W) for multi-frame inputs -- to (B, out_dim).
To serve the fusions inside the encoders (``se``, ``mmformer``) it also has ``stages()`` returning
its :class:`~pdmp_cli.models.encoders._frames.Stages` (stem, conv blocks, head); without it those
fusions refuse the encoder with one line.
"""

import importlib
import pkgutil

from pdmp_cli.registry import Registry

ENCODERS: Registry = Registry("encoder")
register_encoder = ENCODERS.register


def build_encoder(name: str, in_channels: int):
    return ENCODERS.get(name)(in_channels=in_channels)


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
