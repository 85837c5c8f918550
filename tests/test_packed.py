"""The packed store and its loader (issue 25): round trip against the files loader, repacking,
atomic writes (a kill, a full disk), non-finite values, per-sample augmentation drawn in the main
process (identical for any number of workers and across a resume), and the device path's crop
pinned to the CPU path."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from data import miniature as M
from pdmp_cli.data import augment as A
from pdmp_cli.data import store as st
from pdmp_cli.data.check import load_checked
from pdmp_cli.data.packed import Keys, PackedSplit, use_store
from pdmp_cli.errors import PdmpError

ROOT = Path(__file__).resolve().parents[1]

# float16 rounding: relative error <= 2**-11 for normal numbers, absolute <= 2**-25 below 2**-14
FP16_REL, FP16_ABS = 2.0**-11, 2.0**-25
# the CPU path (torchvision's uint8 kernel) against the batched grid_sample, inside the crop box:
# its uint8 rounding and fixed-point weights; measured max 1.0004 on random texture
CPU_VS_DEVICE = 1.0 + 1e-2

TINY = """\
name = "tinyc"
loader = "files"
classes = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
[splits.train]
list = "train.csv"
format = "cremad"
[splits.test]
list = "test.csv"
format = "cremad"
[modalities.audio]
kind = "audio"
path = "AudioWAV/{id}.wav"
preprocessing = { sample_rate = 8000, clip_seconds = 0.5, n_fft = 64, hop_length = 64 }
[modalities.visual]
kind = "frames"
path = "Image-01-FPS/{id}"
preprocessing = { frames = 2, size = 16 }
"""


def _tiny(tmp_path, train=12, test=6, extra="", frames=3):
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import make_cremad_layout

    root = tmp_path / "data"
    root.mkdir(parents=True, exist_ok=True)
    make_cremad_layout(root, train, test, seconds=0.5, frames=frames, frame_size=(40, 32))
    for k, f in enumerate(sorted((root / "Image-01-FPS").glob("*/*.jpg"))):  # texture: crops must show
        M.write_image(f, size=(40, 32), seed=k)
    (root / "m.toml").write_text(TINY + extra)
    return root, str(root / "m.toml")


def _packed(manifest, root, **kw):
    bundle, _ = load_checked(manifest, root)
    packed, lines = use_store(bundle, manifest, **kw)
    return bundle, packed, lines


def _listing(folder: Path) -> list[str]:
    """A dataset's store folder, without the packing locks (``.<split>.lock``)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _close_fp16(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a - b).abs() <= FP16_REL * b.abs() + FP16_ABS).all())


# ----------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", [pytest.param("cremad", marks=pytest.mark.slow), "ave", "ucf101", "cefa"])
def test_round_trip_matches_the_files_loader(name, tmp_path):
    make = {"cremad": M.make_cremad, "ave": M.make_ave, "ucf101": M.make_ucf101, "cefa": M.make_cefa}[name]
    root = make(tmp_path / name)
    files, packed, lines = _packed(name, root)
    assert len(lines) == len([s for s in ("train", "val", "test") if getattr(files, s, None) is not None])
    assert all(line.startswith("packed store written: ") for line in lines)
    for split in ("train", "val", "test"):
        f, p = getattr(files, split), getattr(packed, split)
        if f is None:
            continue
        assert isinstance(p, PackedSplit) and len(p) == len(f) and p.labels == f.labels
        # the stored rows are the features cache's decode: uint8 exactly
        for i, s in enumerate(f.samples):
            for m, mod in f.modalities.items():
                if mod.kind in ("frames", "flow", "image"):
                    want = st.to_rows(mod.kind, f.features.load(mod, s.paths[m]))
                    counts = p.store.counts(m)[i]
                    got = p.store.gather(m, [i], np.arange(counts)[None]) if mod.kind != "image" else \
                        p.store.gather(m, [i])[0]
                    assert np.array_equal(got.reshape(want.shape), want)
        if split == "train":
            for i in range(len(f)):
                x, y = p[i]
                x0, y0 = f[i]
                assert y == y0 and {m: (t.shape, t.dtype) for m, t in x.items()} == \
                    {m: (t.shape, t.dtype) for m, t in x0.items()}
            continue
        for i in range(len(f)):  # evaluation: the files loader's values
            x, y = p[i]
            x0, y0 = f[i]
            assert y == y0 and set(x) == set(x0)
            for m in x:
                if f.modalities[m].kind == "audio":
                    assert _close_fp16(x[m], x0[m]), m
                else:
                    assert torch.equal(x[m], x0[m]), m


