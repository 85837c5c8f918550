"""Writing files: the one atomic write of the package, and one line when a place is not writable.

Every file pdmp rewrites (spec, summary, profile, checkpoints, plots, reports) goes through
:func:`atomic_write`: the bytes go to a temp file beside the target, are flushed to disk, and the
temp file is renamed over the target, so a reader (or a killed run) sees the old file or the
new one, never half of one. The temp file is created with mode ``0o666`` filtered by the umask,
like any file ``open(path, "w")`` creates (0644 under the usual umask 022): results on a shared
filesystem stay readable by colleagues (``tempfile.mkstemp`` would make them 0600).

A place that cannot be written (read-only folder or filesystem, a file where a folder should be,
a full disk) raises :class:`~pdmp_cli.errors.PdmpError` naming the path and the cause
(:func:`not_writable`), never a ``PermissionError`` traceback.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pdmp_cli.errors import PdmpError


def not_writable(path: str | os.PathLike, err: OSError, fix: str | None = None) -> PdmpError:
    """The one-line error for an ``OSError`` met while writing ``path``."""
    cause = err.strerror or type(err).__name__
    where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return PdmpError(f"cannot write {path}: {cause}{where}; {fix or 'choose a writable location'}", 1)


def make_dir(path: str | os.PathLike, fix: str | None = None) -> Path:
    """``mkdir -p path``; an unwritable place raises :func:`not_writable`'s PdmpError."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise not_writable(p, e, fix) from None
    return p


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", fix: str | None = None) -> Iterator:
    """Open a temp file beside ``path`` (``mode`` "w" or "wb"); on success flush, fsync and rename
    it to ``path``; on any exception remove it and leave ``path`` as it was.

    Raises:
        PdmpError: the folder cannot be made or written (read-only, full, not a folder).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    p = Path(path)
    make_dir(p.parent, fix)
    tmp = p.parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
    try:
        # 0o666 & ~umask, as for any new file: the kernel applies the umask (mkstemp would use 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise not_writable(p, e, fix) from None
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise not_writable(p, e, fix) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, fix: str | None = None) -> Path:
    with atomic_write(path, "wb", fix) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, fix: str | None = None) -> Path:
    with atomic_write(path, "w", fix) as f:
        f.write(text)
    return Path(path)


def finite_json(obj):
    """``obj`` with every non-finite float (nan, inf) replaced by None: JSON has no such numbers
    (Python would write the non-standard ``Infinity``/``NaN``, which strict parsers reject)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def json_text(obj) -> str:
    """Standard JSON (no ``Infinity``/``NaN`` tokens), indented, with a final newline."""
    return json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj, fix: str | None = None, *, in_place_fallback: bool = False) -> Path:
    """``obj`` as standard JSON at ``path``, atomically.

    ``in_place_fallback``: when the temp file cannot be made (the folder became read-only) but
    ``path`` itself is still writable, overwrite it in place (not atomic): used for the last
    status of a run whose directory stopped being writable, so it never stays ``running``.
    """
    text = json_text(obj)
    try:
        return write_text(path, text, fix)
    except PdmpError as first:
        if not in_place_fallback or not Path(path).is_file():
            raise
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError:
            raise first from None
        return Path(path)
