"""Where pdmp keeps its caches (diskcache), and stable hashing for cache keys."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """``$PDMP_CACHE_DIR``, else ``$XDG_CACHE_HOME/pdmp`` (``~/.cache/pdmp``)."""
    env = os.environ.get("PDMP_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pdmp"


def open_cache(name: str):
    """A diskcache.Cache under :func:`cache_dir` (process- and thread-safe, SQLite-backed)."""
    import diskcache

    path = cache_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return diskcache.Cache(str(path), size_limit=2**34)


def stable_hash(obj) -> str:
    """sha256 of the canonical JSON form of ``obj`` (first 16 hex digits)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
