"""Every shipped dataset manifest on a miniature dataset in its real layout, the modality kinds,
list formats, label handling, the data root override and manifest validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data import miniature as M
from pdmp_cli.data import list_manifests, load_dataset, load_manifest
from pdmp_cli.errors import PdmpError
from pdmp_cli.models.multimodal import build_multimodal


# manifest -> (generator, documented per-sample shapes, expected train labels, number of classes)
MINIATURES = {
    "cremad": (M.make_cremad, {"audio": (1, 257, 188), "visual": (3, 224, 224)}, [5, 1, 0, 5], 6),
    "ave": (M.make_ave, {"audio": (1, 257, 1001), "visual": (3, 3, 224, 224)}, [0, 2, 1], 28),
    "ks": (M.make_ks, {"audio": (1, 128, 1024), "visual": (3, 3, 224, 224)}, [4, 2, 22], 31),
    "vggsound": (M.make_vggsound, {"audio": (1, 257, 454), "visual": (3, 3, 224, 224)}, [1, 2, 0, 1], 3),
    "ucf101": (M.make_ucf101, {"rgb": (3, 3, 224, 224), "flow": (10, 3, 224, 224)}, [0, 1, 2], 3),
    "cefa": (M.make_cefa, {"rgb": (3, 112, 112), "depth": (1, 112, 112), "ir": (1, 112, 112)}, [1, 1, 0, 0], 2),
}


def test_every_files_manifest_has_a_miniature():
    files = [n for n in list_manifests() if load_manifest(n).loader == "files"]
    assert sorted(files) == sorted(MINIATURES)


@pytest.mark.parametrize("name", sorted(MINIATURES))
def test_manifest_loads_miniature_and_trains_one_step(name, tmp_path):
    make, shapes, train_labels, k = MINIATURES[name]
    bundle = load_dataset(name, data_root=make(tmp_path / name))
    assert bundle.modalities == list(shapes)
    assert bundle.num_classes == k
    assert bundle.train_labels == train_labels
    # the documented shapes, also what the manifest's modality says
    manifest = load_manifest(name)
    for m, shape in shapes.items():
        assert manifest.modalities[m].modality.output_shape() == shape
    splits = [bundle.train, bundle.test] + ([bundle.val] if bundle.val is not None else [])
    ids = [{s.id for s in split.samples} for split in splits]
    assert sum(map(len, ids)) == len(set().union(*ids))  # no clip in two splits
    for split in splits:
        for i in range(len(split)):
            x, y = split[i]
            assert {m: tuple(t.shape) for m, t in x.items()} == shapes
            assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in x.values())
            assert 0 <= y < k
    # one training step of a multimodal model on a batch
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=2, shuffle=False)
    xb, yb = next(iter(loader))
    model = build_multimodal("small", "concat", bundle.in_channels, bundle.num_classes)
    out = model(xb)
    assert out.logits.shape == (2, k) and set(out.branch_logits) == set(shapes)
    torch.nn.functional.cross_entropy(out.logits, yb).backward()
    for m in shapes:  # every encoder received a gradient
        g = sum(p.grad.abs().sum() for p in model.encoders[m].parameters() if p.grad is not None)
        assert g > 0


def test_cremad_three_second_clip_is_257_by_188_and_matches_librosa(tmp_path):
    """OGM-GE's CREMA-D pipeline: librosa.load(sr=22050), 3 s, clip +-1, stft(512, 353), log(|S|+1e-7)."""
    import librosa

    path = M.write_audio(tmp_path / "clip.wav", seconds=3.0, sr=16000, freq=330.0)
    audio = load_manifest("cremad").modalities["audio"].modality
    spec = audio.decode(path)
    assert spec.shape == (1, 257, 188)

    wave, _ = librosa.load(path, sr=22050)
    wave = np.clip(np.tile(wave, 2)[:66150], -1, 1)
    ref = np.log(np.abs(librosa.stft(wave, n_fft=512, hop_length=353, pad_mode="reflect")) + 1e-7)
    assert ref.shape == (257, 188)
    # magnitudes agree everywhere; logs agree below 8 kHz (above it the 16 kHz source is empty and
    # log(~1e-6) magnifies float rounding)
    assert np.abs(np.exp(spec[0]) - np.exp(ref)).max() < 1e-4
    assert np.abs(spec[0, :180] - ref[:180]).max() < 1e-3


