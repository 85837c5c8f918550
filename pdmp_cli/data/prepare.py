"""``pdmp prepare``: raw videos -> the frame folders and audio files a manifest expects.

For each sample of the manifest's lists, the video ``--videos/<[prepare] video pattern>`` is
decoded with PyAV (FFmpeg): frames are written at ``[prepare] fps`` into each ``frames``
modality's folder, and the audio track, mixed to mono and resampled to the ``audio``
modality's ``sample_rate``, into its file (wav or flac, from the suffix). With ``start``/``end``
row fields (AVE) only that segment is kept.

Resumable: every output is written under a temporary name and renamed when complete, so a
folder or file that exists is finished; an interrupted run starts where it stopped, and a rerun
skips finished samples (``force=True`` redoes them). Optical flow (``flow``) is not made here:
it needs a TV-L1 tool.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pdmp_cli.errors import PdmpError

MADE = ("frames", "audio")  # modality kinds this module can produce from a video


@dataclass
class PrepareResult:
    dataset: str
    root: Path
    done: list[str] = field(default_factory=list)  # sample ids prepared now
    skipped: int = 0  # already finished
    missing: list[str] = field(default_factory=list)  # no video found
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    not_made: list[str] = field(default_factory=list)  # modalities prepare cannot produce
    left_out: int = 0  # list rows the manifest's rules leave out (AVE's zero-length segment, duplicates)

    def summary(self) -> str:
        s = (f"{self.dataset}: prepared {len(self.done)}, skipped {self.skipped} already done, "
             f"{len(self.missing)} videos missing, {len(self.failed)} failed -> {self.root}")
        if self.not_made:
            s += f"; not made here: {', '.join(self.not_made)} (needs an external tool)"
        if self.left_out:
            s += f"; {self.left_out} list rows left out by the manifest's rules (`pdmp datasets check` lists them)"
        return s


def _frame_name(pattern: str | None, fmt: str) -> str:
    """File name for frame k that the modality's ``pattern`` glob will match."""
    if pattern and pattern.count("*") == 1 and "?" not in pattern and "[" not in pattern:
        head, tail = pattern.split("*")
        return head + "{k:05d}" + tail
    return "{k:05d}." + fmt


def _resize_short(img, short_side: int | None):
    if not short_side:
        return img
    w, h = img.size
    scale = short_side / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))))


