"""The audio pipeline: waveform -> spectrogram, shared by the synthetic and real datasets.

Forms:
  ``log-stft``  log(|STFT| + 1e-7), the OGM-GE CREMA-D convention (n_fft 512, hop 353 at
                22,050 Hz gives 257 x 188 for a 3 s clip); computed with torchaudio's
                Spectrogram (Hann window, centred, reflect padding), which matches
                librosa.stft with pad_mode="reflect" (its default before 0.10, the peers' setting).
  ``fbank``     Kaldi log-mel filterbank (torchaudio.compliance.kaldi), the KS convention:
                ``n_mels`` bins x ``frames`` frames (padded or cut).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class AudioPreprocessing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(22050, gt=0, description="resample to this rate (Hz)")
    clip_seconds: float = Field(3.0, gt=0, description="clip length: shorter clips are tiled, longer cut")
    form: Literal["log-stft", "fbank"] = "log-stft"
    n_fft: int = Field(512, gt=0)
    hop_length: int = Field(353, gt=0)
    n_mels: int = Field(128, gt=0, description="fbank bins")
    frames: int = Field(1024, gt=0, description="fbank frames (padded or cut)")
    clip_amplitude: float | None = Field(1.0, description="clip the waveform to +-this (OGM-GE); null: off")

    def fix_length(self, wave: np.ndarray) -> np.ndarray:
        """Tile a short waveform and cut a long one to exactly ``clip_seconds``."""
        n = int(round(self.sample_rate * self.clip_seconds))
        if len(wave) == 0:
            raise ValueError("empty waveform")
        if len(wave) < n:
            wave = np.tile(wave, int(np.ceil(n / len(wave))))
        wave = wave[:n]
        if self.clip_amplitude is not None:
            wave = np.clip(wave, -self.clip_amplitude, self.clip_amplitude)
        return wave.astype(np.float32)

    def output_shape(self) -> tuple[int, int, int]:
        """(channels, freq, time) of :func:`spectrogram`'s result."""
        if self.form == "fbank":
            return (1, self.n_mels, self.frames)
        n = int(round(self.sample_rate * self.clip_seconds))
        return (1, self.n_fft // 2 + 1, n // self.hop_length + 1)


def spectrogram(waves, cfg: AudioPreprocessing):
    """(N, samples) or (samples,) float waveforms of the right length -> (N, 1, F, T) / (1, F, T)."""
    import torch
    import torchaudio

    x = torch.as_tensor(np.asarray(waves), dtype=torch.float32)
    single = x.dim() == 1
    if single:
        x = x.unsqueeze(0)
    if cfg.form == "log-stft":
        spec = torchaudio.transforms.Spectrogram(n_fft=cfg.n_fft, hop_length=cfg.hop_length, power=1.0)(x)
        out = torch.log(spec + 1e-7).unsqueeze(1)  # (N, 1, F, T)
    else:
        feats = []
        for w in x:
            fb = torchaudio.compliance.kaldi.fbank(
                w.unsqueeze(0), sample_frequency=cfg.sample_rate, num_mel_bins=cfg.n_mels,
                htk_compat=True, use_energy=False, window_type="hanning", dither=0.0, frame_shift=10,
            )  # (frames, n_mels)
            fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, cfg.frames - fb.shape[0])))[: cfg.frames]
            feats.append(fb.t().unsqueeze(0))
        out = torch.stack(feats)  # (N, 1, n_mels, frames)
    return out[0] if single else out
