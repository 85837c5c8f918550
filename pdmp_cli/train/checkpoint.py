"""Checkpoints: atomic writes, ``weights_only=True`` loads, and the RNG states that make a
resumed run reproduce an uninterrupted one exactly (on CPU, same seed, ``num_workers`` 0).

Everything stored is a tensor or a plain type (dict, list, str, int, float, None), so
``torch.load(..., weights_only=True)`` reads it back without unpickling arbitrary objects.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from pdmp_cli.errors import PdmpError
from pdmp_cli.fsutil import atomic_write

FORMAT_VERSION = 1


def save(path: str | os.PathLike, obj: dict) -> Path:
    """torch.save to a temp file beside ``path``, then rename: never half a checkpoint."""
    with atomic_write(path, "wb") as f:
        torch.save({"format": FORMAT_VERSION, **obj}, f)
    return Path(path)


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    p = Path(path)
    if not p.is_file():
        raise PdmpError(f"checkpoint {p} does not exist; the run finished no epoch and no step to resume from", 2)
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
