"""Shared by the image kinds (``image``, ``frames``, ``flow``): decoding, resizing, augmentation.

Conventions (OGM-GE's code, which the paper follows): evaluation resizes to ``size`` x ``size``; training takes a
RandomResizedCrop(``size``) and a horizontal flip; ImageNet mean/std normalisation for RGB.
Decoded images are resized to ``cache_size`` (default ``size``) before caching, so the cache
holds small uint8 arrays; training crops are taken from that cached image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pdmp_cli.data.modalities import BadFile

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImagePreprocessing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(224, ge=8, description="output height = width")
    cache_size: int | None = Field(None, ge=8, description="decoded images are resized to this and cached (default: size)")
    channels: Literal[1, 3] = Field(3, description="3: RGB, 1: grayscale (depth, IR)")
    train_augment: bool = Field(True, description="RandomResizedCrop + horizontal flip at training time")
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="RandomResizedCrop area range")
    mean: list[float] | None = Field(None, description="per-channel mean (default ImageNet for RGB, 0.5 for grayscale)")
    std: list[float] | None = Field(None, description="per-channel std (default ImageNet for RGB, 0.25 for grayscale)")

    @model_validator(mode="after")
    def _norm(self):
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != self.norm_channels():
                raise ValueError(f"{name} needs {self.norm_channels()} values, got {len(v)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(self.crop_scale)}")
        return self

    def norm_channels(self) -> int:
        return self.channels

    def stored_size(self) -> int:
        return self.cache_size or self.size

    def mean_std(self) -> tuple[list[float], list[float]]:
        rgb = self.norm_channels() == 3
        mean = self.mean or (IMAGENET_MEAN if rgb else [0.5] * self.norm_channels())
        std = self.std or (IMAGENET_STD if rgb else [0.25] * self.norm_channels())
        return mean, std


def load_image(path: Path, channels: int, size: int) -> np.ndarray:
    """Decode fully (a truncated file fails here) -> uint8 (size, size, channels)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadFile(path, "missing")
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB" if channels == 3 else "L")
            im = im.resize((size, size), Image.BILINEAR)
    except UnidentifiedImageError:
        raise BadFile(path, "unreadable", "not an image PIL can identify") from None
    except OSError as e:
        problem = "truncated" if "truncated" in str(e).lower() else "unreadable"
        raise BadFile(path, problem, str(e)) from None
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr  # (H, W, C)


def list_images(folder: Path, pattern: str | None = None) -> list[Path]:
    """Image files of a folder, in natural order (``2.jpg`` before ``10.jpg``)."""
    from pdmp_cli.data.modalities import natural_key

    if not folder.is_dir():
        raise BadFile(folder, "missing")
    files = folder.glob(pattern) if pattern else (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted((p for p in files if p.is_file()), key=natural_key)


def augment_and_normalise(x, prep: ImagePreprocessing, train: bool, flip_fn=None):
    """``x``: float tensor (..., C, H, W) in [0, 1]. One crop/flip for the whole clip (all frames)."""
    import torch
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms import functional as F

    size = [prep.size, prep.size]
    if train and prep.train_augment:
        i, j, h, w = RandomResizedCrop.get_params(x, scale=list(prep.crop_scale), ratio=[3 / 4, 4 / 3])
        x = F.resized_crop(x, i, j, h, w, size, antialias=True)
        if torch.rand(()) < 0.5:
            x = flip_fn(x) if flip_fn else x.flip(-1)
    elif x.shape[-2:] != tuple(size):
        x = F.resize(x, size, antialias=True)
    mean, std = prep.mean_std()
    mean = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def pick_frames(n: int, t: int, train: bool) -> list[int]:
    """``t`` sorted indices into ``n`` frames: the centre of each of ``t`` equal segments at
    evaluation; a random frame of each segment at training (TSN sampling). Repeats when n < t."""
    import torch

    out = []
    for k in range(t):
        lo, hi = (k * n) // t, ((k + 1) * n) // t
        if hi <= lo:  # fewer frames than segments
            out.append(min(lo, n - 1))
        elif train:
            out.append(lo + int(torch.randint(hi - lo, ())))
        else:
            out.append(lo + (hi - lo) // 2)
    return out