def test_audio_formats_resampling_and_stereo(tmp_path):
    """flac, mp3 and stereo wav at other rates all decode to the same documented shape."""
    import soundfile as sf

    from pdmp_cli.data.modalities import build_modality

    audio = build_modality("audio", {"sample_rate": 8000, "clip_seconds": 0.5, "n_fft": 256, "hop_length": 128})
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    sf.write(tmp_path / "a.flac", tone, 44100)
    sf.write(tmp_path / "a.mp3", tone, 44100)
    sf.write(tmp_path / "s.wav", np.stack([tone, tone], axis=1), 22050)
    specs = {p: audio.decode(tmp_path / p) for p in ("a.flac", "a.mp3", "s.wav")}
    for s in specs.values():
        assert s.shape == (1, 129, 32)
    # the 1 kHz tone lands in bin 1000 / (8000 / 256) = 32 for every format and rate
    assert int(np.argmax(specs["a.flac"][0].mean(axis=1))) == 32
    assert int(np.argmax(specs["a.mp3"][0].mean(axis=1))) == 32
    # 44,100 samples written at 22,050 Hz: 2 s of a 500 Hz tone -> bin 16
    assert int(np.argmax(specs["s.wav"][0].mean(axis=1))) == 16


def _raw_frames(x: torch.Tensor) -> list[int]:
    """Pixel values (0-255) of each frame of an un-normalised (C, T, H, W) clip."""
    return [int(round(float(v) * 255)) for v in x[0, :, 0, 0]]


def test_frames_sorted_spread_at_eval_random_at_train(tmp_path):
    from pdmp_cli.data.modalities import build_modality

    folder = tmp_path / "clip"
    M.write_frames(folder, 12, "{k}.jpg")  # 1.jpg ... 12.jpg: natural order, not 1, 10, 11, 12, 2...
    frames = build_modality("frames", {"frames": 3, "size": 16, "mean": [0, 0, 0], "std": [1, 1, 1]})
    decoded = frames.decode(folder)
    assert decoded.shape == (12, 16, 16, 3)
    got = _raw_frames(frames.finish(decoded, train=False))
    # 12 frames, 3 segments [0,4) [4,8) [8,12): centres 2, 6, 10 -> values 60, 140, 220
    assert [abs(g - e) <= 2 for g, e in zip(got, [60, 140, 220])] == [True] * 3
    torch.manual_seed(0)
    picks = {tuple(_raw_frames(frames.finish(decoded, train=True))) for _ in range(30)}
    assert len(picks) > 5  # random at training
    for p in picks:  # one frame from each segment, in order
        idx = [round((v - 20) / 20) for v in p]
        assert 0 <= idx[0] < 4 <= idx[1] < 8 <= idx[2] < 12


def test_single_frame_and_image_shapes(tmp_path):
    from pdmp_cli.data.modalities import build_modality

    M.write_frames(tmp_path / "f", 2)
    one = build_modality("frames", {"frames": 1, "size": 32})
    assert tuple(one.finish(one.decode(tmp_path / "f"), train=True).shape) == (3, 32, 32)
    M.write_image(tmp_path / "g.png", 7, mode="L")
    gray = build_modality("image", {"size": 20, "channels": 1})
    x = gray.finish(gray.decode(tmp_path / "g.png"), train=False)
    assert tuple(x.shape) == (1, 20, 20)
    assert torch.allclose(x, torch.full_like(x, (7 / 255 - 0.5) / 0.25), atol=1e-5)
    rgb = build_modality("image", {"size": 20})
    M.write_image(tmp_path / "c.png", (255, 0, 0))
    x = rgb.finish(rgb.decode(tmp_path / "c.png"), train=False)  # ImageNet normalisation per channel
    want = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225])
    assert torch.allclose(x[:, 5, 5], want, atol=1e-4)


def test_flow_stacks_xy_pairs_and_flip_inverts_x(tmp_path):
    from pdmp_cli.data.modalities import build_modality

    d = tmp_path / "v"
    for k in range(1, 5):
        M.write_image(d / f"flow_x_{k:05d}.jpg", 10 * k, mode="L")
        M.write_image(d / f"flow_y_{k:05d}.jpg", 200 + k, mode="L")
    flow = build_modality("flow", {"frames": 1, "stack": 2, "size": 8, "mean": [0.0], "std": [1.0]})
    assert flow.channels() == 4
    x = flow.finish(flow.decode(d), train=False)
    assert tuple(x.shape) == (4, 8, 8)
    # 3 possible starts, the centre one is 1: pairs 2 and 3 -> x2, y2, x3, y3
    vals = [round(float(v) * 255) for v in x[:, 0, 0]]
    assert all(abs(a - b) <= 2 for a, b in zip(vals, [20, 202, 30, 203]))
    # a horizontal flip mirrors and negates x motion: v -> 255 - v on x channels only
    from pdmp_cli.data.modalities.flow import _flip_flow

    f = _flip_flow(x.clone())
    assert torch.allclose(f[0], 1 - x[0].flip(-1)) and torch.allclose(f[1], x[1].flip(-1))


