"""Issue 27: nothing escapes, nothing runs, nothing silent. One test (at least) per item of the
issue, each failing on the code before its fix:

1. ids from list data never lead outside the data root (property-style: seeded random ids)
2. the caches hold no pickles: a planted entry that would run code is a miss, never executed
3. non-finite decoded features are a problem of ``datasets check``
5. a failed checkpoint write ends in one line and a resumable state; a corrupt checkpoint is
   found before loading; a run directory that disappears stops the run
6. numeric options and spec fields are validated before anything runs
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_profile
from typer.testing import CliRunner

from data import miniature as M
from pdmp_cli.cli.app import app

runner = CliRunner()

# --------------------------------------------------------------------------- 1. confinement

MANIFEST = """
name = "evil"
loader = "files"
data_root = "{root}"
[splits.train]
list = "train.csv"
[splits.test]
list = "test.csv"
[modalities.audio]
kind = "audio"
path = "audio/{{id}}.wav"
[modalities.audio.preprocessing]
sample_rate = 16000
clip_seconds = 0.2
[modalities.visual]
kind = "frames"
path = "frames/{{id}}"
[modalities.visual.preprocessing]
frames = 1
pattern = "*.jpg"
[prepare]
video = "clip.mp4"
"""

PIECES = ["..", "/", ".", "\x00", "\n", "\\", "victim", "x", " ", "a" * 300, "..", "/..", "../", "v"]


def _random_id(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 5)))


def _snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder``: its content hash (files) or None (folders)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.join(dirpath, d)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def _write_list(path: Path, ids: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for k, i in enumerate(ids):
            w.writerow([i, f"c{k % 2}"])


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """tmp/outside (a victim tree next to the data root: victim/ and victim.wav at every level the
    ids can reach), tmp/root/<a>/<b>/data (the data root, two good samples), tmp/videos."""
    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "outside" / "a" / "b" / "data"
    for level in (root.parent, root.parent.parent, root.parent.parent.parent):
        M.write_frames(level / "victim", 2)
        M.write_audio(level / "victim.wav", 0.2)
        M.write_frames(level / "frames" / "victim", 2)
    for good in ("g1", "g2"):
        M.write_audio(root / "audio" / f"{good}.wav", 0.2)
        M.write_frames(root / "frames" / good, 2)
    videos = tmp_path / "videos"
    M.make_video(videos / "clip.mp4", seconds=1.0)
    manifest = tmp_path / "evil.toml"
    manifest.write_text(MANIFEST.format(root=root))
    return root, videos, manifest, tmp_path / "outside"


def test_1_random_ids_never_touch_anything_outside_the_data_root(sandbox):
    root, videos, manifest, outside = sandbox
    from pdmp_cli.data.prepare import prepare_dataset

    rng = random.Random(27)
    for round_ in range(4):
        ids = [_random_id(rng) for _ in range(12)] + ["..", ".", "../../victim", "../victim", "g1"]
        _write_list(root / "train.csv", ids)
        _write_list(root / "test.csv", ["g2"])
        inside_frames = _snapshot(root / "frames" / "g2")
        before = {p: h for p, h in _snapshot(outside).items() if not p.startswith(str(root))}
        before_videos = _snapshot(videos)

        result = runner.invoke(app, ["datasets", "check", str(manifest)])
        assert result.exit_code == 1, result.output
        assert "bad row" in result.output and "train.csv:" in result.output  # the list line is named
        assert "Traceback" not in result.output

        from pdmp_cli.data.loaders.files import index_dataset
        from pdmp_cli.data.manifest import load_manifest

        idx = index_dataset(load_manifest(manifest))
        kept = {s.id for s in idx.splits["train"]}
        for s in idx.splits["train"]:  # every kept sample's files are strictly inside the root
            for p in s.paths.values():
                assert os.path.normpath(p).startswith(str(root) + os.sep), (s.id, p)
        assert {"..", ".", "../../victim", "../victim"}.isdisjoint(kept)
        assert len(idx.unsafe) >= 4

        with pytest.raises(Exception) as e:
            prepare_dataset(manifest, videos, force=True)
        assert "outside the data root" in str(e.value) and "nothing was written" in str(e.value)
        result = runner.invoke(app, ["prepare", str(manifest), "--videos", str(videos), "--force"])
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output

        after = {p: h for p, h in _snapshot(outside).items() if not p.startswith(str(root))}
        assert after == before, f"round {round_}: files outside the data root changed"
        assert _snapshot(videos) == before_videos
        assert _snapshot(root / "frames" / "g2") == inside_frames

        # the ids confine lets through (odd but inside: spaces, backslashes, long names) are prepared,
        # twice with --force (replace and delete paths), and still nothing outside the root changes
        from pdmp_cli.data.confine import UnsafePath, confine

        def safe(i):
            try:
                confine(root, f"frames/{i}")
                confine(root, f"audio/{i}.wav")
                return "\\" not in i  # a backslash is checked as a separator: refused above anyway
            except UnsafePath:
                return False

        stripped = {i.strip() for i in ids}  # the csv reader strips cells
        kept_ids = sorted(i for i in stripped if safe(i) and i not in ("g1", "g2"))[:3] + ["g1"]
        _write_list(root / "train.csv", kept_ids)
        for _ in range(2):
            done = prepare_dataset(manifest, videos, force=True)
            assert sorted(done.done) == sorted(kept_ids + ["g2"]) and not done.failed, done  # g2: the test list
        after = {p: h for p, h in _snapshot(outside).items() if not p.startswith(str(root))}
        assert after == before, f"round {round_}: prepare --force changed files outside the data root"
        for i in kept_ids:  # each sample's frames and audio where its id says, inside the root
            assert (root / "frames" / i).is_dir() and (root / "audio" / f"{i}.wav").is_file()
        M.write_frames(root / "frames" / "g2", 2)  # as the fixture made it, for the next round
        inside_frames = _snapshot(root / "frames" / "g2")


def test_1_prepare_force_deletes_only_inside_its_output_folder(tmp_path):
    from pdmp_cli.data.confine import UnsafePath
    from pdmp_cli.data.prepare import extract_frames

    video = M.make_video(tmp_path / "v.mp4", seconds=1.0)
    out = tmp_path / "root" / "frames"
    victim = M.write_frames(tmp_path / "root" / "victim", 2)
    with pytest.raises(UnsafePath):
        extract_frames(video, out / ".." / "victim", "{k:05d}.jpg", 1.0, within=out)
    with pytest.raises(UnsafePath):
        extract_frames(video, out, "{k:05d}.jpg", 1.0, within=out)  # the output folder itself
    assert sorted(p.name for p in victim.iterdir()) == ["00001.jpg", "00002.jpg"]
    assert extract_frames(video, out / "ok", "{k:05d}.jpg", 1.0, within=out) == 1


@pytest.mark.parametrize("bad", ["..", ".", "a/../../x", "/etc/passwd", "a\x00b", "a\nb", "", "x" * 300, "a//b"])
def test_1_confine_refuses(bad, tmp_path):
    from pdmp_cli.data.confine import UnsafePath, confine

    with pytest.raises(UnsafePath):
        confine(tmp_path, f"frames/{bad}")


def test_1_confine_keeps_ordinary_ids(tmp_path):
    from pdmp_cli.data.confine import confine

    for ok in ("v_ApplyEyeMakeup_g08_c01", "train/1_1/profile/0001.jpg", "a b", "-x_000010", "dots.in.name", "x" * 200):
        assert confine(tmp_path, f"frames/{ok}") == tmp_path / "frames" / ok


# --------------------------------------------------------------------------- 2. no code in the caches


class _Bomb:
    """Unpickling this creates ``marker``: the stand-in for code a planted entry would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(cache_folder: Path, marker: Path) -> int:
    """Overwrite every entry of a diskcache folder with a pickle that would create ``marker``,
    as someone with write access to a shared cache could (diskcache's default Disk pickles)."""
    import diskcache

    with diskcache.Cache(str(cache_folder)) as c:
        keys = [k for k in c.iterkeys()]
        for k in keys:
            c.set(k, _Bomb(marker))
    return len(keys)


