"""What every figure of the benchmark shares: timing, child processes, the machine, test data.

Timings are taken side by side: :func:`interleaved` runs the variants of a figure in turn
(A B B A A B ...) and keeps the median of each, so a burst of load from another process lands
on both variants alike and a ratio of medians stays honest on a busy machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]  # the repository
CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]  # CREMA-D's, in OGM-GE's order


# ----------------------------------------------------------------------------------- timing


def interleaved(variants: dict[str, Callable[[], float | None]], repeats: int) -> dict[str, list[float]]:
    """Run each variant ``repeats`` times, alternating the order every round (ABBA...).

    A variant returns its own measurement (seconds), or None to be timed as a whole call.
    -> {name: [seconds, ...]}.
    """
    names = list(variants)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            got = variants[n]()
            out[n].append(got if got is not None else time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: list[float]) -> float:
    """Relative spread of repeated timings: (max - min) / median."""
    m = median(xs)
    return float((max(xs) - min(xs)) / m) if m > 0 else 0.0


# ----------------------------------------------------------------------------------- the machine


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return []


def machine(threads: int) -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "gpu": gpu,
    }


def child_env(cache_dir: Path, threads: int | None, **extra: str) -> dict:
    """Environment of a CLI child: its own cache, the benchmark's thread count, no colours."""
    env = dict(os.environ)
    env["PDMP_CACHE_DIR"] = str(cache_dir)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "120"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op pool, as torch.set_num_threads
    env.update(extra)
    return env


@dataclass
class ChildResult:
    seconds: float  # wall time, start to exit
    peak_rss_mb: float | None  # high-water mark of the child's resident set (memory=True)
    returncode: int
    stdout: str
    stderr: str


def pdmp_command() -> list[str]:
    """``pdmp`` as a user runs it: the console script beside this Python."""
    script = Path(sys.executable).parent / "pdmp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pdmp_cli"]


# Linux counts the memory of the process a child was forked from in the child's ru_maxrss
# (exec records the old address space's high-water mark), so a child of this large process
# would report at least this process's size. The child is therefore started by a small
# launcher, and its peak is that of its own address space: what the command itself used.
_LAUNCHER = """\
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(args: list[str], env: dict, cwd: Path | None = None, check: bool = True,
              memory: bool = False) -> ChildResult:
    """Run a command to its end: wall time, and with ``memory`` its peak RSS in MiB.

    The peak comes from ``os.wait4`` (``ru_maxrss``: the child's own high-water mark, or that
    of a descendant it waited for if larger), taken by a launcher (see ``_LAUNCHER``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "maxrss"
        cmd = [sys.executable, "-c", _LAUNCHER, str(rss_file), *args] if memory else args
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
            seconds = time.perf_counter() - t0
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        peak = None
        if memory and rss_file.exists():
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            peak = int(rss_file.read_text()) * scale / 2**20
    res = ChildResult(seconds, peak, proc.returncode, stdout, stderr)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {res.returncode}:\n{stderr[-2000:] or stdout[-2000:]}")
    return res


# ----------------------------------------------------------------------------------- data


def make_cremad_layout(root: Path, train: int, test: int, seconds: float = 2.5, frames: int = 3,
                       frame_size: tuple[int, int] = (480, 360)) -> Path:
    """A generated dataset in CREMA-D's layout (as OGM-GE lays it out), with real files.

    ``train.csv``/``test.csv`` rows ``clip_id,EMOTION``; ``AudioWAV/<clip>.wav`` 16 kHz mono
    ``seconds`` long (the release's format; CREMA-D clips are 1.3-5 s, ~2.5 s on average);
    ``Image-01-FPS/<clip>/`` ``frames`` jpgs of ``frame_size`` (the videos are 480 x 360; at
    1 fps a 2.5 s clip gives 3 frames). Written with the datasets tests' generators. The frames
    are flat images, which decode faster than real faces: the cost of decoding without a cache
    is, if anything, understated.
    """
    from tests.data.miniature import write_audio, write_frames

    rows = {"train": [], "test": []}
    for i in range(train + test):
        split = "train" if i < train else "test"
        emo = CLASSES[i % len(CLASSES)]
        clip = f"{1001 + i // 12}_S{i % 12:02d}_{emo}_XX"
        rows[split].append(f"{clip},{emo}\n")
        wav = root / "AudioWAV" / f"{clip}.wav"
        if not wav.exists():
            write_audio(wav, seconds, 16000, 200.0 + 40.0 * (i % 6) + i, seed=i)
        folder = root / "Image-01-FPS" / clip
        if not folder.exists():
            write_frames(folder, frames, size=frame_size)
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("".join(lines))
    return root


TINY_CREMAD = """\
# the CREMA-D layout and list format at test-suite size (the shipped cremad.toml, small settings)
loader = "files"
description = "CREMA-D layout, tiny preprocessing"
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
preprocessing = { frames = 1, size = 32 }
"""

TINY_SYNTHETIC = """\
# the test suite's tiny synthetic dataset (tests/conftest.py): 90 clips, 3 classes
loader = "synthetic"
description = "tiny CREMA-D-like data"
classes = 3
train_size = 60
test_size = 30
seed = 0
[audio]
reliability = 0.6
[visual]
reliability = 0.9
image_size = 16
[defaults]
encoder = "small"
epochs = 2
early_epochs = 1
batch_size = 16
lr = 0.01
subset = 1.0
"""


# ----------------------------------------------------------------------------------- output


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def write_json(path: Path, obj: dict) -> None:
    """Write atomically (temp file + rename): a stopped benchmark leaves the old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
