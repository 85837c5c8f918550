"""Stop signals, Ctrl-C (SIGINT) and SIGTERM (scancel, Kubernetes, systemd, `kill`) alike.

No torch here: the CLI wrapper imports this at start-up (``pdmp --help`` stays fast).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the stop signals this process received, in order


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a graceful section: unwinds like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum, frame):
    _received.append(signum)
    raise Terminated


def record_signal(signum: int) -> None:
    """Count a stop signal another handler received (``pdmp_cli.pool`` passes them on to its processes)."""
    _received.append(signum)


def interrupt_exit_code() -> int:
    """The exit code of a run stopped by a signal: 128 + its number, the shell's convention
    (143 after SIGTERM, 130 after Ctrl-C; 130 when none was seen, e.g. a KeyboardInterrupt)."""
    return 128 + int(_received[-1]) if _received else 130


@contextmanager
def sigterm_as_interrupt():
    """Within: SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, as
    Ctrl-C does, so a command stops through its Ctrl-C handling instead of dying silently.
    Forgets the signals received before (one command, one exit code); restores the old handler."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """``worker_init_fn`` of DataLoaders: workers ignore SIGINT and SIGTERM (a terminal or a
    scheduler signals the whole process group), so the main process stops them after saving."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class GracefulInterrupt:
    """Ctrl-C or SIGTERM once: finish the current step, save a resumable checkpoint, stop.
    Twice: stop now (KeyboardInterrupt, or :class:`Terminated` for SIGTERM)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        _received.append(signum)
        if self.requested:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False
