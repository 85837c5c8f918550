"""Experiment tracking: TensorBoard event files beside ``metrics.jsonl`` (``--tensorboard``).

Written through PyTorch's own ``torch.utils.tensorboard.SummaryWriter`` into the run
directory, one scalar per number of each ``metrics.jsonl`` line at ``global_step`` = epoch:
``test_accuracy``, ``test_macro_f1``, ``train_loss``, ``lr``, ``w``, ``epoch_seconds``, and the
per-modality ones as ``branch_accuracy/<m>``, ``gamma/<m>``, ``grad_norm_before/<m>``,
``grad_norm_after/<m>``, ``shares/<m>`` (nested dicts become ``/``-joined tags; a ``null``
value, e.g. ``w`` when undefined, is left out). Whatever a metrics line gains later is logged
the same way. A resumed run purges the events after its checkpoint's epoch, so no epoch is
logged twice. ``tensorboard --logdir runs/`` shows every run.

The ``tensorboard`` package is an optional extra: ``pip install 'pdmp[tensorboard]'``.
"""

from __future__ import annotations

import math
from pathlib import Path

from pdmp_cli.errors import PdmpError

MISSING = "--tensorboard needs the tensorboard package: pip install 'pdmp[tensorboard]' (or drop --tensorboard)"


def require() -> None:
    """Raise the one-line PdmpError when ``torch.utils.tensorboard`` cannot be used."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise PdmpError(MISSING, 2) from None


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Every finite number of a metrics record, nested keys joined with ``/``."""
    out: dict[str, float] = {}
    for k, v in record.items():
        tag = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(scalars(v, tag + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and math.isfinite(v):
            out[tag] = float(v)
    return out


class TensorBoard:
    """Logs each epoch's metrics; a no-op unless enabled."""

    def __init__(self, run_dir: Path | None, start_epoch: int = 0):
        self.writer = None
        if run_dir is not None:
            require()
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run rewrites the epochs after its checkpoint (global_step = epoch)
            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_epoch + 1 if start_epoch else None)

    def log(self, metrics) -> None:
        if self.writer is None:
            return
        record = metrics.model_dump(mode="json") if hasattr(metrics, "model_dump") else dict(metrics)
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
