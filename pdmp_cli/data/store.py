"""The packed store: a dataset split's decoded samples as fixed-size chunks of raw numpy arrays,
read through memory maps (``pdmp datasets pack``; ``pdmp train`` packs after its data check).

Per modality kind, what is stored (``S`` = the stored image size, ``cache_size`` or ``size``):

* ``frames``: every frame of a clip, uint8 (C, S, S) rows, with per-clip offsets, so training
  still picks a random frame of each segment every epoch;
* ``flow``: every x/y pair of a clip, uint8 (2, S, S) rows, with offsets;
* ``image``: one uint8 (C, S, S) row per sample;
* ``audio``: the spectrogram, float16 (one row per sample); ``[packed] audio_dtype =
  "float32"`` in the manifest keeps it exact at twice the bytes;
* ``npy``: the array as float32 (every sample must have the same shape).

Layout of ``<root>/<dataset>/<split>/``: ``store.json`` (format, key, counts, chunk list), the
labels (``labels.npy``), and per chunk of :data:`CHUNK` samples one ``<modality>.<k>.bin`` of
rows (``np.memmap``) plus, for frames and flow, ``<modality>.<k>.offsets.npy``. Nothing is
pickled. A store is written into a temporary folder beside its place and renamed into it when
complete, so a killed or failed packing leaves the previous store or none, never half of one.

The key is the dataset identity (:attr:`DatasetBundle.identity`: manifest, lists, every
sample's file size or frame count, the samples left out by the check), the split, every
modality's kind, decode version and preprocessing, and the audio dtype: a changed list, a file
of another size, a new frame, or a changed setting repacks. Beside the key, ``store.json``
records a digest of the split's files' modification times (``mtimes``, taken by the same
``stat()`` that reads each file's size when the lists are read; a frame folder's own mtime), and
a store whose files' times moved is packed again, after the data check (:mod:`pdmp_cli.data.packed`):
a file rewritten in place at the same size is noticed. The identity itself holds no time, so a
copy of the data (new mtimes) keeps its identity and is repacked once. Not noticed: a frame
rewritten in place inside its folder (the folder's mtime does not move; ``pdmp datasets pack
NAME --force`` repacks). Opening a store checks ``store.json`` and each chunk file's size.

Where: ``$PDMP_PACKED_DIR``, else ``<cache dir>/packed`` (``$PDMP_CACHE_DIR``); not counted in
the features cache's size limit. ``PDMP_PACKED=0`` trains from the features cache instead.
Decoded float values are checked finite once, when packed: a NaN or inf stops packing with
one line naming the sample.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pdmp_cli.errors import PdmpError

FORMAT = 1
CHUNK = 1024  # samples per chunk file
META = "store.json"


class PackedSpec(BaseModel):
    """A manifest's ``[packed]`` table."""

    model_config = ConfigDict(extra="forbid")

    audio_dtype: Literal["float16", "float32"] = Field(
        "float16", description="spectrograms in the packed store: float16 (half the bytes) or float32 (exact)")


def enabled_by_env() -> bool:
    return os.environ.get("PDMP_PACKED", "1").lower() not in ("0", "off", "false", "no")


def packed_root() -> Path:
    """``$PDMP_PACKED_DIR``, else ``<cache dir>/packed``."""
    env = os.environ.get("PDMP_PACKED_DIR")
    if env:
        return Path(env).expanduser()
    from pdmp_cli.cache import cache_dir

    return cache_dir() / "packed"


def split_dir(dataset: str, split: str, root: Path | None = None) -> Path:
    return (root or packed_root()) / re.sub(r"[^A-Za-z0-9._-]", "_", dataset) / split


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class Layout:
    """How one modality is stored: rows of ``shape`` and ``dtype``; ``multi``: several rows per sample."""

    kind: str
    dtype: str
    multi: bool

    @staticmethod
    def of(mod, audio_dtype: str) -> "Layout":
        if mod.kind in ("frames", "flow"):
            return Layout(mod.kind, "uint8", True)
        if mod.kind == "image":
            return Layout(mod.kind, "uint8", False)
        if mod.kind == "audio":
            return Layout(mod.kind, audio_dtype, False)
        return Layout(mod.kind, "float32", False)