def test_npy_kind_infers_channels(tmp_path):
    root = tmp_path / "feat"
    (root / "feats").mkdir(parents=True)
    rows = [("a", "x"), ("b", "y"), ("c", "x")]
    (root / "train.csv").write_text("id,label\n" + "".join(f"{i},{l}\n" for i, l in rows))
    (root / "test.csv").write_text("id,label\nd,x\ne,y\n")
    for k, (i, _) in enumerate(rows + [("d", "x"), ("e", "y")]):
        np.save(root / "feats" / f"{i}.npy", np.full((5, 4, 6), k, np.float32))
        np.save(root / "feats" / f"{i}_2d.npy", np.full((4, 6), k, np.float32))
    (root / "m.toml").write_text(
        'loader = "files"\n[splits.train]\nlist = "train.csv"\n[splits.test]\nlist = "test.csv"\n'
        '[modalities.a]\nkind = "npy"\npath = "feats/{id}.npy"\n'
        '[modalities.b]\nkind = "npy"\npath = "feats/{id}_2d.npy"\n')
    bundle = load_dataset(root / "m.toml")
    assert bundle.in_channels == {"a": 5, "b": 1}
    x, y = bundle.train[2]
    assert tuple(x["a"].shape) == (5, 4, 6) and float(x["a"][0, 0, 0]) == 2.0
    assert tuple(x["b"].shape) == (1, 4, 6) and (bundle.class_names, y) == (["x", "y"], 0)


@pytest.mark.parametrize("int_labels", [False, True])
def test_custom_csv_labels_names_or_ints(tmp_path, int_labels):
    root = M.make_custom(tmp_path / "mine", int_labels=int_labels)
    (root / "m.toml").write_text(
        'loader = "files"\n[splits.train]\nlist = "train.csv"\n[splits.test]\nlist = "test.csv"\n'
        '[modalities.audio]\nkind = "audio"\npath = "audio/{id}.wav"\n'
        'preprocessing = { sample_rate = 8000, clip_seconds = 0.25, n_fft = 128, hop_length = 64 }\n'
        '[modalities.visual]\nkind = "image"\npath = "visual/{id}.png"\npreprocessing = { size = 24 }\n')
    bundle = load_dataset(root / "m.toml")  # relative data_root: the manifest's folder
    assert bundle.class_names == (["0", "1"] if int_labels else ["cat", "dog"])
    assert bundle.train_labels == [0, 1, 0, 1]
    assert [y for _, y in bundle.test] == [0, 1]


def test_integer_labels_index_a_named_class_list(tmp_path):
    root = M.make_custom(tmp_path / "mine", int_labels=True)
    (root / "m.toml").write_text(
        'loader = "files"\nclasses = ["kitten", "puppy"]\n[splits.train]\nlist = "train.csv"\n'
        '[splits.test]\nlist = "test.csv"\n[modalities.visual]\nkind = "image"\npath = "visual/{id}.png"\n')
    bundle = load_dataset(root / "m.toml")
    assert bundle.class_names == ["kitten", "puppy"] and bundle.train_labels == [0, 1, 0, 1]


def test_data_root_precedence(tmp_path, monkeypatch):
    from pdmp_cli.data.loaders.files import resolve_root

    m = load_manifest("cremad")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PDMP_DATA_ROOT", raising=False)
    monkeypatch.delenv("PDMP_DATA_ROOT_CREMAD", raising=False)
    assert resolve_root(m) == (tmp_path.joinpath("data", "CREMA-D").relative_to(tmp_path), "./data")
    monkeypatch.setenv("PDMP_DATA_ROOT", str(tmp_path / "all"))
    assert resolve_root(m)[0] == tmp_path / "all" / "CREMA-D"
    monkeypatch.setenv("PDMP_DATA_ROOT_CREMAD", str(tmp_path / "crema"))
    assert resolve_root(m) == (tmp_path / "crema", "$PDMP_DATA_ROOT_CREMAD")
    assert resolve_root(m, tmp_path / "flag")[0] == tmp_path / "flag"
    # and it is used: data under $PDMP_DATA_ROOT_CREMAD loads without --data-root
    M.make_cremad(tmp_path / "crema")
    assert len(load_dataset("cremad").train) == 4