def test_2_a_planted_pickle_in_the_features_cache_never_runs(tmp_path, monkeypatch, capsys):
    from pdmp_cli import cache

    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_NOTED", set())  # whatever an earlier test of this process noted
    root = M.make_cremad(tmp_path / "CREMA-D")
    from pdmp_cli.data.check import check_dataset
    from pdmp_cli.data.features import FeatureCache

    assert check_dataset("cremad", root).ok
    marker = tmp_path / "ran"
    assert _plant(tmp_path / "cache" / "features", marker) == 12  # 6 clips x 2 modalities
    fc = FeatureCache()
    assert check_dataset("cremad", root, features=fc).ok  # the pickles are misses: decoded again
    assert not marker.exists()
    assert fc.misses == 12 and fc.hits == 0
    assert capsys.readouterr().err.count("not in pdmp's format") == 1  # one line, not one per entry
    fc2 = FeatureCache()
    check_dataset("cremad", root, features=fc2)  # replaced: hits now
    assert (fc2.hits, fc2.misses) == (12, 0) and not marker.exists()


def test_2_a_planted_pickle_in_the_data_and_analysis_caches_never_runs(tmp_path, monkeypatch, tiny_manifest):
    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    from pdmp_cli.analysis import _cached
    from pdmp_cli.cache import open_cache
    from pdmp_cli.data import load_dataset

    first = load_dataset(str(tiny_manifest))
    marker = tmp_path / "ran"
    assert _plant(tmp_path / "cache" / "data", marker) == 1
    again = load_dataset(str(tiny_manifest))
    assert not marker.exists()
    assert torch_equal(first.train.x["audio"], again.train.x["audio"])

    with open_cache("analysis"):
        pass
    import diskcache

    with diskcache.Cache(str(tmp_path / "cache" / "analysis")) as c:
        c.set("k", _Bomb(marker))
        c.set("damaged", "{not json")
    rec, hit = _cached("k", lambda: {"curves": {"a": [0.5, 0.75]}}, True)
    assert (rec, hit, marker.exists()) == ({"curves": {"a": [0.5, 0.75]}}, False, False)
    assert _cached("k", lambda: 1 / 0, True) == ({"curves": {"a": [0.5, 0.75]}}, True)  # replaced by JSON
    assert _cached("damaged", lambda: {"x": 1}, True) == ({"x": 1}, False)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_2_pdmp_caches_refuse_to_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    from pdmp_cli.cache import open_cache

    with open_cache("features") as c:
        with pytest.raises(TypeError, match="no pickles"):
            c.set("k", {"a": 1})
        c.set("k", b"bytes")
        assert c.get("k") == b"bytes"



