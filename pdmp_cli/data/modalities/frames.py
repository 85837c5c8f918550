"""``frames``: a folder of frames per clip (``Image-01-FPS/<clip>/*.jpg``), as in the
CREMA-D / AVE / Kinetics-Sounds pipelines.

Frames are taken in natural sorted order; ``frames`` = T of them are used: the centre of each
of T equal segments at evaluation, a random frame of each segment at training. The same
crop/flip applies to all T frames of a clip. Output (C, T, H, W) when T > 1 (the encoders fold
T into the batch and average), (C, H, W) when T = 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from pdmp_cli.data.modalities import BadFile, Modality, register_modality
from pdmp_cli.data.modalities._image import (
    ImagePreprocessing,
    augment_and_normalise,
    list_images,
    load_image,
    pick_frames,
)


class FramesPreprocessing(ImagePreprocessing):
    frames: int = Field(1, ge=1, description="T frames per clip")
    pattern: str | None = Field(None, description="glob of the frame files (default: every image in the folder)")


@register_modality("frames")
class FramesModality(Modality):
    kind = "frames"
    Preprocessing = FramesPreprocessing

    def channels(self, example: Path | None = None) -> int:
        return self.prep.channels

    def output_shape(self) -> tuple[int, ...]:
        c, t, s = self.prep.channels, self.prep.frames, self.prep.size
        return (c, t, s, s) if t > 1 else (c, s, s)

    def cache_params(self) -> dict:
        return {"channels": self.prep.channels, "size": self.prep.stored_size(), "pattern": self.prep.pattern}

    def sources(self, path: Path) -> list[Path]:
        files = list_images(path, self.prep.pattern)
        if not files:
            raise BadFile(path, "missing", "no frames in the folder")
        return files

    def decode(self, path: Path) -> np.ndarray:
        # every frame of the clip (training picks different ones each epoch): (N, H, W, C) uint8
        return np.stack([load_image(f, self.prep.channels, self.prep.stored_size()) for f in self.sources(path)])

    def finish(self, decoded: np.ndarray, train: bool):
        import torch

        idx = pick_frames(len(decoded), self.prep.frames, train)
        x = torch.from_numpy(np.ascontiguousarray(decoded[idx])).permute(0, 3, 1, 2).float() / 255  # (T, C, H, W)
        x = augment_and_normalise(x, self.prep, train)
        x = x.permute(1, 0, 2, 3)  # (C, T, H, W)
        return x[:, 0] if self.prep.frames == 1 else x