def test_float32_switch_keeps_spectrograms_exact(tmp_path):
    root, manifest = _tiny(tmp_path, extra='[packed]\naudio_dtype = "float32"\n')
    files, packed, _ = _packed(manifest, root)
    assert packed.test.store.meta["modalities"]["audio"]["dtype"] == "float32"
    for i in range(len(files.test)):
        assert torch.equal(packed.test[i][0]["audio"], files.test[i][0]["audio"])
    # float16 (the default) halves the bytes
    mod = files.test.modalities["audio"]
    assert st.Layout.of(mod, "float16").dtype == "float16" and st.Layout.of(mod, "float32").dtype == "float32"


# ----------------------------------------------------------------------------------- keys, atomicity


def test_unchanged_data_reads_a_changed_file_or_setting_repacks(tmp_path):
    root, manifest = _tiny(tmp_path)
    _, _, lines = _packed(manifest, root)
    assert all("written" in line for line in lines)
    _, p, lines = _packed(manifest, root)
    assert all(line.startswith("packed store read: ") for line in lines)
    before = p.train.store.meta["key"]
    # a longer wav (another size) for one training clip
    clip = next(iter(sorted((root / "AudioWAV").iterdir())))
    M.write_audio(clip, 0.8, 16000, 300.0, seed=9)
    _, p, lines = _packed(manifest, root)
    assert any(line.startswith("packed store written: ") and line.split(": ")[1].startswith(str(p.train.store.path))
               for line in lines)
    assert p.train.store.meta["key"] != before
    # a changed decode setting repacks too
    (root / "m.toml").write_text(TINY.replace("size = 16", "size = 12"))
    _, p, lines = _packed(manifest, root)
    assert all("written" in line for line in lines) and p.train.store.meta["modalities"]["visual"]["shape"] == [3, 12, 12]
    # one store per split: the old ones were replaced, nothing else left beside them
    assert _listing(p.train.store.path.parent) == ["test", "train"]


@pytest.mark.slow  # a child process imports torch (~5 s)
def test_a_store_killed_while_packing_is_never_used(tmp_path):
    root, manifest = _tiny(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + str(ROOT)}
    script = textwrap.dedent(f"""
        import os, signal
        from pdmp_cli.data import store as st
        from pdmp_cli.data.check import load_checked
        from pdmp_cli.data.packed import use_store
        st.CHUNK = 4
        add, calls = st._ChunkWriter.add, []
        def add_then_die(self, m, rows):
            add(self, m, rows)
            calls.append(m)
            if len(calls) == 14:  # mid-way through the second chunk of the train split
                os.kill(os.getpid(), signal.SIGKILL)
        st._ChunkWriter.add = add_then_die
        bundle, _ = load_checked({manifest!r}, {str(root)!r})
        use_store(bundle, {manifest!r})
    """)
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr
    folder = st.split_dir("tinyc", "train")
    assert not folder.exists() and [name[:9] for name in _listing(folder.parent)] == [".tmp-trai"]
    assert st.Store.open(folder) is None
    # the next run packs afresh (and clears the dead packing's folder)
    files, packed, lines = _packed(manifest, root)
    assert all("written" in line for line in lines)
    assert _listing(folder.parent) == ["test", "train"]
    for i in range(len(files.test)):
        assert torch.equal(packed.test[i][0]["visual"], files.test[i][0]["visual"])


def test_a_disk_that_fills_while_packing_leaves_the_old_store(tmp_path, monkeypatch):
    root, manifest = _tiny(tmp_path)
    _, old, _ = _packed(manifest, root)
    old_key = old.train.store.meta["key"]
    M.write_audio(next(iter(sorted((root / "AudioWAV").iterdir()))), 0.8, 16000, 300.0, seed=9)  # repack needed
    add, calls = st._ChunkWriter.add, []

    def add_until_full(self, m, rows):
        calls.append(m)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        add(self, m, rows)

    monkeypatch.setattr(st._ChunkWriter, "add", add_until_full)
    bundle, _ = load_checked(manifest, root)
    with pytest.raises(PdmpError) as e:
        use_store(bundle, manifest)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("the disk filled while packing tinyc [train] into ")
    assert "free space or set PDMP_PACKED_DIR to a larger disk" in msg
    folder = st.split_dir("tinyc", "train")
    assert _listing(folder.parent) == ["test", "train"]  # no temporary folder left
    assert st.Store.open(folder, old_key) is not None  # the old store, whole


