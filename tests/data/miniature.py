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


def make_cremad(root: Path, seconds: float = 0.3, frames: int = 2) -> Path:
    """CREMA-D as OGM-GE lays it out: train.csv/test.csv, AudioWAV/*.wav (16 kHz), Image-01-FPS/<clip>/."""
    for name, rows in (("train.csv", CREMAD_TRAIN), ("test.csv", CREMAD_TEST)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("".join(f"{c},{e}\n" for c, e in rows))
    for i, (clip, _) in enumerate(CREMAD_TRAIN + CREMAD_TEST):
        write_audio(root / "AudioWAV" / f"{clip}.wav", seconds, 16000, 300 + 50 * i, seed=i)
        write_frames(root / "Image-01-FPS" / clip, frames)
    return root


AVE_TRAIN = [("Church bell", "RUhOCu3LNXM", 0, 10), ("Bark", "aaa111", 2, 6), ("Male speech, man speaking", "bbb222", 0, 4)]
AVE_TEST = [("Bark", "ccc333", 1, 5), ("Church bell", "ddd444", 3, 9)]


def make_ave(root: Path) -> Path:
    for name, rows in (("trainSet.txt", AVE_TRAIN), ("testSet.txt", AVE_TEST)):
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("".join(f"{c}&{v}&good&{s}&{e}\n" for c, v, s, e in rows))
    for i, (_, vid, _, _) in enumerate(AVE_TRAIN + AVE_TEST):
        write_audio(root / "audio" / f"{vid}.wav", 0.4, 16000, 400 + 40 * i, seed=i)
        write_frames(root / "frames" / vid, 4)
    return root


KS_TRAIN = [("playing drums", "abcdEFGhijk", 10, 20), ("playing bagpipes", "zzzYYYxxx00", 0, 10),
            ("playing drums", "q-q_q-q_q-q", 31, 41)]
KS_TEST = [("playing bagpipes", "mmmNNNooo11", 5, 15), ("playing drums", "ppp222ppp22", 100, 110)]


def ks_id(yt: str, s: int, e: int) -> str:
    return f"{yt}_{s:06d}_{e:06d}"


def make_ks(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows, split in (("ks_train.csv", KS_TRAIN, "train"), ("ks_test.csv", KS_TEST, "test")):
        lines = ["label,youtube_id,time_start,time_end,split"] + [f"{lab},{yt},{s},{e},{split}" for lab, yt, s, e in rows]
        (root / name).write_text("\n".join(lines) + "\n")
    for i, (_, yt, s, e) in enumerate(KS_TRAIN + KS_TEST):
        write_audio(root / "audio" / f"{ks_id(yt, s, e)}.wav", 0.4, 16000, 500 + 30 * i, seed=i)
        write_frames(root / "frames" / ks_id(yt, s, e), 3)
    return root


VGG_ROWS = [("---g-f_I2yQ", 1, "people marching", "train"), ("--0PQM4-hqg", 30, "waterfall burbling", "train"),
            ("--56QUhyDQM", 185, '"male speech, man speaking"', "train"), ("-0BIyqJj9ZU", 30, "people marching", "train"),
            ("-0jeONf82dE", 21, '"male speech, man speaking"', "test"), ("-0xaDqBp2hE", 0, "waterfall burbling", "test")]


def make_vggsound(root: Path) -> Path:
    """One vggsound.csv for both splits; 'male speech, man speaking' is quoted for its comma."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "vggsound.csv").write_text("".join(f"{yt},{s},{lab},{sp}\n" for yt, s, lab, sp in VGG_ROWS))
    for i, (yt, s, _, _) in enumerate(VGG_ROWS):
        write_audio(root / "audio" / f"{yt}_{s:06d}.wav", 0.3, 16000, 600 + 30 * i, seed=i)
        write_frames(root / "frames" / f"{yt}_{s:06d}", 3)
    return root


UCF_CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
UCF_TRAIN = [("ApplyEyeMakeup", "g08_c01"), ("ApplyLipstick", "g08_c02"), ("Archery", "g09_c01")]
UCF_TEST = [("ApplyEyeMakeup", "g01_c01"), ("Archery", "g01_c03")]


def ucf_id(cls: str, g: str) -> str:
    return f"v_{cls}_{g}"


def make_ucf101(root: Path, n_frames: int = 6) -> Path:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{k} {c}\n" for k, c in enumerate(UCF_CLASSES, start=1)))
    (lists / "trainlist01.txt").write_text(
        "".join(f"{c}/{ucf_id(c, g)}.avi {UCF_CLASSES.index(c) + 1}\n" for c, g in UCF_TRAIN))
    (lists / "testlist01.txt").write_text("".join(f"{c}/{ucf_id(c, g)}.avi\n" for c, g in UCF_TEST))
    for c, g in UCF_TRAIN + UCF_TEST:
        d = root / "rawframes" / ucf_id(c, g)
        write_frames(d, n_frames, "img_{k:05d}.jpg")
        for k in range(1, n_frames + 1):
            write_image(d / f"flow_x_{k:05d}.jpg", 100 + k, mode="L")
            write_image(d / f"flow_y_{k:05d}.jpg", 150 + k, mode="L")
    return root


CEFA_TRAIN = [("3_499_1_1_1", 1), ("3_499_3_2_2", 0), ("1_020_1_1_1", 1), ("1_020_2_1_2", 0)]
CEFA_TEST = [("2_101_1_1_1", 1), ("2_101_3_3_2", 0)]


def make_cefa(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("4@1_train.txt", CEFA_TRAIN), ("4@1_test.txt", CEFA_TEST)):
        (root / name).write_text("".join(
            f"{s}/profile/0001.jpg {s}/depth/0001.jpg {s}/ir/0001.jpg {y}\n" for s, y in rows))
    for i, (s, _) in enumerate(CEFA_TRAIN + CEFA_TEST):
        write_image(root / s / "profile" / "0001.jpg", seed=i)
        write_image(root / s / "depth" / "0001.jpg", 90 + i)  # depth/IR saved as 3-channel jpgs, read as grayscale
        write_image(root / s / "ir" / "0001.jpg", 160 + i)
    return root


CUSTOM_TRAIN = [("clip01", "cat"), ("clip02", "dog"), ("clip03", "cat"), ("clip04", "dog")]
CUSTOM_TEST = [("clip05", "cat"), ("clip06", "dog")]


def make_custom(root: Path, visual: str = "image", int_labels: bool = False, audio_ext: str = ".wav") -> Path:
    """The README layout: audio/<id>.wav, visual/<id>.png (or visual/<id>/ frames), train.csv/test.csv."""
    root.mkdir(parents=True, exist_ok=True)
    names = ["cat", "dog"]
    for fname, rows in (("train.csv", CUSTOM_TRAIN), ("test.csv", CUSTOM_TEST)):
        body = "".join(f"{i},{names.index(lab) if int_labels else lab}\n" for i, lab in rows)
        (root / fname).write_text("id,label\n" + body)
    for k, (i, lab) in enumerate(CUSTOM_TRAIN + CUSTOM_TEST):
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