def test_missing_data_root_names_the_fixes(tmp_path):
    with pytest.raises(PdmpError) as e:
        load_dataset("ave", data_root=tmp_path / "nowhere")
    msg = str(e.value)
    assert "data root" in msg and "nowhere" in msg and "--data-root" in msg and "PDMP_DATA_ROOT_AVE" in msg
    assert e.value.exit_code == 2


@pytest.mark.parametrize("body, message", [
    ('[modalities.a]\nkind = "video"\npath = "{id}"\n',
     "modalities.a: kind must be one of audio, flow, frames, image, npy, got 'video'"),
    ('[modalities.a]\nkind = "audio"\npath = "{id}.wav"\npreprocessing = { n_fft = 0 }\n',
     "modalities.a: preprocessing.n_fft must be > 0, got 0"),
    ('[modalities.a]\nkind = "frames"\npath = "{id}"\npreprocessing = { frame = 3 }\n',
     "modalities.a: preprocessing.frame is not a known option"),
])
def test_manifest_errors_are_one_line(tmp_path, body, message):
    p = tmp_path / "bad.toml"
    p.write_text('loader = "files"\n[splits.train]\nlist = "t.csv"\n[splits.test]\nlist = "t.csv"\n' + body)
    with pytest.raises(PdmpError) as e:
        load_manifest(p)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_path_pattern_with_unknown_field(tmp_path):
    root = M.make_custom(tmp_path / "mine")
    (root / "m.toml").write_text(
        'loader = "files"\n[splits.train]\nlist = "train.csv"\n[splits.test]\nlist = "test.csv"\n'
        '[modalities.v]\nkind = "image"\npath = "visual/{clip}.png"\n')
    with pytest.raises(PdmpError, match=r"modalities.v.path 'visual/\{clip\}.png' uses a field .* available: \{id\}, \{label\}"):
        load_dataset(root / "m.toml")


def test_identity_follows_content(tmp_path):
    root = M.make_cremad(tmp_path / "c")
    a = load_dataset("cremad", data_root=root).identity
    assert load_dataset("cremad", data_root=root).identity == a
    M.write_audio(root / "AudioWAV" / "1001_DFA_ANG_XX.wav", seconds=0.6)  # same name, new content
    assert load_dataset("cremad", data_root=root).identity != a


def test_manifest_defaults_are_the_papers_and_reach_the_specs():
    from pdmp_cli.specs import AnalyzeSpec, TrainSpec, dataset_defaults

    paper = {"encoder": "resnet18", "epochs": 100, "batch_size": 64, "lr": 0.001}
    gammas = {"cremad": 15.0, "ave": 15.0, "ks": 10.0, "vggsound": 15.0, "cefa": 15.0}  # Table V, Sec. V
    for name in MINIATURES:
        d = dataset_defaults(name, TrainSpec)
        assert {k: d[k] for k in paper} == paper and d["num_workers"] >= 4
        assert d.get("gamma_p") == gammas.get(name)
        assert "gamma_p" not in dataset_defaults(name, AnalyzeSpec)


def test_manifest_val_split_loads_unaugmented_and_enters_the_identity(tmp_path):
    root = M.make_custom(tmp_path / "mine")  # val.csv: clip07 dog, clip08 cat
    head = 'loader = "files"\n[splits.train]\nlist = "train.csv"\n[splits.test]\nlist = "test.csv"\n'
    mods = '[modalities.visual]\nkind = "image"\npath = "visual/{id}.png"\npreprocessing = { size = 24 }\n'
    (root / "noval.toml").write_text(head + mods)
    (root / "m.toml").write_text(head + '[splits.val]\nlist = "val.csv"\n' + mods)
    without = load_dataset(root / "noval.toml")
    assert without.val is None and without.val_labels is None
    bundle = load_dataset(root / "m.toml")
    assert len(bundle.val) == 2 and bundle.val_labels == [1, 0] and not bundle.val.train
    assert torch.equal(bundle.val[0][0]["visual"], bundle.val[0][0]["visual"])  # evaluated like test
    assert bundle.identity != without.identity
    (root / "val.csv").write_text("id,label\nclip07,dog\n")
    assert load_dataset(root / "m.toml").identity != bundle.identity
