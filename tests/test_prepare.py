"""pdmp prepare: real videos (written with PyAV) -> frame folders + audio files as the manifest
expects; resumable, skips finished samples, reports missing and corrupt videos."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from data import miniature as M
from pdmp_cli.cli.app import app
from pdmp_cli.data import load_dataset
from pdmp_cli.data.prepare import prepare_dataset
from pdmp_cli.errors import PdmpError


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for k, vid in enumerate(["v1", "v2", "v3"]):  # no v0: its segment is empty
        M.make_video(d / f"{vid}.mp4", seconds=3.0, freq=300 + 200 * k)
    return d


def _ave_lists(root):
    """As released (CRLF), with trainSet.txt line 64's kind of zero-length segment (v0: never
    prepared, never counted missing) and a train video also in valSet.txt (kept in val only)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "trainSet.txt").write_bytes(b"Bark&v1&good&1&3\r\nChurch bell&v0&good&0&0\r\nChurch bell&v2&good&0&2\r\n")
    (root / "valSet.txt").write_bytes(b"Church bell&v2&good&0&2\r\n")
    (root / "testSet.txt").write_bytes(b"Bark&v3&good&0&3\r\n")
    return root


def test_ave_segments_become_frames_and_audio(videos, tmp_path):
    root = _ave_lists(tmp_path / "AVE")
    r = prepare_dataset("ave", videos, root)
    assert (sorted(r.done), r.skipped, r.missing, r.failed) == (["v1", "v2", "v3"], 0, [], [])
    # v1's segment is [1, 3) s at 1 fps: frames from t = 1 s and 2 s (video frames 10 and 20: values 50, 100)
    frames = sorted((root / "frames" / "v1").iterdir())
    assert [f.name for f in frames] == ["00001.jpg", "00002.jpg"]
    assert [int(np.asarray(Image.open(f))[5, 5, 0]) for f in frames] == pytest.approx([50, 100], abs=3)
    assert len(list((root / "frames" / "v3").iterdir())) == 3
    # audio: mono, at the manifest's 16 kHz, cut to the segment (2 s)
    info = sf.info(root / "audio" / "v1.wav")
    assert (info.samplerate, info.channels) == (16000, 1)
    assert abs(info.frames - 32000) < 1100  # aac frames: within one frame of the cut
    wave, _ = sf.read(root / "audio" / "v2.wav")
    peak = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)
    assert abs(peak - 500) < 5  # v2 carries its 500 Hz tone
    # and the dataset loads in its documented shapes
    bundle = load_dataset("ave", data_root=root)
    x, _ = bundle.test[0]
    assert tuple(x["audio"].shape) == (1, 257, 1001) and tuple(x["visual"].shape) == (3, 3, 224, 224)


def test_rerun_skips_finished_and_resumes_unfinished(videos, tmp_path):
    root = _ave_lists(tmp_path / "AVE")
    prepare_dataset("ave", videos, root)
    stamp = (root / "audio" / "v1.wav").stat().st_mtime_ns
    again = prepare_dataset("ave", videos, root)
    assert (again.done, again.skipped) == ([], 3)
    assert (root / "audio" / "v1.wav").stat().st_mtime_ns == stamp
    # an interrupted run: v2's frames only half written (.partial), its audio never written
    shutil.rmtree(root / "frames" / "v2")
    (root / "frames" / "v2.partial").mkdir()
    (root / "frames" / "v2.partial" / "00001.jpg").write_bytes(b"half")
    (root / "audio" / "v2.wav").unlink()
    resumed = prepare_dataset("ave", videos, root)
    assert (resumed.done, resumed.skipped) == (["v2"], 2)
    assert not (root / "frames" / "v2.partial").exists()
    assert len(list((root / "frames" / "v2").iterdir())) == 2
    forced = prepare_dataset("ave", videos, root, force=True)
    assert (len(forced.done), forced.skipped) == (3, 0)


def test_missing_and_corrupt_videos_are_reported(videos, tmp_path):
    root = _ave_lists(tmp_path / "AVE")
    vids = tmp_path / "vids"
    vids.mkdir()
    shutil.copy(videos / "v1.mp4", vids / "v1.mp4")
    (vids / "v2.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    r = prepare_dataset("ave", vids, root)
    assert r.done == ["v1"] and r.missing == ["v3"]
    assert [sid for sid, _ in r.failed] == ["v2"] and "v2.mp4" in r.failed[0][1]
    assert not (root / "frames" / "v2").exists() and not (root / "frames" / "v2.partial").exists()
    assert r.summary().startswith("ave: prepared 1, skipped 0 already done, 1 videos missing, 1 failed")


def test_ucf101_frames_follow_the_pattern_and_flow_is_left_to_a_tool(tmp_path):
    root = tmp_path / "UCF101"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 Archery\n2 Bowling\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\nBowling/v_Bowling_g01_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g02_c01.avi\n")
    vids = tmp_path / "UCF-101"
    for c, g in (("Archery", "g01"), ("Bowling", "g01"), ("Archery", "g02")):
        M.make_video(vids / c / f"v_{c}_{g}_c01.avi", seconds=1.0, audio=False)
    r = prepare_dataset("ucf101", vids, root)
    assert len(r.done) == 3 and r.not_made == ["flow (flow)"]
    folder = root / "rawframes" / "Archery" / "v_Archery_g01_c01"  # mmaction2's nesting
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"img_{k:05d}.jpg" for k in range(1, 11)]  # 1 s at the manifest's 10 fps
    # --force redoes the RGB frames and leaves the flow frames (made by another tool) alone
    for k in (1, 2):
        M.write_image(folder / f"flow_x_{k:05d}.jpg", 100, mode="L")
        M.write_image(folder / f"flow_y_{k:05d}.jpg", 150, mode="L")
    (folder / "img_00011.jpg").write_bytes(b"stale")  # from an earlier, longer extraction
    r = prepare_dataset("ucf101", vids, root, force=True)
    assert len(r.done) == 3
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"flow_x_{k:05d}.jpg" for k in (1, 2)] + [f"flow_y_{k:05d}.jpg" for k in (1, 2)] + \
        [f"img_{k:05d}.jpg" for k in range(1, 11)]


def test_cli_prepare(videos, tmp_path):
    root = _ave_lists(tmp_path / "AVE")
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", "ave", "--videos", str(videos), "--data-root", str(root)])
    assert res.exit_code == 0, res.output
    assert "ave: prepared 3, skipped 0 already done, 0 videos missing, 0 failed" in res.output
    assert "2 list rows left out by the manifest's rules" in res.output  # v0's empty segment, v2's train copy
    res = runner.invoke(app, ["prepare", "ave", "--videos", str(videos), "--data-root", str(root)])
    assert "prepared 0, skipped 3 already done" in res.output
    res = runner.invoke(app, ["prepare", "cefa", "--videos", str(videos), "--data-root", str(root)])
    assert res.exit_code == 2
    assert "dataset cefa has no [prepare] table" in res.output and "Traceback" not in res.output


def test_prepare_needs_the_lists(videos, tmp_path):
    (tmp_path / "AVE").mkdir()
    with pytest.raises(PdmpError, match="lists, which are missing: .*trainSet.txt"):
        prepare_dataset("ave", videos, tmp_path / "AVE")
