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
``_open``). ``PDMP_FEATURES_CACHE=0`` turns the cache off.

``hits`` / ``misses`` count lookups in this process (each DataLoader worker has its own copy);
:data:`STATS` sums them over every :class:`FeatureCache` of the process.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from pdmp_cli.cache import open_cache, stable_hash

STATS: Counter = Counter()  # "hits", "misses" over all FeatureCache objects of this process


def file_identity(files: list[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size in bytes, mtime in ns) per file."""
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f.resolve()), st.st_size, st.st_mtime_ns))
    return out


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
            return modality.decode(path)
        key = self.key(modality, path)
        cache = self._open()
        value = cache.get(key, default=None, retry=True)
        if value is not None:
            self.hits += 1
            STATS["hits"] += 1
            return value
        self.misses += 1
        STATS["misses"] += 1
        value = modality.decode(path)
        cache.set(key, value, retry=True)
        return value

    def contains(self, modality, path: Path) -> bool:
        """Whether ``path`` (as it is now on disk) was decoded successfully before."""
        if not (self.enabled and modality.cacheable):
            return False
        return self.key(modality, path) in self._open()

    def reset_counts(self) -> None:
        self.hits = self.misses = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None  # reopened in the worker process
        state["_pid"] = None
        return state
