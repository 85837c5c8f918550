"""Training augmentation of the packed store (:mod:`pdmp_cli.data.packed`): parameters drawn as
uniforms, applied per sample on the CPU or batched on the device.

The randomness of a sample is a row of uniforms in [0, 1), drawn in the main process from the
epoch's generator (so a batch does not depend on the number of DataLoader workers, and a
resumed epoch replays it). This module turns those uniforms into parameters and applies them:

* :func:`frame_picks` -- TSN frame choice (a random frame of each of T segments; the centre at
  evaluation), as :func:`pdmp_cli.data.modalities._image.pick_frames`.
* :func:`crop_boxes` -- RandomResizedCrop boxes ``(i, j, h, w)`` and a flip bit, vectorised:
  torchvision's ``RandomResizedCrop.get_params`` (10 tries of area and log-aspect, the first that
  fits, else the central crop of the allowed ratio), fed by the given uniforms.
* :func:`crop_cpu` -- the CPU path: torchvision's uint8 ``resized_crop`` per sample (its native
  uint8 kernel is the fastest CPU variant measured, faster than a batched ``grid_sample``), then
  the flip.
* :func:`crop_batched` -- the device path: one ``affine_grid`` + ``grid_sample`` for the whole
  batch with a per-sample affine (the flip folded in), as used on CUDA after the host-to-device
  copy.

The two paths agree inside the crop; they differ at the crop's border: ``grid_sample`` blends
the outermost output pixels with the input pixel just outside the box (``padding_mode="border"``
only clamps at the image edge), while torchvision's resize clamps at the box edge. Output pixels
whose source position lies within half an input pixel of the box edge are that border
(:func:`interior_mask`); inside it the paths differ by the uint8 rounding of the CPU path
(at most 0.5/255 plus the kernel's fixed-point error; ``tests/test_packed.py`` pins it).
"""

from __future__ import annotations

import numpy as np
import torch

CROP_TRIES = 10  # torchvision RandomResizedCrop.get_params
RATIO = (3 / 4, 4 / 3)
CROP_UNIFORMS = 2 * CROP_TRIES + 3  # area, log-aspect per try; row, column; flip


def frame_picks(counts: np.ndarray, t: int, u: np.ndarray | None) -> np.ndarray:
    """(B, t) frame indices into clips of ``counts`` frames: with uniforms ``u`` (B, t) a random frame
    of each of t equal segments (training), without them the segment's centre (evaluation).
    A clip with fewer frames than segments repeats frames, as ``pick_frames`` does."""
    n = np.asarray(counts, dtype=np.int64)[:, None]
    k = np.arange(t, dtype=np.int64)[None, :]
    lo, hi = (k * n) // t, ((k + 1) * n) // t
    width = hi - lo
    if u is None:
        off = width // 2
    else:
        off = np.minimum(np.floor(np.asarray(u, dtype=np.float64) * width).astype(np.int64), np.maximum(width - 1, 0))
    return np.where(width > 0, lo + off, np.minimum(lo, n - 1))


