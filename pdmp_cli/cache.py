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
    """A diskcache.Cache under :func:`cache_dir` (process- and thread-safe, SQLite-backed).

    Raises:
        PdmpError: the cache folder cannot be made or written (one line: set PDMP_CACHE_DIR).
    """
    import sqlite3

    import diskcache

    from pdmp_cli.errors import PdmpError
    from pdmp_cli.fsutil import make_dir

    path = cache_dir() / name
    fix = "set PDMP_CACHE_DIR to a writable folder"
    make_dir(path, fix)
    db = path / "cache.db"
    if not os.access(path, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise PdmpError(f"the cache folder {path} is not writable; {fix}", 1)
    try:
        return diskcache.Cache(str(path), size_limit=2**34)
    except (OSError, sqlite3.Error) as e:
        raise PdmpError(f"cannot open the cache in {path} ({e}); {fix}", 1) from None


def stable_hash(obj) -> str:
    """sha256 of the canonical JSON form of ``obj`` (first 16 hex digits)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
