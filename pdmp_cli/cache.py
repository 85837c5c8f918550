"""Where pdmp keeps its caches (diskcache), how values are stored, and stable hashing for keys.

No code in the caches: a cache folder may sit on a shared filesystem, and diskcache's default
stores every value that is not bytes, str or a number as a pickle, which runs code when read.
Every pdmp cache is opened with :class:`SafeDisk`, which stores only bytes, str, numbers and
None, and never unpickles: an entry in pickle form (an older pdmp's, or planted) is a miss, as is
a value that does not decode (:func:`array_from_bytes`, :func:`arrays_from_bytes`,
:func:`json_from_text` return None); the caller recomputes it and replaces the entry, and the
process says so in one line (:func:`note_foreign`). Arrays are stored as ``.npy``/``.npz`` bytes
read with ``allow_pickle=False``; records (analysis results) as JSON text.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

_NOTED: set[str] = set()


def _first_in_a_while(where: str, window: float = 600.0) -> bool:
    """Whether no process (DataLoader workers, the check's pool) said so about cache ``where`` in the
    last ``window`` seconds: a marker file in the cache folder, touched by the one that says it."""
    import time

    marker = cache_dir() / where / "foreign-entry-noted"
    try:
        if time.time() - marker.stat().st_mtime < window:
            return False
    except OSError:
        pass
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass
    return True


def note_foreign(where: str) -> None:
    """One line (per cache, across the processes of a command): an entry was not in pdmp's format
    and is recomputed."""
    if where not in _NOTED:
        _NOTED.add(where)
        if not _first_in_a_while(where):
            return
        print(f"pdmp: a {where} cache entry was not in pdmp's format (an older version's pickle, damaged, or "
              "planted); it was ignored, recomputed and replaced", file=sys.stderr)


def safe_disk():
    """The :class:`diskcache.Disk` of every pdmp cache (:class:`pdmp_cli.cache_disk.SafeDisk`): it
    stores bytes, str, numbers and None as they are and refuses anything it would pickle; a stored
    pickle reads as missing (never unpickled). Imported on first use (diskcache stays out of
    ``pdmp --help``)."""
    from pdmp_cli.cache_disk import SafeDisk

    return SafeDisk


def array_to_bytes(arr) -> bytes:
    """A numpy array as ``.npy`` bytes (no pickle: object arrays are refused)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def array_from_bytes(data) -> "np.ndarray | None":  # noqa: F821
    """``.npy`` bytes, or an open file of them (``cache.get(key, read=True)``, closed here: numpy
    then reads the file straight into the array, one copy) -> the array; anything else (a foreign
    or damaged entry) -> None."""
    import numpy as np

    if isinstance(data, bytes):
        data = io.BytesIO(data)
    if not hasattr(data, "read"):
        return None
    try:
        with data:
            return np.load(data, allow_pickle=False)
    except Exception:  # ValueError, EOFError, OSError...: not an array we wrote
        return None


def arrays_to_bytes(arrays: dict) -> bytes:
    """{name: array} as ``.npz`` bytes (no pickle)."""
    import numpy as np

    buf = io.BytesIO()
    for v in arrays.values():
        if np.asarray(v).dtype.hasobject:
            raise TypeError("object arrays are not stored in pdmp caches")
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def arrays_from_bytes(data, names=None) -> dict | None:
    """``.npz`` bytes -> {name: array}; foreign, damaged or missing one of ``names`` -> None."""
    import numpy as np

    if not isinstance(data, bytes):
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception:
        return None
    if names is not None and not set(names) <= set(out):
        return None
    return out


def json_to_text(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def json_from_text(data):
    """JSON text -> the value; anything else -> None."""
    if not isinstance(data, str):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


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
        return diskcache.Cache(str(path), size_limit=2**34, disk=safe_disk())
    except (OSError, sqlite3.Error) as e:
        raise PdmpError(f"cannot open the cache in {path} ({e}); {fix}", 1) from None
    except (TypeError, KeyError, ValueError) as e:  # a Settings row diskcache did not write (disk_*, eviction_policy)
        raise PdmpError(f"cannot open the cache in {path} (its settings are not diskcache's: {type(e).__name__}: {e}); "
                        f"delete that folder (pdmp fills it again), or {fix}", 1) from None


def stable_hash(obj) -> str:
    """sha256 of the canonical JSON form of ``obj`` (first 16 hex digits)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