def test_2_a_planted_row_naming_a_file_outside_the_cache_neither_reads_nor_deletes_it(tmp_path, monkeypatch):
    """A cache row's ``filename`` column is joined to the cache folder by diskcache: a planted
    ``../../victim`` would be read on a hit and deleted when pdmp replaces the entry."""
    import sqlite3

    from diskcache.core import MODE_BINARY

    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    from pdmp_cli.cache import open_cache

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not the cache's")
    with open_cache("features") as c:
        c.set("k", b"x" * 100_000)  # a file-backed entry: the row has a filename
    db = sqlite3.connect(str(tmp_path / "cache" / "features" / "cache.db"))
    db.execute("UPDATE Cache SET filename = ?, mode = ? WHERE key = ?", ("../../victim.txt", MODE_BINARY, "k"))
    db.commit()
    db.close()
    with open_cache("features") as c:
        assert c.get("k") is None  # not the victim's bytes: a miss
        c.set("k", b"y")  # replacing the entry removes the old row's file
        c.delete("k")
        assert c.get("k") is None
    assert victim.read_bytes() == b"not the cache's"

# --------------------------------------------------------------------------- 3. finite data


def test_3_nan_audio_is_a_problem_of_datasets_check_and_never_cached(tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    root = M.make_cremad(tmp_path / "CREMA-D")
    bad = root / "AudioWAV" / "1002_IEO_NEU_LO.wav"
    wave = np.full(4800, np.nan, np.float32)
    sf.write(str(bad), wave, 16000, subtype="FLOAT")
    result = runner.invoke(app, ["datasets", "check", "cremad", "--data-root", str(root)])
    assert result.exit_code == 1, result.output
    assert "1 non-finite file" in result.output and "1002_IEO_NEU_LO" in result.output
    from pdmp_cli.data.check import check_dataset

    again = check_dataset("cremad", root)  # not cached: found again
    assert again.counts == {"non-finite file": 1}
    assert again.bad_samples == {("train", "1002_IEO_NEU_LO")}


# --------------------------------------------------------------------------- 5. faults: one line, resumable


@pytest.fixture
def tiny_spec(tmp_path, tiny_manifest):
    from pdmp_cli.specs import TrainSpec

    profile = make_profile().save(tmp_path / "tiny-profile.json")

    def spec(**kw) -> TrainSpec:
        base = dict(profile=str(profile), dataset=str(tiny_manifest), encoder="small", epochs=1, batch_size=16, lr=0.01)
        return TrainSpec(**{**base, **kw})

    return spec


def test_5_disk_full_while_saving_a_checkpoint_is_one_line_and_resumable(tiny_spec, tmp_path, monkeypatch):
    import json

    import torch

    from pdmp_cli.errors import PdmpError
    from pdmp_cli.train import checkpoint, run
    from pdmp_cli.train.setup import resume_spec

    real = torch.save

    def full_disk(obj, f, *a, **kw):  # what torch raises for ENOSPC
        if obj.get("epoch") == 2 and "optimizer" in obj:
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                               "data/12: file write failed")
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    d = tmp_path / "run"
    with pytest.raises(PdmpError) as e:
        run(tiny_spec(run_dir=str(d), epochs=2), quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and "cannot save checkpoint" in msg and "PytorchStreamWriter failed writing file" in msg
    assert f"pdmp train --resume {d}" in msg
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_done"] == 2  # measured (as issue 14's test has it)
    monkeypatch.setattr(checkpoint.torch, "save", real)
    done = run(resume_spec(d), resume=True, quiet=True)
    assert done.status == "complete" and done.summary.epochs_done == 2


def test_5_a_corrupt_checkpoint_is_found_before_loading(tiny_spec, tmp_path, monkeypatch):
    import torch

    from pdmp_cli.errors import PdmpError
    from pdmp_cli.train import checkpoint, run
    from pdmp_cli.train.setup import resume_spec

    d = tmp_path / "run"
    run(tiny_spec(run_dir=str(d)), quiet=True)
    last = d / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit, in the middle of a tensor's bytes
    last.write_bytes(bytes(data))
    monkeypatch.setattr(checkpoint.torch, "load", lambda *a, **k: pytest.fail("a damaged checkpoint was loaded"))
    with pytest.raises(PdmpError) as e:
        run(resume_spec(d, {"epochs": 2}), resume=True, quiet=True)
    assert str(e.value).startswith(f"checkpoint {last} is damaged: its sha256 differs from the one recorded")
    last.write_bytes(bytes(data[:-100]))  # cut short
    with pytest.raises(PdmpError, match="is damaged: it is .* bytes, .* were written"):
        run(resume_spec(d, {"epochs": 2}), resume=True, quiet=True)


def test_5_a_run_directory_that_disappears_stops_the_run_and_is_not_recreated(tiny_spec, tmp_path):
    import shutil

    from pdmp_cli.errors import PdmpError
    from pdmp_cli.train import run

    d = tmp_path / "run"

    def vanish(info):
        if d.exists():
            shutil.rmtree(d)

    with pytest.raises(PdmpError) as e:
        run(tiny_spec(run_dir=str(d), epochs=2), quiet=True, on_step=vanish)
    assert "disappeared during the run" in str(e.value) and "--resume" not in str(e.value)
    assert not d.exists()


# --------------------------------------------------------------------------- 6. validation at the edge


@pytest.fixture
def cli_env(tmp_path, tiny_manifest, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["profile", "new", "--dataset", str(tiny_manifest), "--performance-dominant", "visual",
                            "--optimization-dominant", "audio", "--out", "prof.json"])
    assert r.exit_code == 0, r.output
    return ["train", "--profile", "prof.json", "--dataset", str(tiny_manifest), "--dry-run"]


@pytest.mark.parametrize("args, line", [
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--grad-clip", "inf"], "grad_clip must be a finite number, got inf"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
    (["--seed", "4294967296"], "seed must be <= 4294967295, got 4294967296"),
    (["--set", "agm.alpha=1.5"], "--set agm.alpha=1.5 is for method agm, but the run's method is pdmp: it would be "
                                 "ignored; drop it, or pass --method agm"),
    (["--set", "pdmp.others=x", "--set", "pdmp.others=y"], "--set pdmp.others is given twice with different values"),
    (["--method", "ogm-ge", "--set", "ogm-ge.alpha=inf"], "ogm-ge.alpha must be a finite number, got 'inf'"),
])
def test_6_numeric_options_and_method_flags_are_refused_in_one_line(cli_env, args, line):
    r = runner.invoke(app, cli_env + args)
    assert r.exit_code == 2, r.output
    assert line in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("table, line", [
    ("method_args = 5", "method_args must be a table of method name -> its fields, got 5"),
    ("[method_args]\npdmp = 5", "method_args.pdmp must be a table of that method's fields"),
])
def test_6_spec_fields_of_the_wrong_type_are_refused_in_one_line(cli_env, tmp_path, table, line):
    (tmp_path / "s.toml").write_text(table + "\n")
    r = runner.invoke(app, cli_env + ["--spec", str(tmp_path / "s.toml")])
    assert r.exit_code == 2 and line in r.output and "Traceback" not in r.output, r.output


def test_6_analyze_seeds_and_fractions_are_checked_before_anything_runs(tiny_manifest):
    r = runner.invoke(app, ["analyze", "--dataset", str(tiny_manifest), "--seeds=-1,2", "--epochs", "1"])
    assert r.exit_code == 2 and "seeds: each seed must be in [0, 2**32), got -1" in r.output, r.output
    r = runner.invoke(app, ["analyze", "--dataset", str(tiny_manifest), "--subset", "nan", "--epochs", "1"])
    assert r.exit_code == 2 and "must be a finite number, got nan" in r.output, r.output


def test_6_a_decompression_bomb_is_one_problem_naming_the_sample(tmp_path, monkeypatch):
    from PIL import Image

    from pdmp_cli.data.check import check_dataset

    root = M.make_cremad(tmp_path / "CREMA-D")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the frames (40x32) are then past 2x the guard
    r = check_dataset("cremad", root)
    assert r.counts == {"unreadable file": 6}
    assert "DecompressionBombError" in r.first(1) and "(sample 1004_DFA_HAP_XX)" in r.first(1)


# --------------------------------------------------------------------------- 3. analyze stops on a non-finite loss


def test_3_analyze_stops_on_a_non_finite_loss_and_writes_nothing(tiny_manifest, tmp_path):
    from pdmp_cli import analysis
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.specs import AnalyzeSpec

    out = tmp_path / "p.json"
    spec = AnalyzeSpec(dataset=str(tiny_manifest), encoder="small", epochs=2, early_epochs=1, subset=[1.0], lr=1e30,
                       out=str(out), jobs=1, probe_epochs=0)
    with pytest.raises(PdmpError) as e:
        analysis.run(spec, progress=False)
    assert "training loss became inf/nan" in str(e.value) and "try a smaller --lr than 1e+30" in str(e.value)
    assert "gamma" not in str(e.value)
    assert not out.exists()


def test_3_weights_far_past_normal_are_a_warning_not_a_clean_complete(tiny_spec, tmp_path):
    import json

    import torch

    from pdmp_cli.train import run

    d = tmp_path / "run"

    def inflate(info):  # what a huge gamma_p does to a modulated encoder's BatchNorm before it overflows
        for name, buf in info.model.named_buffers():
            if name.endswith("running_var"):
                buf.fill_(1e12)
                break

    done = run(tiny_spec(run_dir=str(d)), quiet=True, on_step=inflate)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["message"].startswith("warning: after epoch 1, weights or buffers far past normal magnitudes")
    assert "running_var 1e+12" in summary["message"] and done.summary.message == summary["message"]


# --------------------------------------------------------------------------- 4. no overwriting


def test_4_analyze_does_not_overwrite_the_profile_of_another_dataset_or_setting(tmp_path, monkeypatch):
    """Two datasets laid out as docs/datasets.md shows (``<folder>/manifest.toml``) in folders of the same
    name are both named ``my-data``: each gets its own default profile (name + data identity), and
    an explicit --out never replaces another result without --force."""
    from conftest import TINY_SYNTHETIC

    from pdmp_cli.profile import Profile

    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "one" / "my-data", tmp_path / "two" / "my-data"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "manifest.toml").write_text(TINY_SYNTHETIC)
    (b / "manifest.toml").write_text(TINY_SYNTHETIC.replace("seed = 0", "seed = 1"))
    base = ["analyze", "--epochs", "1", "--early-epochs", "1", "--subset", "1.0", "--probe-epochs", "0", "--jobs", "1"]
    for m in (a, b):
        r = runner.invoke(app, base + ["--dataset", str(m / "manifest.toml")])
        assert r.exit_code == 0, r.output
    written = sorted(p.name for p in (tmp_path / "profiles").glob("*.json") if not p.name.endswith(".spec.json"))
    assert len(written) == 2 and all(re.fullmatch(r"my-data-[0-9a-f]{8}\.json", n) for n in written)
    for n in written:
        assert n == f"my-data-{Profile.load(tmp_path / 'profiles' / n).dataset_identity[:8]}.json"

    out = ["--out", "shared.json"]
    r = runner.invoke(app, base + ["--dataset", str(a / "manifest.toml")] + out)
    assert r.exit_code == 0, r.output
    first = (tmp_path / "shared.json").read_text()
    r = runner.invoke(app, base + ["--dataset", str(b / "manifest.toml")] + out)
    assert r.exit_code == 2 and "shared.json already holds the profile of dataset my-data (data identity" in r.output
    assert "pass --force to replace it, or --out another path such as --out shared-" in r.output
    assert (tmp_path / "shared.json").read_text() == first
    r = runner.invoke(app, base + ["--dataset", str(a / "manifest.toml"), "--lr", "0.05"] + out)
    assert r.exit_code == 2 and "measured with other settings (lr 0.01 -> 0.05)" in r.output, r.output
    r = runner.invoke(app, base + ["--dataset", str(a / "manifest.toml"), "--lr", "0.05", "--dry-run"] + out)
    assert r.exit_code == 2 and "measured with other settings (lr 0.01 -> 0.05)" in r.output, r.output  # as the run
    r = runner.invoke(app, base + ["--dataset", str(a / "manifest.toml")] + out)  # the same again: a rerun
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, base + ["--dataset", str(b / "manifest.toml"), "--force"] + out)
    assert r.exit_code == 0 and (tmp_path / "shared.json").read_text() != first


