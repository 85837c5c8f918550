"""The built-in synthetic data: shapes, determinism, caching, the shared audio pipeline."""

import numpy as np
import pytest
import torch

from pdmp_cli.data import load_dataset, load_manifest
from pdmp_cli.data.audio import AudioPreprocessing, spectrogram
from pdmp_cli.data.loaders import synthetic
from pdmp_cli.errors import PdmpError


@pytest.mark.parametrize("name", ["synthetic", "synthetic-ave"])
def test_presets_load_with_documented_shapes(name):
    b = load_dataset(name)
    assert b.modalities == ["audio", "visual"] and b.num_classes == 6
    assert len(b.train) == 1200 and len(b.test) == 480
    x, y = b.train[0]
    assert x["audio"].shape == (1, 33, 32)  # 0.5 s at 4 kHz, n_fft 64, hop 64
    assert x["visual"].shape == (3, 32, 32)
    assert 0 <= y < 6
    assert np.bincount(b.train_labels).tolist() == [200] * 6  # balanced classes


def test_generation_is_deterministic_and_cached(tiny_manifest, monkeypatch):
    first = load_dataset(tiny_manifest)
    calls = []
    real = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = load_dataset(tiny_manifest)
    assert calls == []  # served from the cache
    assert first.identity == second.identity
    torch.testing.assert_close(first.train[3][0]["visual"], second.train[3][0]["visual"])
    # the same parameters regenerated from scratch give identical arrays
    m = load_manifest(tiny_manifest)
    fresh = real(m, m.train_size, 0)
    assert np.array_equal(fresh["audio"], first.train.x["audio"].numpy())


def test_a_different_seed_is_different_data(tiny_manifest, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(tiny_manifest.read_text().replace("seed = 0", "seed = 1"))
    a, b = load_dataset(tiny_manifest), load_dataset(other)
    assert a.identity != b.identity
    assert not torch.equal(a.train.x["visual"], b.train.x["visual"])


def test_audio_goes_through_the_shared_spectrogram_pipeline(tiny_manifest):
    m = load_manifest(tiny_manifest)
    out = synthetic.generate(m, 6, 0)
    assert out["audio"].shape[1:] == m.audio_preprocessing.output_shape()
    # the tone of the cue class is the brightest frequency row on average
    pre = m.audio_preprocessing
    k_bin = lambda f: int(round(f / (pre.sample_rate / pre.n_fft)))  # noqa: E731
    mean_rows = out["audio"][:, 0].mean(axis=2)  # (N, F)
    peaks = mean_rows.argmax(axis=1)
    expected = [k_bin(250 + 312.5 * c) for c in range(m.classes)]
    assert sum(p in expected for p in peaks) == len(peaks)


def test_cremad_pipeline_shape_for_a_three_second_clip():
    cfg = AudioPreprocessing()  # CREMA-D / OGM-GE: 22,050 Hz, n_fft 512, hop 353, log-STFT
    wave = cfg.fix_length(np.random.default_rng(0).normal(0, 0.1, 22050))  # 1 s, tiled to 3 s
    assert len(wave) == 3 * 22050
    assert spectrogram(wave, cfg).shape == (1, 257, 188) == cfg.output_shape()


def test_bad_manifest_values_get_one_line(tmp_path, tiny_manifest):
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_manifest.read_text().replace("reliability = 0.6", "reliability = 1.6"))
    with pytest.raises(PdmpError, match=r"audio.reliability must be <= 1, got 1.6"):
        load_dataset(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("loader = [")
    with pytest.raises(PdmpError, match="is not valid TOML"):
        load_dataset(broken)


def test_log_stft_matches_librosa():
    import librosa

    cfg = AudioPreprocessing(sample_rate=8000, clip_seconds=0.25, n_fft=256, hop_length=100)
    wave = cfg.fix_length(np.random.default_rng(1).uniform(-0.5, 0.5, 2000))
    ours = spectrogram(wave, cfg)[0].numpy()
    # reflect padding: librosa < 0.10 default, which the peer (OGM-GE) pipeline ran with
    ref = np.log(np.abs(librosa.stft(wave, n_fft=256, hop_length=100, pad_mode="reflect")) + 1e-7)
    np.testing.assert_allclose(ours, ref, atol=1e-3)