def crop_boxes(u: np.ndarray, height: int, width: int, scale=(0.08, 1.0), ratio=RATIO) -> np.ndarray:
    """Uniforms (B, :data:`CROP_UNIFORMS`) -> int64 (B, 5): ``i, j, h, w, flip`` per sample.

    torchvision's ``RandomResizedCrop.get_params`` with its 10 tries vectorised (each try's area
    and log-aspect from two uniforms; the first try that fits wins), then the box position from two
    more uniforms and the flip from the last (``< 0.5``, as ``torch.rand(()) < 0.5``)."""
    u = np.asarray(u, dtype=np.float64)
    b = len(u)
    area = height * width
    lr = np.log(np.asarray(ratio, dtype=np.float64))
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, 0:2 * CROP_TRIES:2])
    aspect = np.exp(lr[0] + (lr[1] - lr[0]) * u[:, 1:2 * CROP_TRIES:2])
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.argmax(axis=1)
    rows = np.arange(b)
    any_ok = ok.any(axis=1)
    # the fallback: the central crop of the allowed ratio (the whole image when it is square)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = np.where(any_ok, w[rows, first], fw).astype(np.int64)
    h = np.where(any_ok, h[rows, first], fh).astype(np.int64)
    i = np.floor(u[:, 2 * CROP_TRIES] * (height - h + 1)).astype(np.int64)
    j = np.floor(u[:, 2 * CROP_TRIES + 1] * (width - w + 1)).astype(np.int64)
    i = np.where(any_ok, np.minimum(i, height - h), (height - fh) // 2)
    j = np.where(any_ok, np.minimum(j, width - w), (width - fw) // 2)
    flip = (u[:, 2 * CROP_TRIES + 2] < 0.5).astype(np.int64)
    return np.stack([i, j, h, w, flip], axis=1)


def crop_cpu(x: torch.Tensor, boxes, size: int, flow: bool = False) -> torch.Tensor:
    """The CPU path. ``x``: uint8 (B, T, C, H, W); ``boxes``: (B, 5) from :func:`crop_boxes`.
    -> uint8 (B, T, C, size, size): each sample's box resized (torchvision, uint8 kernel, antialias
    as today's loader) and flipped; every frame of a clip shares its sample's box and flip. A flipped
    ``flow`` sample also inverts its x channels (v -> 255 - v: the motion changes sign)."""
    from torchvision.transforms.v2 import functional as F

    out = torch.empty(x.shape[:3] + (size, size), dtype=torch.uint8)
    for k, (i, j, h, w, flip) in enumerate(np.asarray(boxes).tolist()):
        y = F.resized_crop(x[k], i, j, h, w, [size, size], antialias=True)
        if flip:
            y = y.flip(-1)
            if flow:
                y[:, 0::2] = 255 - y[:, 0::2]
        out[k] = y
    return out


def crop_batched(x: torch.Tensor, boxes: torch.Tensor, size: int, flow: bool = False) -> torch.Tensor:
    """The device path: ``x`` uint8 (B, T, C, H, W) on any device, ``boxes`` (B, 5) -> float32
    (B, T, C, size, size) in [0, 255], one ``affine_grid`` + ``grid_sample`` (bilinear,
    ``align_corners=False``, border padding) for the whole batch; the flip is folded into the
    affine, flow's x inversion applied after (sampling is linear, so it commutes)."""
    import torch.nn.functional as F

    b, t, c, height, width = x.shape
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    i, j, h, w, flip = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=x.device)
    sx = w / width
    theta[:, 0, 0] = torch.where(flip > 0, -sx, sx)
    theta[:, 0, 2] = (2 * j + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * i + h) / height - 1
    theta = theta.repeat_interleave(t, dim=0)
    grid = F.affine_grid(theta, [b * t, c, size, size], align_corners=False)
    out = F.grid_sample(x.reshape(b * t, c, height, width).float(), grid, mode="bilinear",
                        padding_mode="border", align_corners=False)
    out = out.view(b, t, c, size, size)
    if flow:
        fl = (flip > 0).view(b, 1, 1, 1, 1)
        out[:, :, 0::2] = torch.where(fl, 255 - out[:, :, 0::2], out[:, :, 0::2])
    return out


def interior_mask(boxes, size: int) -> np.ndarray:
    """bool (B, size, size): output pixels whose source position lies inside the box by at least
    half an input pixel on both axes, where the CPU and the batched paths must agree (see above)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    k = (np.arange(size) + 0.5)[None, :]

    def axis(extent):
        src = k * extent[:, None] / size - 0.5  # position in the box, input pixels (half-pixel centres)
        return (src >= 0) & (src <= extent[:, None] - 1)

    rows, cols = axis(boxes[:, 2]), axis(boxes[:, 3])
    return rows[:, :, None] & cols[:, None, :]


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or float in [0, 255], channels at dim -3 -> float32 ``(x/255 - mean) / std``."""
    c = x.shape[-3]
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    if mean_t.numel() == 1 and c > 1:  # flow: one value for every channel
        mean_t, std_t = mean_t.expand(c), std_t.expand(c)
    shape = (c, 1, 1)
    return (x.float() / 255 - mean_t.view(shape)) / std_t.view(shape)


def uniforms_needed(frames: int, crop: bool) -> int:
    """Uniforms per sample of one image modality: one per segment's frame choice, plus the crop's."""
    return frames + (CROP_UNIFORMS if crop else 0)
