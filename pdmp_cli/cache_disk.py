"""The diskcache ``Disk`` of every pdmp cache: no pickles in, none out (see :mod:`pdmp_cli.cache`).

A module of its own, so the class is importable by name: a pickled ``diskcache.Cache`` (sent to a
worker process) carries its Disk class by reference.
"""

from __future__ import annotations

import os
from pathlib import Path

import diskcache
from diskcache.core import MODE_PICKLE, MODE_RAW, UNKNOWN


class ForeignEntry(OSError):
    """An entry in pickle form: diskcache's ``Cache.get`` treats an OSError as a miss."""


class SafeDisk(diskcache.Disk):
    """Stores bytes, str, int, float and None as diskcache does without pickling; refuses
    anything else (TypeError); never unpickles a key or a value, and never reads or deletes a file
    outside the cache folder (a row whose filename leads out is a foreign entry)."""

    def put(self, key):
        if type(key) not in (str, bytes, int, float):
            raise TypeError(f"pdmp cache keys are str, bytes or numbers, got {type(key).__name__}")
        return super().put(key)

    def get(self, key, raw):
        if not raw:  # a pickled key: never unpickled
            return bytes(key)
        return super().get(key, raw)

    def store(self, value, read, key=UNKNOWN):
        if value is None:  # diskcache.Lock stores None
            return 0, MODE_RAW, None, None
        if not read and type(value) not in (bytes, str, int, float):
            raise TypeError(f"pdmp caches store bytes, str or numbers (no pickles), got {type(value).__name__}")
        return super().store(value, read, key)

    def _inside(self, filename) -> bool:
        """Whether a row's ``filename`` names a file inside the cache folder (diskcache joins it to
        the folder unchecked: a planted ``../../x`` would be read, and deleted on replace)."""
        if not isinstance(filename, str) or not filename or os.path.isabs(filename):
            return False
        base = os.path.normpath(self._directory)
        full = os.path.normpath(os.path.join(base, filename))
        return full != base and full.startswith(base + os.sep)

    def fetch(self, mode, filename, value, read):
        if mode == MODE_PICKLE or (filename is not None and not self._inside(filename)):
            from pdmp_cli.cache import note_foreign

            note_foreign(Path(self._directory).name)
            raise ForeignEntry("a pickled value" if mode == MODE_PICKLE else "a file outside the cache")
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path):
        if self._inside(file_path):  # never delete outside the cache folder (a planted row)
            super().remove(file_path)