def test_non_finite_values_are_refused_naming_the_sample(tmp_path):
    root, manifest = _tiny(tmp_path)
    bundle, _ = load_checked(manifest, root)
    ds = bundle.train

    def load(value):
        def go(mod, path):
            x = ds.features.load(mod, path)
            return np.full_like(x, value) if mod.kind == "audio" and ds.samples[2].id in str(path) else x
        return go

    dest = st.split_dir("tinyc", "train")
    kw = dict(dataset="tinyc", split="train", modalities=ds.modalities, samples=ds.samples, labels=ds.labels)
    with pytest.raises(PdmpError, match=rf"^cannot pack tinyc \[train\] sample {ds.samples[2].id}: its decoded "
                                        r"audio \(.*\) holds NaN or inf values; fix or remove that file$"):
        st.pack(dest, "k", load=load(np.nan), **kw)
    with pytest.raises(PdmpError, match=r"values exceed the float16 range; set \[packed\] audio_dtype = \"float32\""):
        st.pack(dest, "k", load=load(1e6), **kw)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


# ----------------------------------------------------------------------------------- augmentation


def test_crop_boxes_follow_torchvision_and_differ_per_sample():
    from torchvision.transforms import RandomResizedCrop

    n, s = 10000, 32
    u = torch.rand(n, A.CROP_UNIFORMS, generator=torch.Generator().manual_seed(0)).numpy()
    b = A.crop_boxes(u, s, s)
    i, j, h, w, flip = b.T
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= s).all() and (j + w <= s).all() and (h > 0).all()
    torch.manual_seed(0)
    ref = np.array([RandomResizedCrop.get_params(torch.empty(3, s, s), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    assert abs((h * w).mean() / s**2 - (ref[:, 2] * ref[:, 3]).mean() / s**2) < 0.01
    assert abs((h / w).mean() - (ref[:, 2] / ref[:, 3]).mean()) < 0.01
    assert abs(flip.mean() - 0.5) < 0.02
    # the first fitting try is taken: a first try that fits decides the box whatever the others say
    u2 = u[:4].copy()
    u2[:, 0], u2[:, 1] = 0.5, 0.5  # area 0.54 of the image, aspect 1: fits
    assert (A.crop_boxes(u2, s, s)[:, 2:4] == round((0.08 + 0.46) ** 0.5 * s)).all()


def test_per_sample_parameters_differ_within_a_batch(tmp_path):
    root, manifest = _tiny(tmp_path)
    _, packed, _ = _packed(manifest, root)
    ds = packed.train
    keys = Keys([0] * 8)  # one clip eight times: only the parameters differ
    keys.uniforms = torch.rand(8, ds.uniforms_per_sample, generator=torch.Generator().manual_seed(1)).numpy()
    x = ds.__getitems__(keys).collated[0]["visual"]
    first, t, crop = ds.slots["visual"]
    u = keys.uniforms[:, first:]
    picks = A.frame_picks(np.full(8, 3), t, u[:, :t])
    boxes = A.crop_boxes(u[:, t:], 16, 16)
    params = [(tuple(picks[k]), tuple(boxes[k])) for k in range(8)]
    assert len(set(params)) >= 6  # eight draws: (almost) all different
    for k in range(8):  # same parameters, same tensor; different ones, different tensors
        for m in range(8):
            assert torch.equal(x[k], x[m]) == (params[k] == params[m])
    # the same uniforms give the same sample
    again = ds.__getitems__(keys).collated[0]["visual"]
    assert torch.equal(x, again)


def test_device_path_crop_matches_the_cpu_path():
    g = torch.Generator().manual_seed(0)
    b, t, s = 32, 2, 24
    x = torch.randint(0, 256, (b, t, 3, s, s), generator=g, dtype=torch.uint8)
    boxes = A.crop_boxes(torch.rand(b, A.CROP_UNIFORMS, generator=g).numpy(), s, s)
    cpu = A.crop_cpu(x, boxes, s).float()
    dev = A.crop_batched(x, torch.from_numpy(boxes), s)
    inside = torch.from_numpy(A.interior_mask(boxes, s))[:, None, None].expand_as(cpu)
    assert 0.8 < inside.float().mean() < 1
    assert (cpu - dev).abs()[inside].max() <= CPU_VS_DEVICE
    assert (cpu - dev).abs()[~inside].max() > CPU_VS_DEVICE  # the border is where they differ
    # every frame of a clip shares its box: identical frames stay identical
    same = x[:, :1].expand(b, t, 3, s, s).contiguous()
    assert torch.equal(A.crop_batched(same, torch.from_numpy(boxes), s)[:, 0], A.crop_batched(same, torch.from_numpy(boxes), s)[:, 1])
    # flow: a flip inverts the x channels (v -> 255 - v) on both paths
    flow = torch.full((2, 1, 4, s, s), 100, dtype=torch.uint8)
    fb = np.array([[0, 0, s, s, 1], [0, 0, s, s, 0]])
    for out in (A.crop_cpu(flow, fb, s, flow=True).float(), A.crop_batched(flow, torch.from_numpy(fb), s, flow=True)):
        assert torch.allclose(out[0, 0, 0::2], torch.tensor(155.0)) and torch.allclose(out[0, 0, 1::2], torch.tensor(100.0))
        assert torch.allclose(out[1], torch.tensor(100.0))


def test_finish_on_device_run_on_the_cpu_matches_the_worker_path(tmp_path):
    root, manifest = _tiny(tmp_path)
    _, packed, _ = _packed(manifest, root)
    ds = packed.train
    keys = Keys(list(range(8)))
    keys.uniforms = torch.rand(8, ds.uniforms_per_sample, generator=torch.Generator().manual_seed(2)).numpy()
    cpu_inputs, labels = ds.__getitems__(keys).collated
    import copy

    dev = copy.copy(ds)
    dev.on_device = True
    raw, labels2 = dev.__getitems__(keys).collated
    assert raw["visual"].dtype == torch.uint8 and raw["audio"].dtype == torch.float16 and torch.equal(labels, labels2)
    fin = dev.finish_on_device(raw)
    assert set(fin) == {"audio", "visual"} and fin["visual"].shape == cpu_inputs["visual"].shape
    assert torch.equal(fin["audio"], cpu_inputs["audio"])
    boxes = raw["_augment/visual"].numpy()
    inside = torch.from_numpy(A.interior_mask(boxes, 16))[:, None, None].expand_as(fin["visual"])
    std = min(ds.modalities["visual"].prep.mean_std()[1])
    assert (fin["visual"] - cpu_inputs["visual"]).abs()[inside].max() <= CPU_VS_DEVICE / 255 / std + 1e-5


# ----------------------------------------------------------------------------------- the epoch loader


def _spec(**kw):
    from pdmp_cli.specs import TrainSpec

    return TrainSpec(**{**dict(profile="-", dataset="tinyc", encoder="small", batch_size=4, lr=0.01), **kw})


def _batches(bundle, spec, state, start_step=0):
    from pdmp_cli.train.setup import epoch_loader

    gen = torch.Generator()
    gen.set_state(state)
    out = [(x["visual"].clone(), x["audio"].clone(), y.clone())
           for x, y in epoch_loader(bundle, spec, gen, start_step, torch.device("cpu"))]
    return out, gen.get_state()


def test_batches_identical_for_0_and_2_workers_and_across_a_resume(tmp_path):
    from pdmp_cli.data.split import with_validation

    root, manifest = _tiny(tmp_path, train=18)
    _, packed, _ = _packed(manifest, root)
    bundle, _ = with_validation(packed, 1 / 3, 0)  # the training split as the loop sees it: a Subset
    state = torch.Generator().manual_seed(5).get_state()
    zero, end0 = _batches(bundle, _spec(num_workers=0), state)
    two, end2 = _batches(bundle, _spec(num_workers=2), state)
    assert len(zero) == 3 and all(all(torch.equal(a, b) for a, b in zip(p, q)) for p, q in zip(zero, two))
    assert torch.equal(end0, end2)
    resumed, end1 = _batches(bundle, _spec(num_workers=0), state, start_step=1)
    assert len(resumed) == 2 and all(all(torch.equal(a, b) for a, b in zip(p, q)) for p, q in zip(zero[1:], resumed))
    assert torch.equal(end0, end1)
    # another epoch (the generator moved on) draws other crops
    other, _ = _batches(bundle, _spec(num_workers=0), end0)
    assert not torch.equal(other[0][0], zero[0][0])


def test_train_packs_after_the_check_and_a_ctrl_c_resume_equals_the_whole_run(tmp_path):
    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.rundir import read_metrics
    from pdmp_cli.train import run
    from pdmp_cli.train.setup import resume_spec

    root, manifest = _tiny(tmp_path, train=24)
    profile = manual_profile("tinyc", "visual", "audio", modalities=["audio", "visual"]).save(tmp_path / "p.json")
    spec = _spec(profile=str(profile), dataset=manifest, data_root=str(root), epochs=2, val_fraction=0.25)
    from rich.console import Console

    console = Console(file=open(os.devnull, "w"), record=True)
    whole = run(spec.model_copy(update={"run_dir": str(tmp_path / "whole")}), console=console)
    assert "packed store written: " in console.export_text()

    def ctrl_c(info):
        if (info.epoch, info.step) == (1, 1):
            signal.raise_signal(signal.SIGINT)

    cut = run(spec.model_copy(update={"run_dir": str(tmp_path / "cut")}), on_step=ctrl_c, quiet=True)
    assert cut.status == "interrupted"
    done = run(resume_spec(cut.run_dir), resume=True, quiet=True)

    def comparable(ms):
        return [m.model_dump(exclude={"epoch_seconds"}) for m in ms]

    assert done.status == "complete" and comparable(done.metrics) == comparable(whole.metrics)
    assert comparable(read_metrics(done.run_dir)[0]) == comparable(whole.metrics)
    a = torch.load(done.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(whole.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


# ----------------------------------------------------------------------------------- the command


def test_pack_command_dry_run_then_pack(tmp_path):
    from typer.testing import CliRunner

    from pdmp_cli.cli.app import app

    root, manifest = _tiny(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["datasets", "pack", manifest, "--data-root", str(root), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "would write" in res.output and not st.packed_root().exists()
    res = runner.invoke(app, ["datasets", "pack", manifest, "--data-root", str(root)])
    assert res.exit_code == 0, res.output
    assert "packed store written: " in res.output
    res = runner.invoke(app, ["datasets", "pack", manifest, "--data-root", str(root)])
    assert res.exit_code == 0 and "packed store read: " in res.output
    # training then reads what the command packed, without checking or decoding again
    from pdmp_cli.data.packed import load_packed

    _, _, lines = load_packed(manifest, root)
    assert all("not decoded again" in line for line in lines)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_crop_equals_its_cpu_run_and_the_loop_finishes_on_the_device(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 3, 32, 32), generator=g, dtype=torch.uint8)
    boxes = torch.from_numpy(A.crop_boxes(torch.rand(16, A.CROP_UNIFORMS, generator=g).numpy(), 32, 32))
    cpu = A.crop_batched(x, boxes, 32, flow=True)
    cuda = A.crop_batched(x.cuda(), boxes.cuda(), 32, flow=True).cpu()
    assert (cpu - cuda).abs().max() <= 1e-4 * 255
    # the training loader on CUDA hands the crop to the device: uint8 in, the CPU path's values out
    import copy

    root, manifest = _tiny(tmp_path)
    _, packed, _ = _packed(manifest, root)
    ds = packed.train
    keys = Keys(list(range(8)))
    keys.uniforms = torch.rand(8, ds.uniforms_per_sample, generator=g).numpy()
    want = ds.__getitems__(keys).collated[0]
    dev = copy.copy(ds)
    dev.on_device = True
    from pdmp_cli.runtime import to_device

    got = dev.finish_on_device(to_device(dev.__getitems__(keys).collated[0], torch.device("cuda")))
    assert got["visual"].is_cuda and got["visual"].dtype == torch.float32
    inside = torch.from_numpy(A.interior_mask(dev.__getitems__(keys).collated[0]["_augment/visual"].numpy(), 16))
    inside = inside[:, None, None].expand_as(want["visual"])
    std = min(ds.modalities["visual"].prep.mean_std()[1])
    assert (got["visual"].cpu() - want["visual"]).abs()[inside].max() <= CPU_VS_DEVICE / 255 / std + 1e-5
    assert torch.equal(got["audio"].cpu(), want["audio"])


def test_two_runs_packing_the_same_split_pack_it_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from pdmp_cli.data.packed import split_store

    root, manifest = _tiny(tmp_path)
    bundle, _ = load_checked(manifest, root)
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda _: split_store(bundle.train, "train", bundle.identity, "float16"), range(2)))
    assert sorted(new for _, new in got) == [False, True]
    assert got[0][0].meta["key"] == got[1][0].meta["key"]


def test_the_loop_finishes_device_path_batches_at_its_one_hook(tmp_path):
    """The CUDA path's wiring, run on the CPU: a loader that leaves the crop to the device hands
    uint8 batches to ``train_one_epoch``, whose hook (``finish_on_device``) crops them before the model."""
    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.methods import build_method
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer, epoch_loader
    from pdmp_cli.train.state import EpochStats

    root, manifest = _tiny(tmp_path)
    _, packed, _ = _packed(manifest, root)
    spec = _spec(dataset=manifest, num_workers=0)
    cpu = torch.device("cpu")
    loader = epoch_loader(packed, spec, torch.Generator().manual_seed(0), 0, cpu)
    loader.dataset.on_device = True  # what train_loader sets on CUDA
    seen = []
    model = build_model(spec, packed, cpu)
    forward = model.forward

    def spy(inputs, *a, **kw):
        seen.append({m: (x.dtype, tuple(x.shape)) for m, x in inputs.items()})
        return forward(inputs, *a, **kw)

    model.forward = spy
    method = build_method("vanilla", model, spec, manual_profile("tinyc", "visual", "audio", modalities=["audio", "visual"]))
    opt = build_optimizer(model, spec, method)
    with GracefulInterrupt() as stop:
        assert train_one_epoch(Run(spec, cpu, model, method, opt), loader, EpochStats(model.modalities, cpu), epoch=0,
                               start_step=0, stop=stop) is None
    assert len(seen) == 3 and all(s == {"audio": (torch.float32, (4, 1, 33, 63)), "visual": (torch.float32, (4, 3, 2, 16, 16))}
                                  for s in seen)


def test_a_later_run_on_unchanged_data_reads_the_stores_without_a_check(tmp_path, monkeypatch):
    from pdmp_cli.data import check as check_mod
    from pdmp_cli.data.features import FeatureCache
    from pdmp_cli.data.packed import load_packed

    root, manifest = _tiny(tmp_path)
    bad = sorted((root / "AudioWAV").iterdir())[1]
    bad.write_bytes(b"not audio")
    with pytest.raises(PdmpError, match="unreadable file"):
        load_packed(manifest, root)
    _, report, lines = load_packed(manifest, root, skip_bad=True)
    assert report.skipped == 1 and all("written" in line for line in lines)

    def refuse(*a, **k):
        raise AssertionError("decoded or checked again")

    with monkeypatch.context() as mp:
        mp.setattr(check_mod, "check_dataset", refuse)
        mp.setattr(FeatureCache, "load", refuse)
        bundle, report, lines = load_packed(manifest, root, skip_bad=True)
        assert report.skipped == 1 and isinstance(bundle.train, PackedSplit) and len(bundle.train) == 11
        assert all(line.startswith("packed store read: ") and "not decoded again" in line for line in lines)
        # without --skip-bad the check runs and says what is wrong
        with pytest.raises(AssertionError, match="checked again"):
            load_packed(manifest, root)
    # a changed file: checked and packed again
    M.write_audio(bad, 0.5, 16000, 300.0, seed=3)
    bundle, report, lines = load_packed(manifest, root, skip_bad=True)
    assert report.skipped == 0 and len(bundle.train) == 12 and all("written" in line for line in lines)


def _rewrite_in_place(wav: Path, seed: int) -> None:
    """Another recording of ``wav``'s length and format (its byte size kept), its mtime moved on."""
    before = wav.stat()
    M.write_audio(wav, 0.5, 16000, 900.0, seed=seed)
    assert wav.stat().st_size == before.st_size
    os.utime(wav, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


def test_a_file_rewritten_in_place_at_the_same_size_is_checked_and_repacked(tmp_path, monkeypatch):
    from pdmp_cli.data import check as check_mod
    from pdmp_cli.data.features import FeatureCache
    from pdmp_cli.data.manifest import load_dataset
    from pdmp_cli.data.packed import load_packed

    root, manifest = _tiny(tmp_path)
    bundle, _, lines = load_packed(manifest, root)
    assert all("written" in line for line in lines)
    files = load_dataset(manifest, root)
    i, sample, mod = 2, files.test.samples[2], files.test.modalities["audio"]
    old = bundle.test.store.gather("audio", [i])[0].astype(np.float32)
    identity = files.identity
    _rewrite_in_place(sample.paths["audio"], seed=7)
    assert load_dataset(manifest, root).identity == identity  # the identity stays content-based
    checks = []
    check = check_mod.check_dataset
    monkeypatch.setattr(check_mod, "check_dataset", lambda *a, **k: checks.append(1) or check(*a, **k))
    bundle, _, lines = load_packed(manifest, root)
    assert checks and [line.split(":")[0] for line in lines] == ["packed store read", "packed store written"]
    new = st.to_rows("audio", mod.decode(sample.paths["audio"])).astype(np.float16).astype(np.float32)
    got = bundle.test.store.gather("audio", [i])[0].astype(np.float32)
    assert np.array_equal(got, new) and not np.allclose(got, old, atol=1e-2)  # the new recording
    x, _ = bundle.test[i]
    assert torch.equal(x["audio"], torch.from_numpy(new))
    # the next run reads both stores (the train store kept what it recorded): nothing checked or decoded
    monkeypatch.setattr(check_mod, "check_dataset", lambda *a, **k: pytest.fail("checked again"))
    monkeypatch.setattr(FeatureCache, "load", lambda *a, **k: pytest.fail("decoded again"))
    _, _, lines = load_packed(manifest, root)
    assert all("not decoded again" in line for line in lines)


def test_pack_repacks_a_split_whose_file_was_rewritten_at_the_same_size(tmp_path):
    root, manifest = _tiny(tmp_path)
    files, packed, _ = _packed(manifest, root)
    wav = files.test.samples[0].paths["audio"]
    old = packed.test[0][0]["audio"]
    _rewrite_in_place(wav, seed=8)
    files, packed, lines = _packed(manifest, root)
    assert [line.split(":")[0] for line in lines] == ["packed store read", "packed store written"]  # train, test
    assert not torch.equal(packed.test[0][0]["audio"], old)
    assert _close_fp16(packed.test[0][0]["audio"], files.test[0][0]["audio"])
    # `pdmp datasets pack --dry-run` says the same
    from pdmp_cli.data.packed import pack_dataset

    _rewrite_in_place(wav, seed=9)
    out = pack_dataset(manifest, root, dry_run=True)
    assert "(up to date)" in out[0] and "(to write)" in out[1]


def test_a_frame_replaced_by_a_rename_and_a_left_out_file_repaired_at_the_same_size_are_noticed(tmp_path):
    from pdmp_cli.data.manifest import load_dataset
    from pdmp_cli.data.packed import load_packed

    root, manifest = _tiny(tmp_path)
    bad = sorted((root / "AudioWAV").iterdir())[1]
    good = bad.read_bytes()
    bad.write_bytes(b"XXXX" + good[4:])  # unreadable, same size
    _, report, _ = load_packed(manifest, root, skip_bad=True)
    assert report.skipped == 1
    bad.write_bytes(good)  # repaired in place: same size again
    os.utime(bad, ns=(0, bad.stat().st_mtime_ns + 10**9))
    bundle, report, lines = load_packed(manifest, root, skip_bad=True)
    assert report.skipped == 0 and len(bundle.train) == 12 and all("written" in line for line in lines)
    # a frame replaced through a rename (a new file in its folder: the folder's mtime moves)
    files = load_dataset(manifest, root)
    folder, mod = files.train.samples[3].paths["visual"], files.train.modalities["visual"]
    frame = sorted(folder.iterdir())[0]
    M.write_image(tmp_path / "new.jpg", size=(40, 32), seed=99)
    os.replace(tmp_path / "new.jpg", frame)
    os.utime(folder, ns=(0, folder.stat().st_mtime_ns + 10**9))
    assert load_dataset(manifest, root).identity == files.identity
    bundle, _, lines = load_packed(manifest, root)
    assert lines[0].startswith("packed store written: ")
    want = st.to_rows("frames", mod.decode(folder))
    got = bundle.train.store.gather("visual", [3], np.arange(len(want))[None])[0]
    assert np.array_equal(got, want)
