"""Built-in synthetic audio-visual data: no download, deterministic per seed, cached.

Each clip's label c is carried by two cues:

* audio: a pure tone at ``250 + tone_spacing_hz * c`` Hz in white noise, as a waveform that
  goes through the same spectrogram pipeline as real audio. A tone is a bright row in the
  spectrogram: quick to learn. With probability ``1 - reliability`` the tone belongs to
  another class (uniformly drawn), which caps how far audio alone can go.
* visual: a 3-channel image of an oriented sinusoidal grating (orientation ``c * pi / K``,
  random phase and spatial frequency) at low ``contrast`` under strong pixel ``noise``:
  slower to learn. Corrupted the same way with its own ``reliability``.

* depth (optional third modality, ``[depth]``; preset ``synthetic-3``): a 1-channel image with a
  bright Gaussian blob at one of K positions on a circle (the class cue) under pixel noise.
  Its own ``reliability``; drawn after the other two, so two-modality presets are unchanged.

The corruptions are independent, so the modalities are complementary. The presets
(``data_manifests/synthetic*.toml``) fix these parameters; they mirror the paper's two
regimes and were never tuned against PDMP's results.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from pdmp_cli import __version__
from pdmp_cli.cache import arrays_from_bytes, arrays_to_bytes, note_foreign, open_cache, stable_hash
from pdmp_cli.data.audio import AudioPreprocessing, spectrogram
from pdmp_cli.data.base import DatasetBundle, ManifestBase, register_loader

GENERATOR_VERSION = 1  # bump when the generator's output changes


class AudioCue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reliability: float = Field(ge=0, le=1, description="P(tone matches the label)")
    tone_amplitude: float = Field(0.5, gt=0)
    noise_std: float = Field(0.5, ge=0)
    tone_spacing_hz: float = Field(312.5, gt=0)


class VisualCue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reliability: float = Field(ge=0, le=1, description="P(grating orientation matches the label)")
    image_size: int = Field(32, ge=8)
    contrast: float = Field(0.3, gt=0)
    noise_std: float = Field(1.0, ge=0)
    orientation_jitter: float = Field(0.15, ge=0, description="radians, uniform +-")


class DepthCue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reliability: float = Field(ge=0, le=1, description="P(blob position matches the label)")
    image_size: int = Field(16, ge=8)
    amplitude: float = Field(1.0, gt=0)
    blob_sigma: float = Field(2.0, gt=0, description="pixels")
    noise_std: float = Field(1.0, ge=0)


class SyntheticManifest(ManifestBase):
    classes: int = Field(6, ge=2)
    train_size: int = Field(1200, gt=0)
    test_size: int = Field(480, gt=0)
    seed: int = 0
    audio: AudioCue
    visual: VisualCue
    depth: DepthCue | None = None
    audio_preprocessing: AudioPreprocessing = AudioPreprocessing(
        sample_rate=4000, clip_seconds=0.5, n_fft=64, hop_length=64, clip_amplitude=None
    )

    @property
    def modalities(self) -> list[str]:
        """audio, visual, and depth when the preset has a ``[depth]`` section."""
        return ["audio", "visual"] + (["depth"] if self.depth is not None else [])


def _corrupt(labels: np.ndarray, reliability: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """The cue's class: the label with probability ``reliability``, else another class."""
    cue = labels.copy()
    flip = rng.random(len(labels)) >= reliability
    cue[flip] = (labels[flip] + rng.integers(1, k, flip.sum())) % k
    return cue


