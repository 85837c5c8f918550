"""``flow``: optical flow stored as x/y grayscale frame pairs, one folder per clip, as UCF101
two-stream pipelines (TSN's ``dense_flow``) lay it out: ``<clip>/flow_x_00001.jpg``,
``<clip>/flow_y_00001.jpg``, ... with 128 meaning zero motion. Layouts with separate x and y
trees (the two-stream ``tvl1_flow/u/<clip>/frame000001.jpg`` + ``tvl1_flow/v/<clip>/...``):
put ``{axis}`` in the manifest's path (``tvl1_flow/{axis}/{id}``); it becomes ``axes[0]`` for
the x frames and ``axes[1]`` for the y frames (default ``u``, ``v``), each globbed with its pattern.

``frames`` = T segments; from each, ``stack`` consecutive flow pairs are stacked into
2 x ``stack`` channels (x1, y1, x2, y2, ...): the segment's centre at evaluation, a random
start at training. A horizontal flip at training also inverts the x components. Output
(2·stack, T, H, W) when T > 1, (2·stack, H, W) when T = 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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


class FlowPreprocessing(ImagePreprocessing):
    channels: Literal[1] = Field(1, description="flow images are grayscale")
    frames: int = Field(1, ge=1, description="T segments per clip")
    stack: int = Field(5, ge=1, description="consecutive flow pairs stacked per segment")
    x_pattern: str = "flow_x_*.jpg"
    y_pattern: str = "flow_y_*.jpg"
    axes: tuple[str, str] = Field(("u", "v"), description="what {axis} in the path becomes for x, y")
    mean: list[float] | None = Field(None, description="one value for every channel (default 0.5)")
    std: list[float] | None = Field(None, description="one value for every channel (default 0.25)")

    def norm_channels(self) -> int:
        return 1  # one mean/std for all 2*stack channels, broadcast


def _flip_flow(x):
    """Horizontal flip of (…, 2L, H, W) flow in [0, 1]: mirror, and negate x motion (v -> 1 - v)."""
    x = x.flip(-1)
    x[..., 0::2, :, :] = 1 - x[..., 0::2, :, :]
    return x


@register_modality("flow")
class FlowModality(Modality):
    kind = "flow"
    Preprocessing = FlowPreprocessing

    def channels(self, example: Path | None = None) -> int:
        return 2 * self.prep.stack

    def output_shape(self) -> tuple[int, ...]:
        c, t, s = 2 * self.prep.stack, self.prep.frames, self.prep.size
        return (c, t, s, s) if t > 1 else (c, s, s)

    def cache_params(self) -> dict:
        p = self.prep
        return {"size": p.stored_size(), "x": p.x_pattern, "y": p.y_pattern, "axes": list(p.axes)}

    def _pairs(self, path: Path) -> tuple[list[Path], list[Path]]:
        xdir, ydir = (Path(str(path).replace("{axis}", a)) for a in self.prep.axes)
        xs, ys = list_images(xdir, self.prep.x_pattern), list_images(ydir, self.prep.y_pattern)
        if not xs and not ys:
            raise BadFile(path, "missing", f"no {self.prep.x_pattern} / {self.prep.y_pattern} files")
        if len(xs) != len(ys):
            raise BadFile(path, "truncated", f"{len(xs)} x-flow frames but {len(ys)} y-flow frames")
        return xs, ys

    def sources(self, path: Path) -> list[Path]:
        xs, ys = self._pairs(path)
        return xs + ys

    def decode(self, path: Path) -> np.ndarray:
        xs, ys = self._pairs(path)
        s = self.prep.stored_size()
        x = np.stack([load_image(f, 1, s)[:, :, 0] for f in xs])
        y = np.stack([load_image(f, 1, s)[:, :, 0] for f in ys])
        return np.stack([x, y], axis=1)  # (N, 2, H, W) uint8

    def finish(self, decoded: np.ndarray, train: bool):
        import torch

        n, L = len(decoded), self.prep.stack
        starts = pick_frames(max(n - L + 1, 1), self.prep.frames, train)
        idx = np.minimum(np.asarray(starts)[:, None] + np.arange(L)[None, :], n - 1)  # (T, L)
        arr = decoded[idx]  # (T, L, 2, H, W)
        t, _, _, h, w = arr.shape
        x = torch.from_numpy(np.ascontiguousarray(arr)).view(t, 2 * L, h, w).float() / 255  # (T, 2L, H, W)
        x = augment_and_normalise(x, self.prep, train, flip_fn=_flip_flow)
        x = x.permute(1, 0, 2, 3)  # (2L, T, H, W)
        return x[:, 0] if self.prep.frames == 1 else x