# --------------------------------------------------------------------------- 7. advice that is true


def test_7_divergence_advice_names_the_lr_and_a_new_run_and_never_calls_a_damaged_checkpoint_good(tiny_spec, tmp_path):
    import torch

    from pdmp_cli.train import run
    from pdmp_cli.train.health import kept_note, remedy

    spec = tiny_spec(gamma_p=10)
    assert remedy(spec) == "try a new run with a smaller --gamma-p than 10, a smaller --lr than 0.01 or --grad-clip 1.0"
    d = tmp_path / "run"
    run(tiny_spec(run_dir=str(d)), quiet=True)
    last = d / "checkpoints" / "last.pt"
    assert kept_note(d, 1) == f"the last good checkpoint ({last}, 1 epochs done) is kept"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 1
    last.write_bytes(bytes(data))
    assert kept_note(d, 1) == f"{last} no longer matches what was saved (damaged): no good checkpoint is left"
    assert torch.load(last, weights_only=True)  # it still loads: only the record tells


def test_6_a_manifest_setting_of_inf_or_nan_is_one_line(tmp_path, tiny_manifest):
    bad = tmp_path / "inf.toml"
    bad.write_text(tiny_manifest.read_text().replace("reliability = 0.6", "reliability = inf"))
    r = runner.invoke(app, ["datasets", "check", str(bad)])
    assert r.exit_code == 2 and r.output.strip() == f"error: manifest {bad}: audio.reliability must be a finite number, got inf"
    bad.write_text(tiny_manifest.read_text().replace("lr = 0.01", "lr = nan"))
    r = runner.invoke(app, ["datasets", "check", str(bad)])
    assert r.exit_code == 2 and "defaults.lr must be a finite number, got nan" in r.output


