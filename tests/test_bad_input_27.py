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
from pathlib import Path

import numpy as np
import pytest
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
