"""``image``: one image file per sample (``visual/<id>.png``; CEFA's RGB, depth and IR crops).

Output (C, H, W) with C = ``channels`` (3 RGB, 1 grayscale), H = W = ``size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pdmp_cli.data.modalities import Modality, register_modality
from pdmp_cli.data.modalities._image import ImagePreprocessing, augment_and_normalise, load_image


@register_modality("image")
class ImageModality(Modality):
    kind = "image"
    Preprocessing = ImagePreprocessing

    def channels(self, example: Path | None = None) -> int:
        return self.prep.channels

    def output_shape(self) -> tuple[int, ...]:
        return (self.prep.channels, self.prep.size, self.prep.size)

    def cache_params(self) -> dict:
        return {"channels": self.prep.channels, "size": self.prep.stored_size()}

    def decode(self, path: Path) -> np.ndarray:
        return load_image(path, self.prep.channels, self.prep.stored_size())  # (H, W, C) uint8

    def finish(self, decoded: np.ndarray, train: bool):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1).float() / 255  # (C, H, W)
        return augment_and_normalise(x, self.prep, train)