def test_7_the_validation_fraction_advice_points_the_right_way():
    from pdmp_cli.data.split import carve
    from pdmp_cli.errors import PdmpError

    with pytest.raises(PdmpError, match="use a smaller --val-fraction"):
        carve([0, 1, 2] * 20, 0.99, 0)  # one training sample left: larger would make it worse
    with pytest.raises(PdmpError, match="use a larger --val-fraction"):
        carve([0, 1, 2] * 20, 0.01, 0)
    with pytest.raises(PdmpError, match="give every class at least two training samples"):
        carve([0, 0, 0, 1], 0.5, 0)


@pytest.mark.parametrize("body, line", [
    ("seeds = {a = 1}", "seeds: must be a list of integers such as [0, 1, 2], got {'a': 1}"),
    ("seeds = [true]", "seeds: must be a list of integers such as [0, 1, 2], got [True]"),
    ("lr = true", "lr must be a number, got True"),
])
def test_6_analyze_spec_fields_of_the_wrong_type_are_one_line(tiny_manifest, tmp_path, body, line):
    (tmp_path / "s.toml").write_text(body + "\n")
    r = runner.invoke(app, ["analyze", "--dataset", str(tiny_manifest), "--spec", str(tmp_path / "s.toml"), "--epochs", "1"])
    assert r.exit_code == 2 and r.output.strip() == f"error: {line}", r.output


