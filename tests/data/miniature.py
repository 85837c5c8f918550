"""Miniature datasets in each real layout, written with real files (wav/flac via soundfile,
jpg/png via PIL), small enough to load in well under a second.

Frames carry their index as pixel value (frame k of a clip is filled with ``FRAME_VALUE(k)``)
so tests can tell which frames were picked. Each ``make_*`` returns the data root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image


def FRAME_VALUE(k: int) -> int:
    return 20 + 20 * k


def write_audio(path: Path, seconds: float = 0.5, sr: int = 16000, freq: float = 440.0, seed: int = 0) -> Path:
    """A tone in a little noise. The suffix picks the format (.wav, .flac, .mp3, .ogg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(sr * seconds))) / sr
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    sf.write(str(path), wave.astype(np.float32), sr)
    return path


def write_image(path: Path, value: int | tuple = 128, size=(40, 32), mode: str = "RGB", seed: int | None = None) -> Path:
    """A flat image (``value``) or, with ``seed``, random pixels. Format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    c = 3 if mode == "RGB" else 1
    if seed is None:
        arr = np.full((h, w, c), value, dtype=np.uint8)
    else:
        arr = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode).save(path, quality=95)
    return path


def write_frames(folder: Path, n: int, name: str = "{k:05d}.jpg", size=(40, 32)) -> Path:
    """``n`` frames named ``name`` (k from 1); frame k is flat at FRAME_VALUE(k - 1)."""
    for k in range(1, n + 1):
        write_image(folder / name.format(k=k), FRAME_VALUE(k - 1), size)
    return folder


# ---------------------------------------------------------------------------------- layouts

CREMAD_TRAIN = [("1001_DFA_ANG_XX", "ANG"), ("1001_DFA_HAP_XX", "HAP"), ("1002_IEO_NEU_LO", "NEU"), ("1003_TIE_ANG_XX", "ANG")]
CREMAD_TEST = [("1004_DFA_HAP_XX", "HAP"), ("1005_IEO_NEU_LO", "NEU")]


def make_cremad(root: Path, seconds: float = 0.3, frames: int = 2, header: bool = False) -> Path:
    """CREMA-D as OGM-GE lays it out: train.csv/test.csv (no header, CRLF, as in OGM-GE's repo),
    AudioWAV/*.wav (16 kHz), Image-01-FPS/<clip>/. ``header``: D&R's copies ("name,label" first)."""
    for name, rows in (("train.csv", CREMAD_TRAIN), ("test.csv", CREMAD_TEST)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        head = "name,label\r\n" if header else ""
        (root / name).write_bytes((head + "".join(f"{c},{e}\r\n" for c, e in rows)).encode())
    for i, (clip, _) in enumerate(CREMAD_TRAIN + CREMAD_TEST):
        write_audio(root / "AudioWAV" / f"{clip}.wav", seconds, 16000, 300 + 50 * i, seed=i)
        write_frames(root / "Image-01-FPS" / clip, frames)
    return root


# AVE's release quirks, in miniature: a video annotated twice in trainSet (same segment, another
# label), a train video also in testSet and one also in valSet, and trainSet.txt line 64's
# zero-length segment ("Church bell&VWi2ENBuTbw&good&0&0").
AVE_TRAIN = [("Church bell", "RUhOCu3LNXM", 0, 10), ("Bark", "aaa111", 2, 6), ("Male speech, man speaking", "bbb222", 0, 4),
             ("Bark", "RUhOCu3LNXM", 0, 10), ("Church bell", "VWi2ENBuTbw", 0, 0), ("Bark", "ccc333", 1, 5),
             ("Church bell", "eee555", 2, 8)]
AVE_VAL = [("Bark", "eee555", 2, 8), ("Male speech, man speaking", "fff666", 0, 3)]
AVE_TEST = [("Bark", "ccc333", 1, 5), ("Church bell", "ddd444", 3, 9)]
AVE_KEPT_TRAIN = ["RUhOCu3LNXM", "aaa111", "bbb222"]  # duplicates = "first"; labels 0, 2, 1


def make_ave(root: Path) -> Path:
    """trainSet/valSet/testSet.txt as the release has them: '&'-separated, CRLF."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("trainSet.txt", AVE_TRAIN), ("valSet.txt", AVE_VAL), ("testSet.txt", AVE_TEST)):
        (root / name).write_bytes("".join(f"{c}&{v}&good&{s}&{e}\r\n" for c, v, s, e in rows).encode())
    vids = dict.fromkeys(v for _, v, s, e in AVE_TRAIN + AVE_VAL + AVE_TEST if e > s)
    for i, vid in enumerate(vids):
        write_audio(root / "audio" / f"{vid}.wav", 0.4, 16000, 400 + 40 * i, seed=i)
        write_frames(root / "frames" / vid, 4)
    return root


# OGM-GE's Kinetics-Sounds lists (data/KineticSound/my_train.txt, my_test.txt): "<clip>,10,<label>",
# no header, CRLF; train clip names padded, test names not (lines copied from the release).
KS_TRAIN = [("--4-0ihtnBU_000058_000068", 4), ("8qaPxB8EWdk_000088_000098", 2), ("9zldxYuusdQ_000002_000012", 22)]
KS_TEST = [("-3Mwkq-7TV4_2", 23), ("0HQsAGUnQ_0_6", 4)]


def make_ks(root: Path, balancebenchmark: bool = False) -> Path:
    """``balancebenchmark``: its space-separated form of the same lists instead."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("my_train.txt", KS_TRAIN), ("my_test.txt", KS_TEST)):
        line = "{c} 10 {y}\n" if balancebenchmark else "{c},10,{y}\r\n"
        (root / name).write_bytes("".join(line.format(c=c, y=y) for c, y in rows).encode())
    for i, (clip, _) in enumerate(KS_TRAIN + KS_TEST):
        write_audio(root / "audio" / f"{clip}.wav", 0.4, 16000, 500 + 30 * i, seed=i)
        write_frames(root / "frames" / clip, 3)
    return root


VGG_ROWS = [("---g-f_I2yQ", 1, "people marching", "train"), ("--0PQM4-hqg", 30, "waterfall burbling", "train"),
            ("--56QUhyDQM", 185, '"male speech, man speaking"', "train"), ("-0BIyqJj9ZU", 30, "people marching", "train"),
            ("-0jeONf82dE", 21, '"male speech, man speaking"', "test"), ("-0xaDqBp2hE", 0, "waterfall burbling", "test")]


def make_vggsound(root: Path, padded: bool = True) -> Path:
    """One vggsound.csv for both splits; 'male speech, man speaking' is quoted for its comma.
    Clips named <ytid>_<start:06d> (``padded``) or <ytid>_<start> (OGM-GE's / BalanceBenchmark's scripts)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "vggsound.csv").write_text("".join(f"{yt},{s},{lab},{sp}\n" for yt, s, lab, sp in VGG_ROWS))
    for i, (yt, s, _, _) in enumerate(VGG_ROWS):
        clip = f"{yt}_{s:06d}" if padded else f"{yt}_{s}"
        write_audio(root / "audio" / f"{clip}.wav", 0.3, 16000, 600 + 30 * i, seed=i)
        write_frames(root / "frames" / clip, 3)
    return root


UCF_CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
UCF_TRAIN = [("ApplyEyeMakeup", "g08_c01"), ("ApplyLipstick", "g08_c02"), ("Archery", "g09_c01")]
UCF_TEST = [("ApplyEyeMakeup", "g01_c01"), ("Archery", "g01_c03")]


def ucf_id(cls: str, g: str) -> str:
    return f"v_{cls}_{g}"


def make_ucf101(root: Path, n_frames: int = 6, uv: bool = False) -> Path:
    """mmaction2's rawframes/<Class>/<stem>/{img,flow_x,flow_y}_00001.jpg; ``uv``: flow instead in
    separate two-stream trees tvl1_flow/{u,v}/<stem>/frame000001.jpg."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{k} {c}\n" for k, c in enumerate(UCF_CLASSES, start=1)))
    (lists / "trainlist01.txt").write_text(
        "".join(f"{c}/{ucf_id(c, g)}.avi {UCF_CLASSES.index(c) + 1}\n" for c, g in UCF_TRAIN))
    (lists / "testlist01.txt").write_text("".join(f"{c}/{ucf_id(c, g)}.avi\n" for c, g in UCF_TEST))
    for c, g in UCF_TRAIN + UCF_TEST:
        d = root / "rawframes" / c / ucf_id(c, g)
        write_frames(d, n_frames, "img_{k:05d}.jpg")
        for k in range(1, n_frames + 1):
            if uv:
                write_image(root / "tvl1_flow" / "u" / ucf_id(c, g) / f"frame{k:06d}.jpg", 100 + k, mode="L")
                write_image(root / "tvl1_flow" / "v" / ucf_id(c, g) / f"frame{k:06d}.jpg", 150 + k, mode="L")
            else:
                write_image(d / f"flow_x_{k:05d}.jpg", 100 + k, mode="L")
                write_image(d / f"flow_y_{k:05d}.jpg", 150 + k, mode="L")
    return root


# CASIA-SURF CeFA as released: phase1/4@1_train.txt one frame per line, phase1/4@1_dev_ref.txt and
# phase2/4@1_test_res.txt one video per line (test unlabelled; labels in 4@1_test_ref.txt).
CEFA_TRAIN = [("1_000_1_1_1", 1, 2), ("1_000_1_2_2", 0, 2)]  # (video, label, frames listed)
CEFA_DEV = [("003000", 1, 3), ("003001", 0, 2)]  # (video, label, frames in its folder)
CEFA_TEST = [("000001", 0, 2), ("000002", 1, 1)]


def _cefa_video(folder: Path, n: int, seed: int) -> None:
    for k in range(1, n + 1):
        write_image(folder / "profile" / f"{k:04d}.jpg", seed=seed + k)
        write_image(folder / "depth" / f"{k:04d}.jpg", 90 + k)  # depth/IR saved as 3-channel jpgs, read as grayscale
        write_image(folder / "ir" / f"{k:04d}.jpg", 160 + k)


def make_cefa(root: Path) -> Path:
    p1, p2 = root / "phase1", root / "phase2"
    p1.mkdir(parents=True, exist_ok=True)
    p2.mkdir(parents=True, exist_ok=True)
    (p1 / "4@1_train.txt").write_text("".join(
        f"train/{v}/profile/{k:04d}.jpg {y}\n" for v, y, n in CEFA_TRAIN for k in range(1, n + 1)))
    (p1 / "4@1_dev_ref.txt").write_text("".join(f"dev/{v} {y}\n" for v, y, _ in CEFA_DEV))
    (p1 / "4@1_dev_res.txt").write_text("".join(f"dev/{v}\n" for v, _, _ in CEFA_DEV))
    (p2 / "4@1_test_res.txt").write_text("".join(f"test/{v}\n" for v, _, _ in CEFA_TEST))
    (p2 / "4@1_test_ref.txt").write_text("".join(f"test/{v} {y}\n" for v, y, _ in CEFA_TEST))
    for i, (v, _, n) in enumerate(CEFA_TRAIN):
        _cefa_video(p1 / "train" / v, n, 10 * i)
    for i, (v, _, n) in enumerate(CEFA_DEV):
        _cefa_video(p1 / "dev" / v, n, 100 + 10 * i)
    for i, (v, _, n) in enumerate(CEFA_TEST):
        _cefa_video(p2 / "test" / v, n, 200 + 10 * i)
    return root


CUSTOM_TRAIN = [("clip01", "cat"), ("clip02", "dog"), ("clip03", "cat"), ("clip04", "dog")]
CUSTOM_TEST = [("clip05", "cat"), ("clip06", "dog")]
CUSTOM_VAL = [("clip07", "dog"), ("clip08", "cat")]  # val.csv: read only by a manifest with [splits.val]


def make_custom(root: Path, visual: str = "image", int_labels: bool = False, audio_ext: str = ".wav") -> Path:
    """docs/datasets.md's layout: audio/<id>.wav, visual/<id>.png (or visual/<id>/ frames), train.csv/val.csv/test.csv."""
    root.mkdir(parents=True, exist_ok=True)
    names = ["cat", "dog"]
    for fname, rows in (("train.csv", CUSTOM_TRAIN), ("test.csv", CUSTOM_TEST), ("val.csv", CUSTOM_VAL)):
        body = "".join(f"{i},{names.index(lab) if int_labels else lab}\n" for i, lab in rows)
        (root / fname).write_text("id,label\n" + body)
    for k, (i, lab) in enumerate(CUSTOM_TRAIN + CUSTOM_TEST + CUSTOM_VAL):
        write_audio(root / "audio" / f"{i}{audio_ext}", 0.25, 16000, 300 if lab == "cat" else 900, seed=k)
        if visual == "image":
            write_image(root / "visual" / f"{i}.png", seed=k)
        else:
            write_frames(root / "visual" / i, 3)
    return root


def make_video(path: Path, seconds: float = 3.0, fps: int = 10, size=(48, 32), sr: int = 16000,
               audio: bool = True, freq: float = 440.0) -> Path:
    """A real mp4/avi (mpeg4 video, aac audio) written with PyAV. Frame i is flat at value 5·i,
    so a frame's value tells the time it was taken from (t = value / 50 s at 10 fps)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        astream = None
        if audio:
            astream = c.add_stream("aac", rate=sr)
            astream.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.full((size[1], size[0], 3), (5 * i) % 256, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if astream is not None:
            t = np.arange(int(seconds * sr)) / sr
            wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            step = astream.codec_context.frame_size or 1024
            for s in range(0, len(wave), step):
                fr = av.AudioFrame.from_ndarray(wave[None, s:s + step], format="fltp", layout="mono")
                fr.sample_rate, fr.pts = sr, s
                for p in astream.encode(fr):
                    c.mux(p)
            for p in astream.encode():
                c.mux(p)
    return path
