"""Progress for long commands: rich bars on a terminal, plain lines with an ETA otherwise.

When the output is not a terminal (SLURM, ``nohup``, CI, a pipe) a live bar shows nothing
until the command ends. There every epoch (of each unimodal model in ``pdmp analyze``, of
``pdmp train``, of each run of ``pdmp sweep``/``pdmp demo``) prints one plain line with the
time left, e.g.::

    subset 0.4 · audio: epoch 3/100  acc 0.412  2.1 s/epoch  ETA 3m24s

The ETA is the mean time of this process's epochs so far times the epochs left.
"""

from __future__ import annotations

import time


def plain(console) -> bool:
    """Whether ``console`` gets plain lines (not a terminal) rather than live bars."""
    return not console.is_terminal


def duration(seconds: float) -> str:
    """``37s``, ``4m12s``, ``1h05m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Rate:
    """Mean seconds per unit over the units done since it started; the time left of ``total``."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.start_done, self.done, self.t0 = total, done, done, time.monotonic()

    def update(self, done: int) -> None:
        self.done = done

    @property
    def per_unit(self) -> float | None:
        n = self.done - self.start_done
        return (time.monotonic() - self.t0) / n if n > 0 else None

    @property
    def left(self) -> float | None:
        per = self.per_unit
        return None if per is None else per * (self.total - self.done)

    def eta(self) -> str:
        """``ETA 3m24s``; empty before the first unit and after the last."""
        left = self.left
        return "" if left is None or self.done >= self.total else f"ETA {duration(left)}"


class EpochBars:
    """One bar (terminal) or one line per epoch (not a terminal) for each model trained.

    ``task(description, total)`` returns ``advance(acc=None)``, called after each epoch.
    Disabled (``enabled=False`` or a quiet console): every ``task`` returns None.
    """

    def __init__(self, enabled: bool = True, console=None, unit: str = "epochs"):
        from rich.console import Console

        self.console = console or Console()
        self.enabled = enabled and not self.console.quiet
        self.plain = plain(self.console)
        self.unit = unit
        self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        return False

    def task(self, description: str, total: int, done: int = 0):
        if not self.enabled:
            return None
        if self.plain:
            rate = Rate(total, done)

            def line(acc: float | None = None):
                rate.update(rate.done + 1)
                parts = [f"{description}: epoch {rate.done}/{total}"]
                if acc is not None:
                    parts.append(f"acc {acc:.3f}")
                parts += [f"{rate.per_unit:.1f} s/epoch", rate.eta()]
                self.console.print("  ".join(p for p in parts if p), highlight=False, soft_wrap=True)

            return line
        if self.bar is None:  # started only once something trains (a cache hit shows no bar)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(f"{self.unit}  acc {{task.fields[acc]}}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console,
            )  # fmt: skip
            self.bar.start()
        tid = self.bar.add_task(description, total=total, completed=done, acc="-")

        def advance(acc: float | None = None):
            self.bar.update(tid, advance=1, **({"acc": f"{acc:.3f}"} if acc is not None else {}))

        return advance


def cpu_estimate_line(first_epoch_seconds: float, epochs_left: int, device) -> str | None:
    """After the first epoch on a CPU: one line with the run's estimated duration."""
    if getattr(device, "type", str(device)) != "cpu" or epochs_left <= 0:
        return None
    return (
        f"estimated duration on the CPU: {duration(first_epoch_seconds * epochs_left)} more for the "
        f"{epochs_left} epoch{'s' if epochs_left > 1 else ''} left ({first_epoch_seconds:.1f} s per epoch, from the first)"
    )