def generate(m: SyntheticManifest, n: int, split_seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([m.seed, split_seed])
    k = m.classes
    labels = np.arange(n) % k  # balanced classes
    rng.shuffle(labels)

    # audio: tone + noise, as waveforms
    pre = m.audio_preprocessing
    t = np.arange(int(round(pre.sample_rate * pre.clip_seconds))) / pre.sample_rate
    a_cue = _corrupt(labels, m.audio.reliability, k, rng)
    freqs = 250.0 + m.audio.tone_spacing_hz * a_cue
    if freqs.max() >= pre.sample_rate / 2:
        raise ValueError("tone frequencies exceed Nyquist: lower tone_spacing_hz or raise sample_rate")
    phase = rng.uniform(0, 2 * np.pi, n)
    waves = m.audio.tone_amplitude * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phase[:, None])
    waves += rng.normal(0, m.audio.noise_std, waves.shape)
    waves = np.stack([pre.fix_length(w) for w in waves])
    spec = spectrogram(waves, pre).numpy()  # (N, 1, F, T)

    # visual: oriented grating + noise
    s = m.visual.image_size
    v_cue = _corrupt(labels, m.visual.reliability, k, rng)
    theta = v_cue * np.pi / k + rng.uniform(-m.visual.orientation_jitter, m.visual.orientation_jitter, n)
    freq = rng.uniform(2.0, 4.0, n) / s * 2 * np.pi  # 2-4 cycles per image
    ph = rng.uniform(0, 2 * np.pi, n)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    grating = np.sin(freq[:, None, None] * proj + ph[:, None, None])  # (N, S, S)
    color = rng.uniform(0.5, 1.0, (n, 3))  # a random tint per image: orientation is the cue, not colour
    images = m.visual.contrast * grating[:, None] * color[:, :, None, None]
    images += rng.normal(0, m.visual.noise_std, images.shape)

    out = {"audio": spec.astype(np.float32), "visual": images.astype(np.float32), "label": labels.astype(np.int64)}
    if m.depth is not None:  # a blob at the cue's position on a circle, in noise
        d = m.depth.image_size
        d_cue = _corrupt(labels, m.depth.reliability, k, rng)
        angle = d_cue * 2 * np.pi / k
        cy, cx = d / 2 + d / 4 * np.sin(angle), d / 2 + d / 4 * np.cos(angle)
        yy, xx = np.mgrid[0:d, 0:d].astype(np.float64)
        blob = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / (2 * m.depth.blob_sigma**2))
        depth = m.depth.amplitude * blob[:, None] + rng.normal(0, m.depth.noise_std, (n, 1, d, d))
        out["depth"] = depth.astype(np.float32)
    return out


class TensorSplit(Dataset):
    def __init__(self, arrays: dict[str, np.ndarray], modalities: list[str]):
        self.x = {m: torch.from_numpy(arrays[m]) for m in modalities}
        self.y = torch.from_numpy(arrays["label"])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return {m: x[i] for m, x in self.x.items()}, int(self.y[i])


@register_loader("synthetic")
class SyntheticLoader:
    Manifest = SyntheticManifest

    @staticmethod
    def build(manifest: SyntheticManifest, data_root=None) -> DatasetBundle:
        params = manifest.model_dump(exclude={"name", "description", "defaults"})
        if params["depth"] is None:
            del params["depth"]  # two-modality presets keep their identity
        identity = stable_hash({"generator": GENERATOR_VERSION, **params})
        key = f"synthetic/{identity}"
        with open_cache("data") as cache:  # .npz bytes, no pickle (pdmp_cli.cache)
            raw = cache.get(key)
            flat = arrays_from_bytes(raw)
            names = ["audio", "visual", "label"] + (["depth"] if manifest.depth is not None else [])
            if flat is not None and all(f"{sp}/{n}" in flat for sp in ("train", "test") for n in names) and all(
                len(flat[f"{sp}/{n}"]) == len(flat[f"{sp}/label"]) for sp in ("train", "test") for n in names
            ):  # every array of ours, one row per sample: else a foreign entry, generated again
                arrays = {sp: {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(sp + "/")}
                          for sp in ("train", "test")}
            else:
                if raw is not None:
                    note_foreign("data")
                arrays = {
                    "train": generate(manifest, manifest.train_size, 0),
                    "test": generate(manifest, manifest.test_size, 1),
                }
                cache.set(key, arrays_to_bytes({f"{sp}/{k}": v for sp, a in arrays.items() for k, v in a.items()}))
        modalities = manifest.modalities
        return DatasetBundle(
            name=manifest.name,
            identity=identity,
            modalities=modalities,
            in_channels={m: {"audio": 1, "visual": 3, "depth": 1}[m] for m in modalities},
            class_names=[f"class{c}" for c in range(manifest.classes)],
            train=TensorSplit(arrays["train"], modalities),
            test=TensorSplit(arrays["test"], modalities),
            train_labels=arrays["train"]["label"].tolist(),
            defaults=manifest.defaults.as_overrides(),
        )


__all__ = ["SyntheticLoader", "generate", "__version__"]