def test_6_one_seed_in_a_spec_file_is_a_list_of_one(tiny_manifest):
    from pdmp_cli.specs import AnalyzeSpec

    assert AnalyzeSpec(dataset=str(tiny_manifest), seeds=5).seeds == [5]


def test_6_a_flag_the_run_would_never_read_is_refused(cli_env, tiny_manifest):
    r = runner.invoke(app, cli_env + ["--lr-min", "0.001"])
    assert r.exit_code == 2 and r.output.strip() == (
        "error: --lr-min is read only with --lr-schedule cosine, and this run's lr_schedule is 'none': it would be "
        "ignored; drop it, or add --lr-schedule cosine")
    r = runner.invoke(app, ["analyze", "--dataset", str(tiny_manifest), "--patience", "3", "--epochs", "2", "--dry-run"])
    assert r.exit_code == 2 and "--patience is read only with --epochs auto" in r.output, r.output


def test_6_a_path_longer_than_the_system_allows_is_a_problem_not_a_traceback(sandbox):
    from pdmp_cli.data.prepare import prepare_dataset

    root, videos, manifest, _ = sandbox
    deep = "/".join(["d" * 250] * 18)  # every name within the limit, the whole path past PATH_MAX (4096)
    _write_list(root / "train.csv", ["g1", deep])
    _write_list(root / "test.csv", ["g2"])
    r = runner.invoke(app, ["datasets", "check", str(manifest), "--quick"])
    assert r.exit_code == 1 and "unreadable file" in r.output and "Traceback" not in r.output, r.output
    result = prepare_dataset(manifest, videos)
    assert [sid for sid, _ in result.failed] == [deep] and "File name too long" in result.failed[0][1]


