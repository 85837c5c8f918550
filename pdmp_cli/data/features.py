"""The features cache: each modality's expensive, deterministic step (audio decode + resample +
STFT; frame decode + resize) is computed once and kept on disk.

Key = the modality kind and its :meth:`~pdmp_cli.data.modalities.Modality.cache_params`
(the decode-relevant preprocessing: sample rate, n_fft, hop, image size...) + the identity of
every file the sample reads (absolute path, size, modification time). Editing or replacing a
file, or changing a decode parameter, gives a new key; changing only normalisation or
augmentation does not. Training augmentation (frame choice, crop, flip) runs after the cache,
so it stays random every epoch.

Storage is a diskcache (SQLite + files under ``$PDMP_CACHE_DIR/features``), which is safe to
share between DataLoader worker processes: each process opens its own connection (see
``_open``). ``PDMP_FEATURES_CACHE=0`` turns the cache off. Values are ``.npy`` bytes read with
``allow_pickle=False`` (:mod:`pdmp_cli.cache`: no code in the caches); an entry that does not
read back as an array is a miss, decoded again and replaced.

Finite data: every decoded array is checked finite once, when it is decoded (before it is
cached): NaN or inf (a NaN-filled wav, a corrupt ``.npy``) is a ``non-finite`` :class:`BadFile`,
so ``pdmp datasets check`` lists the sample and training never sees it.

``hits`` / ``misses`` count lookups in this process (each DataLoader worker has its own copy);
:data:`STATS` sums them over every :class:`FeatureCache` of the process.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from pdmp_cli.cache import array_from_bytes, array_to_bytes, note_foreign, open_cache, stable_hash

STATS: Counter = Counter()  # "hits", "misses" over all FeatureCache objects of this process


def file_identity(files: list[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size in bytes, mtime in ns) per file."""
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f.resolve()), st.st_size, st.st_mtime_ns))
    return out


def checked_finite(value, path: Path):
    """``value`` if it holds no NaN or inf, else :class:`BadFile` (``non-finite``) naming the file."""
    import numpy as np

    from pdmp_cli.data.modalities import BadFile

    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise BadFile(path, "non-finite", f"{bad} of {arr.size} decoded values are NaN or inf")
    return value


def decode_checked(modality, path: Path):
    """``modality.decode(path)``, checked finite. Any exception of a third-party decoder (PIL's
    decompression-bomb guard, a file name too long, soundfile, librosa) becomes a
    :class:`BadFile` naming the file, so it is one problem of the sample, never a traceback."""
    from pdmp_cli.data.modalities import BadFile

    try:
        value = modality.decode(path)
    except BadFile:
        raise
    except Exception as e:
        raise BadFile(path, "unreadable", f"{type(e).__name__}: {e}".replace("\n", " ")) from None
    return checked_finite(value, path)


def enabled_by_env() -> bool:
    return os.environ.get("PDMP_FEATURES_CACHE", "1").lower() not in ("0", "off", "false", "no")


class FeatureCache:
    """``load(modality, path)`` -> the modality's decoded array, from the cache when possible."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = enabled_by_env() if enabled is None else enabled
        self.hits = 0
        self.misses = 0
        self._cache = None
        self._pid = None

    def _open(self):
        # one connection per process: a forked DataLoader worker must not reuse the parent's
        if self._cache is None or self._pid != os.getpid():
            self._cache = open_cache("features")
            self._pid = os.getpid()
        return self._cache

    def key(self, modality, path: Path) -> str:
        files = modality.sources(path)
        return "features/" + stable_hash(
            {"kind": modality.kind, "version": modality.VERSION, "params": modality.cache_params(),
             "files": file_identity(files)}
        )

    def load(self, modality, path: Path):
        if not (self.enabled and modality.cacheable):
            return decode_checked(modality, path)
        try:
            key = self.key(modality, path)
        except OSError as e:  # listing or stat-ing the sample's files failed (a name too long, an I/O error)
            from pdmp_cli.data.modalities import BadFile

            raise BadFile(path, "unreadable", f"{type(e).__name__}: {e.strerror or e}") from None
        cache = self._open()
        value = array_from_bytes(raw := cache.get(key, default=None, read=True, retry=True))
        if value is not None:
            self.hits += 1
            STATS["hits"] += 1
            return value
        if raw is not None:  # an entry pdmp did not write (or damaged): recomputed and replaced below
            note_foreign("features")
        self.misses += 1
        STATS["misses"] += 1
        value = decode_checked(modality, path)
        cache.set(key, array_to_bytes(value), retry=True)
        return value

    def contains(self, modality, path: Path) -> bool:
        """Whether ``path`` (as it is now on disk) was decoded successfully before."""
        if not (self.enabled and modality.cacheable):
            return False
        return array_from_bytes(self._open().get(self.key(modality, path), default=None, read=True, retry=True)) is not None

    def reset_counts(self) -> None:
        self.hits = self.misses = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None  # reopened in the worker process
        state["_pid"] = None
        return state