def to_rows(kind: str, decoded: np.ndarray) -> np.ndarray:
    """A modality's decoded array (the features cache's value) -> the store's rows of one sample."""
    if kind == "frames":  # (N, H, W, C) -> (N, C, H, W)
        return np.ascontiguousarray(decoded.transpose(0, 3, 1, 2))
    if kind == "image":  # (H, W, C) -> (C, H, W)
        return np.ascontiguousarray(decoded.transpose(2, 0, 1))
    return np.ascontiguousarray(decoded)  # flow (N, 2, H, W); audio (1, F, T); npy (C, ...)


def store_key(identity: str, split: str, modalities: dict, audio_dtype: str) -> str:
    from pdmp_cli.cache import stable_hash

    return stable_hash({
        "format": FORMAT, "identity": identity, "split": split, "audio_dtype": audio_dtype,
        "modalities": {m: [mod.kind, mod.VERSION, mod.cache_params()] for m, mod in modalities.items()},
    })


# ------------------------------------------------------------------------------------ reading


class Store:
    """An open store (read-only): ``labels``, ``counts(m)`` (rows per sample), ``gather``."""

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self.n = int(meta["n"])
        self.chunk = int(meta["chunk"])
        self.labels = np.load(self.path / "labels.npy", allow_pickle=False)
        self._start: dict[str, np.ndarray] = {}
        self._count: dict[str, np.ndarray] = {}
        for m, info in meta["modalities"].items():
            if info["multi"]:
                starts, counts = [], []
                for k in range(len(meta["chunks"])):
                    off = np.load(self.path / f"{m}.{k}.offsets.npy", allow_pickle=False)
                    starts.append(off[:-1])
                    counts.append(np.diff(off))
                self._start[m] = np.concatenate(starts)
                self._count[m] = np.concatenate(counts)
            else:
                self._start[m] = np.arange(self.n, dtype=np.int64) % self.chunk
                self._count[m] = np.ones(self.n, dtype=np.int64)
        self._maps: dict | None = None  # opened per process (a memmap must not be pickled: it would copy)

    @classmethod
    def open(cls, path: Path, key: str | None = None, mtimes: str | None = None) -> "Store | None":
        """The complete store at ``path`` for ``key``, or None (absent, other data, or damaged).
        ``mtimes`` (the split's :attr:`~pdmp_cli.data.loaders.files.FilesSplit.mtimes`): also None
        when the store was packed from files with other modification times (or recorded none)."""
        try:
            meta = json.loads((Path(path) / META).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("format") != FORMAT or (key is not None and meta.get("key") != key):
            return None
        if mtimes is not None and meta.get("mtimes") != mtimes:  # a file modified since packing
            return None
        try:
            for k, c in enumerate(meta["chunks"]):
                for m, info in meta["modalities"].items():
                    want = c["rows"][m] * int(np.prod(info["shape"])) * np.dtype(info["dtype"]).itemsize
                    if os.path.getsize(Path(path) / f"{m}.{k}.bin") != want:
                        return None
            return cls(path, meta)
        except (OSError, KeyError, ValueError):
            return None

    @property
    def nbytes(self) -> int:
        return int(self.meta["bytes"])

    def counts(self, m: str) -> np.ndarray:
        return self._count[m]

    def _map(self, m: str, k: int) -> np.ndarray:
        if self._maps is None or self._maps.get("pid") != os.getpid():
            self._maps = {"pid": os.getpid()}
        key = (m, k)
        if key not in self._maps:
            info = self.meta["modalities"][m]
            rows = self.meta["chunks"][k]["rows"][m]
            self._maps[key] = np.memmap(self.path / f"{m}.{k}.bin", dtype=info["dtype"], mode="r",
                                        shape=(rows, *info["shape"]))
        return self._maps[key]

    def gather(self, m: str, samples: np.ndarray, picks: np.ndarray | None = None) -> np.ndarray:
        """Rows of modality ``m``: ``picks`` (B, ...) row numbers within each sample's rows ->
        (B, ..., *row shape); without ``picks`` the sample's one row -> (B, *row shape). One fancy
        index per chunk touched."""
        samples = np.asarray(samples, dtype=np.int64)
        info = self.meta["modalities"][m]
        if picks is None:
            picks = np.zeros(len(samples), dtype=np.int64)
        picks = np.asarray(picks, dtype=np.int64)
        extra = picks.shape[1:]
        rows = self._start[m][samples].reshape((-1,) + (1,) * len(extra)) + picks
        chunk = np.broadcast_to((samples // self.chunk).reshape((-1,) + (1,) * len(extra)), rows.shape)
        out = np.empty(rows.shape + tuple(info["shape"]), dtype=info["dtype"])
        flat_rows, flat_chunk = rows.reshape(-1), chunk.reshape(-1)
        flat_out = out.reshape((-1, *info["shape"]))
        for k in np.unique(flat_chunk):
            sel = flat_chunk == k
            flat_out[sel] = self._map(m, int(k))[flat_rows[sel]]
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = None
        return state


# ------------------------------------------------------------------------------------ writing


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(folder: Path) -> None:
    """Remove temporary folders of packings that were killed (their process is gone)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        m = re.fullmatch(r"\.(?:tmp|old)-.+-(\d+)-[0-9a-f]+", p.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


@contextmanager
def pack_lock(dest: Path):
    """An exclusive lock on packing ``dest`` (a file beside it), held while one process packs
    (POSIX ``flock``; without ``fcntl`` no lock: two packers then both write, and the second keeps
    the first's store)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    from pdmp_cli.fsutil import make_dir

    make_dir(dest.parent, "set PDMP_PACKED_DIR to a writable folder with room")
    with open(dest.parent / f".{dest.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _ChunkWriter:
    def __init__(self, tmp: Path, k: int, layouts: dict[str, Layout]):
        self.tmp, self.k, self.layouts = tmp, k, layouts
        self.files = {m: open(tmp / f"{m}.{k}.bin", "wb") for m in layouts}
        self.offsets = {m: [0] for m, lay in layouts.items() if lay.multi}
        self.rows = {m: 0 for m in layouts}
        self.n = 0

    def add(self, m: str, rows: np.ndarray) -> None:
        self.files[m].write(rows.tobytes())
        r = len(rows) if self.layouts[m].multi else 1
        self.rows[m] += r
        if m in self.offsets:
            self.offsets[m].append(self.offsets[m][-1] + r)

    def close(self) -> dict:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for m, off in self.offsets.items():
            np.save(self.tmp / f"{m}.{self.k}.offsets.npy", np.asarray(off, dtype=np.int64))
        return {"n": self.n, "rows": dict(self.rows)}

    def abort(self) -> None:
        for f in self.files.values():
            f.close()


def pack(dest: Path, key: str, *, dataset: str, split: str, modalities: dict, samples: list, labels: list[int],
         load: Callable, audio_dtype: str = "float16", chunk: int = CHUNK,
         progress: Callable[[int], None] | None = None, extra: dict | None = None,
         mtimes: str | None = None) -> Store:
    """Write the store of one split to ``dest`` (atomically: temp folder, then rename) -> the open store.

    ``samples``: objects with ``id`` and ``paths`` (:class:`~pdmp_cli.data.loaders.files.Sample`);
    ``load(modality, path)`` -> the decoded array (the features cache's value). ``mtimes``: the
    samples' files' modification times as the split read them (recorded; see :meth:`Store.open`).
    Raises PdmpError
    (one line) for a non-finite value, samples of different shapes, or a full or unwritable disk;
    the previous store at ``dest`` then stays as it was.
    """
    from pdmp_cli.fsutil import make_dir
    from pdmp_cli.data.modalities import BadFile

    dest = Path(dest)
    fix = "set PDMP_PACKED_DIR to a writable folder with room"
    make_dir(dest.parent, fix)
    _clean_stale(dest.parent)
    tmp = dest.parent / f".tmp-{split}-{os.getpid()}-{os.urandom(4).hex()}"
    layouts = {m: Layout.of(mod, audio_dtype) for m, mod in modalities.items()}
    shapes: dict[str, tuple] = {}
    chunks: list[dict] = []
    total = 0
    writer = None
    try:
        tmp.mkdir()
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        for n, s in enumerate(samples):
            if n % chunk == 0:
                if writer is not None:
                    chunks.append(writer.close())
                writer = _ChunkWriter(tmp, len(chunks), layouts)
            for m, mod in modalities.items():
                lay = layouts[m]
                try:
                    decoded = load(mod, s.paths[m])
                except BadFile as e:
                    raise PdmpError(f"cannot pack {dataset} [{split}] sample {s.id}: {e}; run "
                                    f"`pdmp datasets check {dataset}`") from None
                rows = to_rows(lay.kind, np.asarray(decoded))
                if rows.dtype.kind == "f":
                    if not np.isfinite(rows).all():
                        raise PdmpError(f"cannot pack {dataset} [{split}] sample {s.id}: its decoded {m} "
                                        f"({s.paths[m]}) holds NaN or inf values; fix or remove that file")
                    with np.errstate(over="ignore"):
                        cast = rows.astype(lay.dtype)
                    if not np.isfinite(cast).all():
                        raise PdmpError(f"cannot pack {dataset} [{split}] sample {s.id}: its {m} values exceed "
                                        f"the {lay.dtype} range; set [packed] audio_dtype = \"float32\" in the manifest")
                    rows = cast
                else:
                    rows = rows.astype(lay.dtype, copy=False)
                row_shape = rows.shape[1:] if lay.multi else rows.shape
                if shapes.setdefault(m, row_shape) != row_shape:
                    raise PdmpError(f"cannot pack {dataset} [{split}]: sample {s.id}'s {m} has shape "
                                    f"{row_shape}, earlier samples {shapes[m]}; give every sample the same shape")
                writer.add(m, rows)
                total += rows.nbytes
            writer.n += 1
            if progress is not None:
                progress(n + 1)
        if writer is not None:
            chunks.append(writer.close())
            writer = None
        meta = {
            "format": FORMAT, "key": key, "dataset": dataset, "split": split, "n": len(samples), "chunk": chunk,
            "chunks": chunks, "bytes": total, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mtimes": mtimes,
            **(extra or {}),  # what the data check left out (pdmp_cli.data.packed.load_packed)
            "modalities": {m: {"kind": lay.kind, "dtype": lay.dtype, "multi": lay.multi, "shape": list(shapes[m])}
                           for m, lay in layouts.items()},
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        old = None
        if dest.exists():
            old = dest.parent / f".old-{split}-{os.getpid()}-{os.urandom(4).hex()}"
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except OSError as e:  # another packer renamed its store into place first: the same data, keep it
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or Store.open(dest, key) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            free = shutil.disk_usage(dest.parent).free if dest.parent.exists() else 0
            raise PdmpError(f"the disk filled while packing {dataset} [{split}] into {dest.parent} "
                            f"({human(total)} written, {human(free)} free); free space or set PDMP_PACKED_DIR "
                            "to a larger disk (PDMP_PACKED=0 trains without the store)", 1) from None
        from pdmp_cli.fsutil import not_writable

        raise not_writable(dest, e, fix) from None
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store = Store.open(dest, key)
    if store is None:  # pragma: no cover - what was just written must open
        raise PdmpError(f"the packed store {dest} did not read back; remove it and pack again", 1)
    return store


def estimate(modalities: dict, samples: list, audio_dtype: str = "float16") -> int:
    """Bytes the store of ``samples`` will take, from file listings (nothing is decoded)."""
    from pdmp_cli.data.modalities import BadFile

    total = 0
    for m, mod in modalities.items():
        p = mod.prep
        for s in samples:
            try:
                if mod.kind == "frames":
                    total += len(mod.sources(s.paths[m])) * p.channels * p.stored_size() ** 2
                elif mod.kind == "flow":
                    total += len(mod._pairs(s.paths[m])[0]) * 2 * p.stored_size() ** 2
                elif mod.kind == "image":
                    total += p.channels * p.stored_size() ** 2
                elif mod.kind == "audio":
                    total += int(np.prod(mod.output_shape())) * np.dtype(audio_dtype).itemsize
                else:
                    total += s.paths[m].stat().st_size
            except (BadFile, OSError):
                pass
    return total
