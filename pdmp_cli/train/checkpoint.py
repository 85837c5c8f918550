"""Checkpoints: atomic writes, ``weights_only=True`` loads, and the RNG states that make a
resumed run reproduce an uninterrupted one exactly (on CPU, same seed, ``num_workers`` 0).

Everything stored is a tensor or a plain type (dict, list, str, int, float, None), so
``torch.load(..., weights_only=True)`` reads it back without unpickling arbitrary objects.

Integrity: :func:`save` records each checkpoint's size and sha256 beside it
(``<name>.sha256``, JSON); :func:`load` compares both before torch reads a byte, so a damaged
file (a bit flip, a copy cut short) is refused in one line instead of being loaded. The record
keeps the entries of the records before it (:data:`RECORD_KEEPS`), so a save cut off between
writing the record and renaming the checkpoint into place, even twice, still verifies; a record
that cannot be read is said so (delete it to load unchecked). Checkpoints of older runs (no
record) load as before. Any failure while writing (torch reports a full disk as ``RuntimeError``) is a
:class:`~pdmp_cli.errors.PdmpError` in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from pdmp_cli.errors import PdmpError
from pdmp_cli.fsutil import atomic_write

FORMAT_VERSION = 1


def record_path(path: str | os.PathLike) -> Path:
    """Where the size and sha256 of checkpoint ``path`` are recorded."""
    p = Path(path)
    return p.with_name(p.name + ".sha256")


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


RECORD_KEEPS = 3  # earlier entries a record keeps


class _Hashing:
    """A write-only file that hashes and counts what goes through it (torch.save writes in order)."""

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha256.update(b)
        self.size += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def _entries(rec: dict | None) -> list[dict]:
    """A record's entries, newest first: its own, then the ones it kept (``previous``)."""
    if not rec:
        return []
    prev = rec.get("previous")
    prev = prev if isinstance(prev, list) else [prev]
    return [e for e in [rec, *prev] if isinstance(e, dict) and "size" in e and "sha256" in e]


def save(path: str | os.PathLike, obj: dict) -> Path:
    """torch.save to a temp file beside ``path``, then rename: never half a checkpoint. Its size
    and sha256 are recorded in ``<path>.sha256`` (see the module docstring).

    Raises:
        PdmpError: anything failing while writing (a full disk: torch raises ``RuntimeError``;
            a folder that is no longer writable: ``OSError``), in one line.
    """
    p = Path(path)
    try:
        # the entries of the file still in place: the last record's, and what it kept (a failed save may
        # have recorded an entry that never landed); a few, so a cut-off save still verifies
        previous = [{k: e.get(k) for k in ("size", "sha256")} for e in _entries(_read_record(p))][:RECORD_KEEPS]
        with atomic_write(p, "wb") as f:  # renamed into place when this block ends
            w = _Hashing(f)
            torch.save({"format": FORMAT_VERSION, **obj}, w)  # hashed as written: no second pass, no copy
            with atomic_write(record_path(p), "w") as r:  # the record first: then the file it describes
                json.dump({"size": w.size, "sha256": w.sha256.hexdigest(), "previous": previous}, r)
    except PdmpError:  # atomic_write's one line: the place is not writable (full disk, read-only)
        raise
    except (RuntimeError, OSError) as e:  # torch: "PytorchStreamWriter failed writing file ..." for ENOSPC
        text = str(e).strip()
        cause = getattr(e, "strerror", None) or (text.splitlines()[0] if text else type(e).__name__)
        raise PdmpError(f"cannot save checkpoint {p}: {cause}; free disk space (or make the folder writable)", 1) from None
    return p


def verify(path: str | os.PathLike) -> None:
    """Compare ``path`` with the size and sha256 recorded when it was saved (no record: older
    runs, nothing to compare). A mismatch raises PdmpError before anything is loaded."""
    p = Path(path)
    if not record_path(p).exists():
        return
    entries = _entries(_read_record(p))
    if not entries:
        raise PdmpError(f"the integrity record {record_path(p)} of checkpoint {p} is unreadable; delete the record "
                        "to load the checkpoint unchecked, or start a new run", 1)
    size = p.stat().st_size
    if not any(e["size"] == size for e in entries):
        why = f"it is {size} bytes, {entries[0]['size']} were written"
    else:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if any(e["size"] == size and e["sha256"] == h.hexdigest() for e in entries):
            return
        why = "its sha256 differs from the one recorded when it was saved (its bytes changed)"
    raise PdmpError(f"checkpoint {p} is damaged: {why} ({record_path(p).name}); it is not loaded. "
                    "Restore it from a copy, or start a new run", 1)


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    p = Path(path)
    if not p.is_file():
        raise PdmpError(f"checkpoint {p} does not exist; the run finished no epoch and no step to resume from", 2)
    verify(p)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, foreign or tampered file
        raise PdmpError(f"checkpoint {p} could not be read ({type(e).__name__}: {e}); start a new run", 1) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION:
        raise PdmpError(f"checkpoint {p} is not a pdmp checkpoint of format {FORMAT_VERSION}; start a new run", 1)
    return ckpt


def load_last(run_dir: str | os.PathLike, map_location="cpu") -> dict:
    """``<run_dir>/checkpoints/last.pt``, to resume from. Missing, the message says whether the
    run finished no epoch or its checkpoint was deleted (``summary.json`` records epochs)."""
    import json

    from pdmp_cli import rundir

    run_dir = Path(run_dir)
    p = run_dir / rundir.CHECKPOINTS / "last.pt"
    if not p.is_file():
        try:
            done = int(json.loads((run_dir / rundir.SUMMARY).read_text()).get("epochs_done") or 0)
        except (OSError, ValueError, AttributeError, TypeError):
            done = 0
        if done:
            raise PdmpError(
                f"cannot resume {run_dir}: {p} is missing, though summary.json records {done} finished "
                "epochs (was it deleted or moved?); put it back, or start a new run",
                1,
            )
    return load(p, map_location)


def rng_state() -> dict:
    """Python, NumPy, torch (CPU and CUDA) RNG states as tensors and plain types."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