def test_5_any_other_error_mid_run_leaves_the_summary_resumable_not_running(tiny_spec, tmp_path):
    import json

    from pdmp_cli.train import run

    d = tmp_path / "run"

    def oom(info):
        if info.epoch == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        run(tiny_spec(run_dir=str(d), epochs=2), quiet=True, on_step=oom)
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["message"] == (
        f"the run stopped: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB; "
        f"continue with `pdmp train --resume {d}`")


def test_1_a_frame_pattern_reaching_out_of_the_folder_deletes_nothing_there(tmp_path):
    from pdmp_cli.data.prepare import extract_frames

    video = M.make_video(tmp_path / "v.mp4", seconds=1.0)
    out = tmp_path / "root" / "frames"
    M.write_frames(out / "clip", 3)
    neighbour = M.write_image(out / "keep.jpg")  # beside the sample's folder: '../*.jpg' matches it
    assert extract_frames(video, out / "clip", "{k:05d}.jpg", 1.0, pattern="../*.jpg", within=out) == 1
    assert neighbour.is_file()


@pytest.mark.parametrize("pattern", ["../shared/{id}.wav", "/data/audio/{id}.wav"])
def test_1_a_manifest_path_pattern_that_leaves_the_root_is_refused_when_read(tmp_path, pattern):
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.errors import PdmpError

    m = tmp_path / "m.toml"
    m.write_text(MANIFEST.format(root=tmp_path).replace('path = "audio/{id}.wav"', f'path = "{pattern}"'))
    with pytest.raises(PdmpError, match="leads outside the data root; write it relative to the root"):
        load_manifest(m)


def test_5_a_run_whose_spec_json_holds_no_spec_is_one_line(tmp_path):
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.train.setup import resume_spec

    (tmp_path / "spec.json").write_text("[1, 2]")
    with pytest.raises(PdmpError, match=r"spec.json holds no spec \(a JSON list\); the run cannot be resumed"):
        resume_spec(tmp_path)


def test_2_the_foreign_entry_line_is_said_once_across_processes(tmp_path, monkeypatch, capsys):
    from pdmp_cli import cache

    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_NOTED", set())
    cache.note_foreign("features")
    monkeypatch.setattr(cache, "_NOTED", set())  # what a DataLoader worker or a pool process starts with
    cache.note_foreign("features")
    assert capsys.readouterr().err.count("not in pdmp's format") == 1


def test_1_an_id_with_a_newline_never_breaks_a_problem_line():
    from pdmp_cli.data.check import Problem

    p = Problem("unknown label", "train", Path("l.csv"), "a\nb", "label 'x' is not one of the 2 classes", 3)
    assert p.describe() == "unknown label [train] l.csv:3 (sample 'a\\nb'): label 'x' is not one of the 2 classes"


def test_5_a_save_cut_off_between_record_and_rename_still_verifies(tmp_path, monkeypatch):
    import json

    import torch

    from pdmp_cli import fsutil
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.train import checkpoint

    p = tmp_path / "last.pt"
    checkpoint.save(p, {"x": torch.ones(3)})
    real = os.replace

    def cut_after_record(src, dst):  # the record lands, then the process dies before the checkpoint's rename
        if str(dst).endswith(".pt"):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", cut_after_record)
    for _ in range(2):  # twice: the second record must still name the file in place
        with pytest.raises(PdmpError):
            checkpoint.save(p, {"x": torch.zeros(5)})
    monkeypatch.setattr(fsutil.os, "replace", real)
    assert json.loads(checkpoint.record_path(p).read_text())["size"] == p.stat().st_size  # same size: no help
    assert checkpoint.load(p)["x"].tolist() == [1.0, 1.0, 1.0]
    checkpoint.record_path(p).write_text("[]")
    with pytest.raises(PdmpError, match="is unreadable; delete the record to load the checkpoint unchecked"):
        checkpoint.load(p)


