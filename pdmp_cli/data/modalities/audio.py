"""``audio``: one audio file per sample (wav, flac, ogg, mp3; other containers through PyAV)
-> mono -> resampled to ``sample_rate`` -> tiled/cut to ``clip_seconds`` -> spectrogram.

The spectrogram is :func:`pdmp_cli.data.audio.spectrogram`, the same pipeline as the synthetic
data. With the defaults (22,050 Hz, 3 s, n_fft 512, hop 353, ``log-stft``) a clip gives
1 x 257 x 188 (OGM-GE's CREMA-D convention); ``form = "fbank"`` gives Kaldi fbank
``n_mels`` x ``frames`` (the Kinetics-Sounds convention).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from pdmp_cli.data.audio import AudioPreprocessing, spectrogram
from pdmp_cli.data.modalities import BadFile, Modality, register_modality


def wav_truncated(path: Path) -> str | None:
    """A RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds -> a reason.

    libsndfile quietly reads what is there, so a cut-off download would go unnoticed.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not plain RIFF (RF64, ...): let the decoder judge
        pos = 12
        while True:
            hdr = f.read(8)
            if len(hdr) < 8:
                return "no data chunk before the end of the file"
            cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            pos += 8
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return None
                if pos + n > size:
                    return f"data chunk declares {n} bytes, file holds {size - pos}"
                return None
            pos += n + (n & 1)
            f.seek(pos)


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    """Any container FFmpeg reads (m4a, aac, mp4, ...): first audio stream, mono float32."""
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise BadFile(path, "unreadable", "format needs PyAV (pip install av)") from None
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise BadFile(path, "unreadable", "no audio stream")
            stream = c.streams.audio[0]
            rate = stream.rate
            res = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in c.decode(stream):
                chunks += [f.to_ndarray().reshape(-1) for f in res.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    except BadFile:
        raise
    except Exception as e:  # av.error.* and friends: the file cannot be decoded
        raise BadFile(path, "unreadable", str(e)) from None
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, sample rate). Raises :class:`BadFile`."""
    import soundfile as sf

    if not path.is_file():
        raise BadFile(path, "missing")
    if path.suffix.lower() in (".wav", ".wave"):
        why = wav_truncated(path)
        if why:
            raise BadFile(path, "truncated", why)
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
        wave = wave.mean(axis=1)
    except sf.LibsndfileError as e:
        if "Format not recognised" in str(e) and path.suffix.lower() not in (".wav", ".flac", ".ogg"):
            wave, sr = _read_av(path)
        else:
            raise BadFile(path, "unreadable", str(e).split(": ", 1)[-1]) from None
    except Exception as e:
        raise BadFile(path, "unreadable", str(e)) from None
    if len(wave) == 0:
        raise BadFile(path, "unreadable", "no samples")
    if not np.isfinite(wave).all():  # a float wav can hold NaN/inf; resampling would fail on it
        raise BadFile(path, "non-finite", f"{int((~np.isfinite(wave)).sum())} of {len(wave)} samples are NaN or inf")
    return wave, int(sr)


@register_modality("audio")
class AudioModality(Modality):
    kind = "audio"
    Preprocessing = AudioPreprocessing
    VERSION = 1

    def channels(self, example: Path | None = None) -> int:
        return 1

    def output_shape(self) -> tuple[int, ...]:
        return self.prep.output_shape()

    def waveform(self, path: Path) -> np.ndarray:
        """Decoded, mono, resampled and length-fixed waveform (float32)."""
        import librosa

        wave, sr = read_audio(path)
        if sr != self.prep.sample_rate:
            wave = librosa.resample(wave, orig_sr=sr, target_sr=self.prep.sample_rate)  # soxr_hq, as librosa.load
        return self.prep.fix_length(wave)

    def decode(self, path: Path) -> np.ndarray:
        return spectrogram(self.waveform(path), self.prep).numpy()  # (1, F, T) float32

    def finish(self, decoded: np.ndarray, train: bool):
        import torch

        return torch.from_numpy(np.ascontiguousarray(decoded))