def extract_frames(video: Path, folder: Path, name: str, fps: float, start: float | None = None,
                   end: float | None = None, short_side: int | None = None, pattern: str | None = None,
                   within: Path | None = None) -> int:
    """Frames at ``fps`` from [start, end) -> ``folder`` (written as ``folder``.partial, renamed). -> count.

    ``pattern`` (the frames modality's glob): the folder may hold other files (UCF101's flow
    frames next to the RGB ones): an existing folder then keeps them, only its files matching
    ``pattern`` are replaced. Without it the whole folder is the frames and is replaced.
    ``within``: the modality's output folder; nothing outside it, nor the folder itself, is ever
    deleted (:class:`~pdmp_cli.data.confine.UnsafePath` instead)."""
    import av

    from pdmp_cli.data.confine import UnsafePath, inside

    partial = folder.with_name(folder.name + ".partial")
    if within is not None and not (inside(folder, within) and inside(partial, within)):
        raise UnsafePath(f"{folder} is not inside the output folder {within}; nothing deleted")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t0 = start or 0.0
    written = 0
    with av.open(str(video)) as c:
        if not c.streams.video:
            raise ValueError("no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 25)
        for i, frame in enumerate(c.decode(stream)):
            t = frame.time if frame.time is not None else i / rate
            if t < t0 - 1e-6:
                continue
            if end is not None and t >= end:
                break
            if t + 1e-6 >= t0 + written / fps:  # the first frame at or after each 1/fps step
                written += 1
                _resize_short(frame.to_image(), short_side).save(partial / name.format(k=written), quality=95)
    if written == 0:
        shutil.rmtree(partial)
        raise ValueError("no frames decoded" + (f" in [{start}, {end})" if start is not None else ""))
    if folder.is_dir() and pattern:
        new = {p.name for p in partial.iterdir()}
        for p in partial.iterdir():
            os.replace(p, folder / p.name)
        for old in folder.glob(pattern):  # stale frames of an earlier, longer extraction
            if old.name not in new and old.is_file() and inside(old, folder):  # never what '../*' would match
                old.unlink()
        partial.rmdir()
        return written
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return written


def extract_audio(video: Path, path: Path, sample_rate: int, start: float | None = None, end: float | None = None) -> int:
    """The first audio stream, mono, at ``sample_rate``, cut to [start, end) -> ``path``. -> samples."""
    import av
    import soundfile as sf

    chunks, t_first = [], None
    with av.open(str(video)) as c:
        if not c.streams.audio:
            raise ValueError("no audio stream")
        res = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in c.decode(c.streams.audio[0]):
            if t_first is None:
                t_first = frame.time or 0.0
            chunks += [f.to_ndarray().reshape(-1) for f in res.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    lo = max(0, int(round(((start or 0.0) - (t_first or 0.0)) * sample_rate)))
    hi = None if end is None else int(round((end - (t_first or 0.0)) * sample_rate))
    wave = wave[lo:hi]
    if len(wave) == 0:
        raise ValueError("no audio samples" + (f" in [{start}, {end})" if start is not None else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + path.suffix)  # keeps the suffix: soundfile picks the format
    sf.write(str(partial), wave, sample_rate)
    os.replace(partial, path)
    return len(wave)


def prepare_dataset(dataset, videos, data_root=None, *, force: bool = False, progress: bool = False) -> PrepareResult:
    """Make a dataset's frame folders and audio files from its raw videos. -> :class:`PrepareResult`.

    ``dataset``: manifest name or path (a ``files`` manifest with a ``[prepare]`` table);
    ``videos``: the folder of raw videos. The list files must already be under the data root.
    """
    from pdmp_cli.data.confine import UnsafePath, confine, inside
    from pdmp_cli.data.loaders.files import index_dataset
    from pdmp_cli.data.manifest import load_manifest

    manifest = load_manifest(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    if manifest.loader != "files" or manifest.prepare is None:
        raise PdmpError(f"dataset {manifest.name} has no [prepare] table: its manifest does not describe videos "
                        "to extract; nothing for pdmp prepare to do", 2)
    try:
        import av  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency
        raise PdmpError("pdmp prepare needs PyAV: pip install av") from None
    videos = Path(videos).expanduser()
    if not videos.is_dir():
        raise PdmpError(f"--videos {videos} is not a folder; give the folder holding the raw videos", 2)
    idx = index_dataset(manifest, data_root)
    if idx.unsafe:  # list rows whose ids would write (or, with --force, delete) outside the data root
        raise PdmpError(f"pdmp prepare refuses {manifest.name}: {len(idx.unsafe)} list rows give paths outside "
                        f"the data root or no file name, first: {idx.unsafe[0].describe()}; nothing was written", 2)
    if any(p.kind == "missing list" for p in idx.problems):
        lists = ", ".join(str(p.path) for p in idx.problems if p.kind == "missing list")
        raise PdmpError(f"pdmp prepare reads the dataset's lists, which are missing: {lists}; put them under {idx.root}", 2)
    prep = manifest.prepare
    result = PrepareResult(manifest.name, idx.root, left_out=len(idx.dropped))
    kinds = {m: s.kind for m, s in manifest.modalities.items()}
    # each modality's output folder: the fixed part of its path pattern ('frames/{id}' -> <root>/frames)
    outputs = {m: idx.root / os.path.dirname(s.path.split("{")[0]) for m, s in manifest.modalities.items()}
    result.not_made = [f"{m} ({k})" for m, k in kinds.items() if k not in MADE]

    seen, samples = set(), []
    for split in idx.splits:
        for s in idx.splits[split]:
            if s.id not in seen:
                seen.add(s.id)
                samples.append(s)

    def one(s) -> None:
        try:
            todo = {m: s.paths[m] for m, k in kinds.items() if k in MADE and (force or not s.paths[m].exists())}
        except OSError as e:  # the file system refuses the path itself (a path too long)
            result.failed.append((s.id, f"{type(e).__name__}: {e.strerror or e}"))
            return
        if not todo:
            result.skipped += 1
            return
        for m, target in todo.items():  # a frames folder replaced with --force must hold no other modality's files
            if kinds[m] != "frames":
                continue
            t = os.path.normpath(target)
            clash = [(f"the {m2} modality's folder", o) for m2, o in outputs.items() if m2 != m]
            clash += [(f"the list file {f.name}", f) for f in idx.list_files]
            hit = next((what for what, o in clash if os.path.normpath(o) == t or inside(o, target)), None)
            if hit is not None:
                result.failed.append((s.id, f"its {m} frames folder {target} is {hit} (or holds it); not replaced"))
                return
        try:
            rel = prep.video.format_map(s.fields)
        except (KeyError, IndexError, ValueError) as e:
            raise PdmpError(f"[prepare] video {prep.video!r} names a row field the {manifest.name} lists do not "
                            f"give ({e}); available: {', '.join('{' + k + '}' for k in s.fields)}", 2) from None
        try:
            video = confine(videos, rel)
        except UnsafePath as e:
            result.failed.append((s.id, f"video path {rel!r} {e}; not read"))
            return
        if not video.is_file():
            result.missing.append(s.id)
            return
        try:
            start = float(s.fields[prep.start]) if prep.start else None
            end = float(s.fields[prep.end]) if prep.end else None
            for m, target in todo.items():
                mod = manifest.modalities[m].modality
                if kinds[m] == "frames":
                    name = _frame_name(mod.prep.pattern, prep.frame_format)
                    extract_frames(video, target, name, prep.fps, start, end, prep.short_side, mod.prep.pattern,
                                   within=outputs[m])
                else:
                    extract_audio(video, target, mod.prep.sample_rate, start, end)
        except KeyError as e:
            raise PdmpError(f"[prepare] names row field {e} that the {manifest.name} lists do not have", 2) from None
        except Exception as e:  # a corrupt or odd video: note it, go on with the others
            result.failed.append((s.id, f"{video.name}: {e}"))
            return
        result.done.append(s.id)

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from pdmp_cli.console import err_console

        cols = (TextColumn("preparing {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*cols, console=err_console) as bar:
            task = bar.add_task(manifest.name, total=len(samples))
            for s in samples:
                one(s)
                bar.advance(task)
    else:
        for s in samples:
            one(s)
    return result