def test_6_tune_refuses_a_set_for_a_method_it_does_not_tune(tmp_path, tiny_manifest, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["profile", "new", "--dataset", str(tiny_manifest), "--performance-dominant", "visual",
                            "--optimization-dominant", "audio", "--out", "prof.json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["tune", "--profile", "prof.json", "--dataset", str(tiny_manifest), "--set", "agm.alpha=1",
                            "--gamma-p", "1,10", "--tune-dir", str(tmp_path / "t")])
    assert r.exit_code == 2 and "--set agm.alpha=1 is for method agm, but the run's method is pdmp" in r.output
    assert not (tmp_path / "t").exists()


@pytest.mark.slow  # two spawned processes import torch: ~12 s on the 2-core machine
def test_7_a_non_finite_loss_in_a_parallel_analysis_keeps_its_own_remedy(tiny_manifest, tmp_path):
    from pdmp_cli import analysis
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.specs import AnalyzeSpec

    spec = AnalyzeSpec(dataset=str(tiny_manifest), encoder="small", epochs=2, early_epochs=1, subset=[1.0], lr=1e30,
                       out=str(tmp_path / "p.json"), jobs=2, probe_epochs=0)
    with pytest.raises(PdmpError) as e:
        analysis.run(spec, progress=False)
    assert "training loss became inf/nan" in str(e.value) and str(e.value).endswith("try a smaller --lr than 1e+30")
    assert "--jobs 1" not in str(e.value)  # the message is whole already: no advice to rerun for it


def test_2_a_planted_json_record_of_the_wrong_shape_is_a_miss_not_a_crash(tmp_path, monkeypatch, tiny_manifest):
    import diskcache

    from pdmp_cli import analysis
    from pdmp_cli.specs import AnalyzeSpec

    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    spec = AnalyzeSpec(dataset=str(tiny_manifest), encoder="small", epochs=1, early_epochs=1, subset=[1.0],
                       out=str(tmp_path / "p.json"), jobs=1, probe_epochs=1)
    first = analysis.run(spec, progress=False, force=True)
    with diskcache.Cache(str(tmp_path / "cache" / "analysis")) as c:
        keys = list(c.iterkeys())
        for k in keys:
            c.set(k, '{"curves": {"audio": "x"}, "fused_curve": 5}')  # valid JSON, not pdmp's record
    again = analysis.run(spec, progress=False, force=True)
    assert len(keys) == 2 and not again[0].cached  # measured again, and equal
    assert again[0].profile.results == first[0].profile.results


def test_2_a_cache_database_with_foreign_settings_is_one_line(tmp_path, monkeypatch):
    """diskcache passes the Settings table's disk_* rows to the Disk class and its eviction policy
    to a lookup: a planted or foreign row is one line naming the cache, not a TypeError/KeyError."""
    import sqlite3

    from pdmp_cli.cache import open_cache
    from pdmp_cli.errors import PdmpError

    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    for row in (("disk_evil", 1), ("eviction_policy", "no-such-policy")):
        with open_cache("features"):
            pass
        db = sqlite3.connect(str(tmp_path / "cache" / "features" / "cache.db"))
        db.execute("INSERT OR REPLACE INTO Settings VALUES (?, ?)", row)
        db.commit()
        db.close()
        with pytest.raises(PdmpError, match=r"cannot open the cache in .*features .*; delete that folder"):
            open_cache("features")
        import shutil

        shutil.rmtree(tmp_path / "cache" / "features")


def test_1_prepare_force_never_replaces_another_modalitys_folder(tmp_path, monkeypatch):
    """Frames laid out as '{id}' (no folder of their own): the output folder is the data root, and
    an id 'audio' names the audio modality's folder; --force must not delete it."""
    from pdmp_cli.data.prepare import prepare_dataset

    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "root"
    M.write_audio(root / "audio" / "g1.wav", 0.2)
    M.write_frames(root / "g1", 2)
    videos = tmp_path / "videos"
    M.make_video(videos / "clip.mp4", seconds=1.0)
    _write_list(root / "train.csv", ["g1", "audio"])
    _write_list(root / "test.csv", ["g1"])
    manifest = tmp_path / "evil.toml"
    text = MANIFEST.format(root=root).replace('path = "frames/{id}"', 'path = "{id}"').replace('pattern = "*.jpg"\n', "")
    manifest.write_text(text)
    keep = M.write_audio(root / "audio" / "not-listed.wav", 0.2)  # a file no sample of this list rewrites
    keep_hash = hashlib.sha256(keep.read_bytes()).hexdigest()
    done = prepare_dataset(manifest, videos, force=True)
    assert hashlib.sha256(keep.read_bytes()).hexdigest() == keep_hash  # the audio folder was not replaced
    assert sorted(p.name for p in (root / "audio").iterdir()) == ["g1.wav", "not-listed.wav"]  # no frames in it
    assert [i for i, _ in done.failed] == ["audio"] and "audio modality" in done.failed[0][1], done
