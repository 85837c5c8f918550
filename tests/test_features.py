"""The features cache: decode once, hit from the second epoch and in later runs, keyed by file
identity + decode parameters; augmentation stays random; DataLoader workers share it."""

from __future__ import annotations

import os

import pytest
import torch

from data import miniature as M
from pdmp_cli.data import load_dataset, load_manifest
from pdmp_cli.data.features import STATS, FeatureCache
from pdmp_cli.data.loaders.files import FilesLoader

SMALL = """
loader = "files"
[splits.train]
list = "train.csv"
[splits.test]
list = "test.csv"
[modalities.audio]
kind = "audio"
path = "audio/{{id}}.wav"
preprocessing = {{ sample_rate = 8000, clip_seconds = 0.25, n_fft = {n_fft}, hop_length = 64 }}
[modalities.visual]
kind = "frames"
path = "visual/{{id}}"
preprocessing = {{ frames = 2, size = 24, mean = {mean} }}
"""


def _manifest(root, n_fft=128, mean="[0.5, 0.5, 0.5]"):
    p = root / "m.toml"
    p.write_text(SMALL.format(n_fft=n_fft, mean=mean))
    return p


@pytest.fixture
def custom(tmp_path):
    return M.make_custom(tmp_path / "mine", visual="frames")


def _epoch(split):
    for x, _ in torch.utils.data.DataLoader(split, batch_size=2, shuffle=True):
        pass


def test_second_epoch_is_all_hits_and_decodes_nothing(custom, monkeypatch):
    bundle = load_dataset(_manifest(custom))
    feats = bundle.train.features
    n = len(bundle.train) * 2  # two cached modalities per sample
    _epoch(bundle.train)
    assert (feats.hits, feats.misses) == (0, n)
    # epoch 2: no audio decode, no STFT, no image decode
    import PIL.Image
    import soundfile

    import pdmp_cli.data.modalities.audio as audio_mod

    def boom(*a, **k):
        raise AssertionError("decoded on a cached epoch")

    monkeypatch.setattr(soundfile, "read", boom)
    monkeypatch.setattr(audio_mod, "spectrogram", boom)
    monkeypatch.setattr(PIL.Image, "open", boom)
    feats.reset_counts()
    before = STATS["hits"]
    _epoch(bundle.train)
    assert (feats.hits, feats.misses) == (n, 0)
    assert STATS["hits"] - before == n


def test_later_run_hits_and_a_changed_file_misses(custom):
    m = _manifest(custom)
    _epoch(load_dataset(m).train)
    again = load_dataset(m)  # a new run: new bundle, new FeatureCache
    _epoch(again.train)
    assert (again.train.features.hits, again.train.features.misses) == (8, 0)
    # rewrite one clip's audio (new size and mtime): only that one is decoded again
    M.write_audio(custom / "audio" / "clip02.wav", seconds=0.3, freq=1234)
    third = load_dataset(m)
    _epoch(third.train)
    assert (third.train.features.hits, third.train.features.misses) == (7, 1)


def test_decode_params_change_the_key_normalisation_does_not(custom, tmp_path):
    _epoch(load_dataset(_manifest(custom)).train)
    renorm = load_dataset(_manifest(custom, mean="[0.4, 0.4, 0.4]"))
    _epoch(renorm.train)
    assert (renorm.train.features.hits, renorm.train.features.misses) == (8, 0)
    new_fft = load_dataset(_manifest(custom, n_fft=256))
    _epoch(new_fft.train)
    # the spectrograms are recomputed, the frames are reused
    assert (new_fft.train.features.hits, new_fft.train.features.misses) == (4, 4)
    x, _ = new_fft.train[0]
    assert tuple(x["audio"].shape) == (1, 129, 32)


def test_augmentation_stays_random_with_a_warm_cache(custom):
    for k in range(1, 4):  # textured frames, so a crop or flip shows
        M.write_image(custom / "visual" / "clip01" / f"{k:05d}.jpg", seed=k)
    bundle = load_dataset(_manifest(custom))
    _epoch(bundle.train)
    torch.manual_seed(1)
    draws = [bundle.train[0][0]["visual"] for _ in range(4)]
    assert bundle.train.features.misses == 8 and bundle.train.features.hits >= 4
    assert all(not torch.equal(draws[0], d) for d in draws[1:])  # a new crop/flip/frame choice each time
    assert torch.equal(bundle.test[0][0]["visual"], bundle.test[0][0]["visual"])  # evaluation is fixed


def test_worker_processes_share_the_cache(custom):
    bundle = load_dataset(_manifest(custom))
    loader = torch.utils.data.DataLoader(bundle.test, batch_size=1, num_workers=2)
    in_workers = [x["audio"] for x, _ in loader]
    assert bundle.test.features.misses == 0  # the workers decoded, in their own processes
    fresh = FeatureCache()
    direct = [bundle.test.modalities["audio"].finish(fresh.load(bundle.test.modalities["audio"], s.paths["audio"]), False)
              for s in bundle.test.samples]
    assert fresh.hits == 2 and fresh.misses == 0  # ...and wrote what the main process now reads
    assert all(torch.equal(a[0], b) for a, b in zip(in_workers, direct))


def test_cache_can_be_turned_off(custom, monkeypatch):
    monkeypatch.setenv("PDMP_FEATURES_CACHE", "0")
    bundle = load_dataset(_manifest(custom))
    _epoch(bundle.train)
    _epoch(bundle.train)
    assert (bundle.train.features.hits, bundle.train.features.misses) == (0, 0)


def test_cache_key_uses_file_identity(custom):
    m = load_manifest(_manifest(custom))
    bundle = FilesLoader.build(m)
    audio = bundle.train.modalities["audio"]
    path = bundle.train.samples[0].paths["audio"]
    fc = FeatureCache()
    k1 = fc.key(audio, path)
    os.utime(path, ns=(1, 1))  # same bytes, new modification time
    assert fc.key(audio, path) != k1
