"""Independent runs side by side, each in its own spawned process (``--jobs``).

    from pdmp_cli.pool import Task, default_jobs, run_tasks
    results = run_tasks([Task("a", fn, (x,)), Task("b", fn, (y,))], jobs=2, on_message=print)

``fn(*args, report)`` runs in a fresh process (``spawn``: safe with CUDA and with OpenMP thread
pools, which ``fork`` is not) and must be a module-level function; ``report(message)`` sends a
message to the parent's ``on_message(key, message)`` (progress), and the return value comes back
as that task's result. At most ``jobs`` processes run at once; the next task starts when one
ends. Used by ``pdmp analyze`` (one unimodal model per process), ``pdmp sweep`` and ``pdmp demo``
(one training run per process).

Stopping: the processes run in their own process group, so a Ctrl-C at the terminal reaches the
parent alone, which passes each stop signal (SIGINT or SIGTERM) once to every running process
and starts no new task. A training run stops there as ``pdmp train`` does after Ctrl-C: it
finishes its step and saves a resumable checkpoint. A second Ctrl-C is passed on too and stops
the processes at once. The tasks that never started are returned as not started.
"""

from __future__ import annotations

import os
import queue as queue_module
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

START_METHOD = "spawn"


@dataclass
class Task:
    key: Hashable
    fn: Callable  # module-level: fn(*args, report) -> result (picklable)
    args: tuple = ()
    device: str | None = None  # "cuda:i": the process makes it its current device


@dataclass
class PoolResult:
    results: dict = field(default_factory=dict)  # key -> fn's return value
    errors: dict = field(default_factory=dict)  # key -> one line (PdmpError's message, or the exception)
    not_started: list = field(default_factory=list)  # keys never started (the pool was stopped)
    stopped_by: int | None = None  # the stop signal received, if any


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


PROC_STAT = "/proc/stat"  # Linux: every core's time since boot, by kind


def busy_cores(interval: float = 0.25) -> float | None:
    """Cores other work keeps busy right now: the non-idle share of all cores' time over ``interval``
    seconds (Linux ``/proc/stat``; this process sleeps meanwhile), times the cores. None where there
    is no ``/proc/stat``. Unlike the load average (a 1-minute mean) it does not still count a job
    that ended a minute ago, nor miss one that just started."""

    def totals() -> tuple[int, int]:
        with open(PROC_STAT) as f:
            fields = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(fields), fields[3] + fields[4]

    try:
        total0, idle0 = totals()
        time.sleep(interval)
        total1, idle1 = totals()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def free_cores() -> int:
    """Usable cores minus the ones other work keeps busy (:func:`busy_cores`, rounded; where that
    cannot be read, the 1-minute load average); at least 1."""
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
            busy = 0.0
    return max(1, usable_cores() - round(busy))


def default_jobs(device_type: str, threads: int, gpus: int = 0) -> int:
    """``--jobs`` when not given: one run per visible GPU on CUDA; on the CPU, the free cores
    (:func:`free_cores`) ÷ the threads of each run, at least 1."""
    if device_type == "cuda":
        return max(1, gpus)
    return max(1, free_cores() // max(1, threads))


def _child(q, key, fn, args, device) -> None:
    """A task in its spawned process: its own process group (the parent alone hears the terminal's
    Ctrl-C and passes it on once), its device, then ``fn``; the result or the error goes to ``q``."""
    try:
        os.setpgrp()
    except (AttributeError, OSError):  # pragma: no cover - not POSIX
        pass
    try:
        if device and device.startswith("cuda"):
            import torch

            torch.cuda.set_device(torch.device(device))
        result = fn(*args, lambda message: q.put(("message", key, message)))
        q.put(("done", key, result))
    except BaseException as e:  # noqa: BLE001 - reported by the parent as one line
        from pdmp_cli.errors import PdmpError

        q.put(("error", key, str(e) if isinstance(e, PdmpError) else f"{type(e).__name__}: {e}"))


def run_tasks(
    tasks: list[Task],
    jobs: int,
    *,
    on_message: Callable[[Hashable, Any], None] | None = None,
    on_start: Callable[[Hashable], None] | None = None,
    on_done: Callable[[Hashable, Any], None] | None = None,
    stop_on_error: bool = False,
) -> PoolResult:
    """Run ``tasks``, at most ``jobs`` at a time, each in its own spawned process; see the module doc.

    ``on_start(key)`` as a task's process starts, ``on_message(key, message)`` for each
    ``report``, ``on_done(key, result)`` when one returns. ``stop_on_error``: the first error stops
    the other processes (terminated: for work with nothing to save) and starts no new task.
    A process that dies without a word (out of memory, killed) is an error naming its exit code.
    """
    import multiprocessing as mp

    ctx = mp.get_context(START_METHOD)
    q = ctx.Queue()
    pending = list(tasks)
    running: dict = {}  # key -> Process
    out = PoolResult()
    signals: list[int] = []

    def forward(signum, frame):  # the parent's Ctrl-C / SIGTERM: to every running process, once each
        signals.append(signum)
        for p in list(running.values()):
            if p.is_alive():
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass

    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    failed = False
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs) and not signals and not failed:
                t = pending.pop(0)
                p = ctx.Process(target=_child, args=(q, t.key, t.fn, t.args, t.device), name=f"pdmp-job-{t.key}")
                p.start()
                running[t.key] = p
                if on_start:
                    on_start(t.key)
            if not running:
                break
            try:
                kind, key, value = q.get(timeout=0.5)
            except queue_module.Empty:  # a process killed without a word (out of memory, a signal):
                for key, p in list(running.items()):  # its feeder flushed before it ended, so nothing is left
                    if p.exitcode not in (None, 0):
                        out.errors[key] = f"its process ended with exit code {p.exitcode}"
                        running.pop(key).join()
                        failed = failed or stop_on_error
                continue
            _handle((kind, key, value), running, out, on_message, on_done)
            if stop_on_error and out.errors and not failed:
                failed = True
                for p in running.values():
                    if p.is_alive():
                        p.terminate()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in running.values():  # an exception here (not a signal): nothing keeps running
            if p.is_alive():
                p.terminate()
            p.join()
    out.not_started = [t.key for t in pending]
    out.stopped_by = signals[0] if signals else None
    if signals:
        from pdmp_cli.signals import record_signal

        record_signal(signals[-1])  # the command's exit code: 128 + the signal
    return out


def _handle(msg, running, out, on_message, on_done) -> None:
    kind, key, value = msg
    if kind == "message":
        if on_message:
            on_message(key, value)
        return
    if kind == "done":
        out.results[key] = value
        if on_done:
            on_done(key, value)
    else:
        out.errors[key] = value
    p = running.pop(key, None)
    if p is not None:
        p.join()
