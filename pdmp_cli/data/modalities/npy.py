"""``npy``: a precomputed array per sample (``features/<id>.npy``), used as it is.

Arrays are (C, H, W) or (C, T, H, W); a 2-D array (H, W) gets a channel axis. ``channels``
(if set) is checked against the files; otherwise it is read from the first training sample.
Not cached: reading an .npy is as cheap as reading the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pdmp_cli.data.modalities import BadFile, Modality, register_modality


class NpyPreprocessing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: int | None = Field(None, gt=0, description="expected channel count (first axis)")


@register_modality("npy")
class NpyModality(Modality):
    kind = "npy"
    Preprocessing = NpyPreprocessing
    cacheable = False

    def channels(self, example: Path | None = None) -> int:
        if self.prep.channels is not None:
            return self.prep.channels
        if example is None:
            raise ValueError("npy modality: set preprocessing.channels or give an example file")
        return int(self.decode(example).shape[0])

    def output_shape(self) -> tuple[int, ...]:
        raise ValueError("npy arrays keep the shape they were saved with")

    def decode(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise BadFile(path, "missing")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            short = isinstance(e, EOFError) or "could only read" in str(e) or "not fully written" in str(e)
            problem = "truncated" if short else "unreadable"
            raise BadFile(path, problem, str(e)) from None
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim not in (3, 4):
            raise BadFile(path, "unreadable", f"expected a (C, H, W) or (C, T, H, W) array, got shape {arr.shape}")
        if self.prep.channels is not None and arr.shape[0] != self.prep.channels:
            raise BadFile(path, "unreadable", f"{arr.shape[0]} channels, the manifest says {self.prep.channels}")
        return arr.astype(np.float32, copy=False)

    def finish(self, decoded: np.ndarray, train: bool):
        import torch

        return torch.from_numpy(np.ascontiguousarray(decoded))
