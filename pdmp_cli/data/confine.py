"""Paths built from list data stay inside their folder.

A dataset's lists may come from anywhere (a release page, a colleague, a scraped csv); their ids
are filled into the manifest's path patterns. :func:`confine` refuses, before anything is read,
written or deleted, a filled path that would leave the data root (``../../victim``, an absolute
path), name a whole folder instead of a sample (an id ``.`` or empty), hold a control character
(NUL, a newline) or a name longer than the filesystem allows. Callers turn the refusal into a
``bad row`` problem naming the list line (:mod:`pdmp_cli.data.loaders.files`) or a one-line
error (:mod:`pdmp_cli.data.prepare`).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path


UNSAFE_TAIL = "the row is left out (a list may come from anywhere: fix or delete that line)"


class UnsafePath(ValueError):
    """A path built from list data that would leave its folder (or cannot name a file)."""


@functools.lru_cache(maxsize=64)
def _name_max(folder: str) -> int:
    try:
        return os.pathconf(folder if os.path.isdir(folder) else ".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the filesystem of ``folder`` allows (255 where unknown)."""
    return _name_max(str(folder))


def confine(base: Path, rel: str, limit: int | None = None) -> Path:
    """``base / rel`` for ``rel`` filled in from list data, refused (:class:`UnsafePath`, the
    reason) unless it stays inside ``base``: no absolute path, no ``.``/``..``/empty component
    (an id ``.`` would name every sample's folder), no control character (NUL, newline), no
    component longer than the filesystem allows. The check is on the path as written, before
    anything is read, written or deleted; symlinks that the root's owner put under ``base`` are
    followed as they are (they are not list data)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise UnsafePath("holds a control character (NUL, newline, ...)")
    text = rel.replace("\\", "/")  # a backslash is a separator on Windows: checked as one everywhere
    if text.startswith("/") or (os.name == "nt" and re.match(r"^[A-Za-z]:", text)):
        raise UnsafePath("is an absolute path")
    parts = text.split("/")
    if len(parts) > 1 and parts[0] == ".":  # a pattern written as './audio/{id}.wav'
        parts = parts[1:]
    limit = limit or name_max(base)
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"has a {part!r} component" if part else "has an empty component")
        if len(part.encode("utf-8", "surrogateescape")) > limit:
            raise UnsafePath(f"has a name longer than the filesystem's limit of {limit} bytes")
    out = Path(os.path.normpath(base / "/".join(parts)))
    if not out.is_relative_to(os.path.normpath(base)) or out == Path(os.path.normpath(base)):
        raise UnsafePath(f"leads outside {base}")
    return base / rel


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies strictly below ``folder``, as written (``..`` resolved lexically)."""
    p, f = os.path.normpath(path), os.path.normpath(folder)
    return p != f and Path(p).is_relative_to(f)
