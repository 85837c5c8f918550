"""Data-parallel training with PyTorch's own engine: torchrun + DistributedDataParallel (DDP).

Small helpers the training loop calls; with one process every one of them is a no-op (or the
identity), so a single-process run takes exactly the code path it always took.

    torchrun --nproc-per-node 4 -m pdmp_cli train --profile p.json ...   (or: pdmp train --devices 4)

What DDP changes, and where:

* **process group** (:func:`setup`): joined from torchrun's env vars (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR/PORT); nccl on CUDA (one GPU per process: ``cuda:LOCAL_RANK``), gloo
  on CPU.
* **data** (:func:`shard`): ``batch_size`` is the *global* batch. Every rank draws the same
  permutation of the training set (same generator, same seed); torch's ``DistributedSampler``
  (``shuffle=False``) gives rank r the positions r, r+W, r+2W... of it, so the union of the W
  per-rank batches of step s is exactly the batch a single process sees at step s.
* **gradients**: DDP averages them across ranks inside ``loss.backward()``; PDMP's Eq. 10-12
  and OGM-GE then act on these identical, reduced gradients, so every rank scales identically.
  OGM-GE's coefficient is computed from summed-over-ranks scores (:func:`all_reduce_`) and its
  GE noise from a generator every rank seeds alike (:func:`shared_generator`).
* **metrics**: epoch sums are averaged over ranks (:func:`average_stats_`), evaluation runs on a
  shard of the test set per rank and gathers the predictions (:func:`gather_cat`).
* **files and printing**: rank 0 only (:func:`on_main`, :func:`is_main`); checkpoints hold the
  unwrapped model, so a run resumes with any number of processes (or a single one).
* **stopping**: Ctrl-C and non-finite losses are agreed on by all ranks (:func:`any_rank`) every
  ``CHECK_EVERY`` steps and at epoch ends, so no rank waits forever in a collective.

BatchNorm statistics stay per rank (DDP's default; BN buffers are broadcast from rank 0 at
every forward): a run with W processes therefore differs slightly from a single-process run
with the same global batch. ``SyncBatchNorm`` is not used: it needs CUDA, and costs a
collective per BN layer per step.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from pdmp_cli.errors import PdmpError

T = TypeVar("T")


# -----------------------------------------------------------------------------------------------
# who am I


def launched() -> bool:
    """True when torchrun (or a launcher like it) started this process, even as the only one:
    ``torchrun --nproc-per-node 1`` runs the DDP path (nccl on one GPU), as users expect."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def active() -> bool:
    """A process group is up (torchrun's, or one the caller's script made): DDP and collectives on."""
    return dist.is_available() and dist.is_initialized()


def backend() -> str | None:
    return dist.get_backend() if active() else None


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 writes files and prints; so does a single process."""
    return rank() == 0


def setup(device: torch.device) -> tuple[torch.device, bool]:
    """Join torchrun's process group if this process is one of several; this rank's device.

    ``device`` is the resolved ``spec.device`` (cpu or cuda). Returns ``(device, started)``:
    ``started`` is True when this call created the process group (the caller then ends it
    with :func:`teardown`); a process group the caller's own script made is used as it is.
    """
    if not launched() and not active():
        return device, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise PdmpError(
                f"process with LOCAL_RANK {local_rank} has no GPU of its own: this node has {n}; "
                f"start at most {n} processes per node (torchrun --nproc-per-node {n})",
                exit_code=2,
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if active():
        return device, False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, True


def teardown(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in DDP when several processes train; ``model`` itself otherwise.

    The loop keeps the unwrapped model for everything but the training forward pass
    (encoders, evaluation, checkpoints), so a checkpoint never carries DDP's ``module.`` prefix.
    """
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=find_unused_parameters
    )


# -----------------------------------------------------------------------------------------------
# data


def per_rank_batch(batch_size: int, world: int | None = None) -> int:
    """Each rank's share of the global ``batch_size`` over ``world`` (default: this run's) processes."""
    w = world or world_size()
    if batch_size % w:
        lo, hi = batch_size - batch_size % w, batch_size + w - batch_size % w
        raise PdmpError(
            f"batch_size {batch_size} is the global batch and must divide evenly over {w} processes; "
            f"use --batch-size {lo or hi} or {hi}",
            exit_code=2,
        )
    return batch_size // w


def shard(order: list[int]) -> list[int]:
    """This rank's positions r, r+W, r+2W... of ``order`` (padded to a multiple of W by torch's
    DistributedSampler, which repeats a few leading samples when W does not divide the length)."""
    if not active():
        return order
    from torch.utils.data import DistributedSampler

    positions = DistributedSampler(order, num_replicas=world_size(), rank=rank(), shuffle=False)
    return [order[i] for i in positions]


def eval_shard(n: int) -> list[int] | None:
    """This rank's share of an ``n``-sample evaluation split (no padding: each sample once)."""
    return list(range(rank(), n, world_size())) if active() else None


# -----------------------------------------------------------------------------------------------
# collectives (identity with one process)


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place over ranks: ``sum``, ``mean``, ``max`` or ``min``. Returns ``t``."""
    if active():
        ops = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(t, op=ops[op])
        if op == "mean":
            t.div_(world_size())
    return t


def any_rank(flag: bool, now: bool = True) -> bool:
    """Whether ``flag`` is set on any rank. With one process: ``flag``. Under DDP every rank must
    call this at the same point; with ``now=False`` it answers False without communicating (the
    loop asks only every ``CHECK_EVERY`` steps, not every step)."""
    if not active():
        return flag
    if not now:
        return False
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(flag)], device=device)
    return bool(all_reduce_(t, "max").item())


def first_step(step: torch.Tensor) -> int | None:
    """The smallest non-negative of the ranks' ``step`` values (-1 = none), or None."""
    none = torch.iinfo(torch.long).max
    t = torch.where(step < 0, torch.full_like(step, none), step).reshape(1)
    s = int(all_reduce_(t, "min").item())
    return None if s == none else s


def average_stats_(stats) -> None:
    """Average an :class:`~pdmp_cli.train.state.EpochStats`' sums over ranks, in place.

    Each rank's loss is the mean over its share of the global batch, so the average over ranks
    is the global batch's mean loss. Gradient norms and factors are computed from the reduced
    (identical) gradients: averaging leaves them as they are. A mid-epoch checkpoint's sums are
    the same on every rank, so averaging them again after a resume changes nothing.
    """
    if not active():
        return
    for d in (stats.norm_before, stats.norm_after, stats.gamma):
        for v in d.values():
            all_reduce_(v, "mean")
    all_reduce_(stats.loss, "mean")
    all_reduce_(stats.norm_steps, "mean")
    stats.first_bad_step.fill_(-1 if (s := first_step(stats.first_bad_step)) is None else s)


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (CPU; lengths may differ by rank) concatenated along dim 0, in rank order."""
    if not active():
        return t
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


def sum_floats(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over ranks."""
    if not active():
        return values
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, values)
    return {k: sum(p[k] for p in parts) for k in values}


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so that evaluation and the
    checkpoint see one model. DDP broadcasts them at the start of each forward; the last
    training step leaves each rank with its own."""
    if active():
        for b in model.buffers():
            dist.broadcast(b, src=0)


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only; every rank gets its result, or raises its :class:`PdmpError`.

    For what only rank 0 may do but every rank must know (making the run directory, whose name
    holds the time, or refusing an occupied one).
    """
    if not active():
        return fn()
    box: list = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except PdmpError as e:
            box[0] = ("error", str(e), e.exit_code)
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        raise PdmpError(box[0][1], exit_code=box[0][2])
    return box[0][1]


def shared_generator(device: torch.device) -> torch.Generator | None:
    """A generator seeded alike on every rank (rank 0 draws the seed from its global RNG, which
    checkpoints save); None with one process, where the global RNG serves as it always did."""
    if not active():
        return None
    seed = torch.randint(0, 2**62, (1,), device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(seed, src=0)
    return torch.Generator(device=device).manual_seed(int(seed.item()))


# -----------------------------------------------------------------------------------------------
# `pdmp train --devices N`: torchrun for the user


def launch(nproc: int, argv: list[str], device: str = "auto") -> int:
    """Run ``python -m pdmp_cli *argv`` in ``nproc`` processes on this node through torchrun's
    own launcher (``torch.distributed.run``, ``--standalone``); return the exit code (the
    first failing rank's, or 0).

    Each process already prints its own one-line error, so torchrun's failure report is not
    repeated. Raises PdmpError when CUDA is asked for and the node has fewer than ``nproc`` GPUs.
    """
    import logging

    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    if nproc < 2:
        raise PdmpError(f"--devices {nproc}: launching needs at least 2 processes", exit_code=2)
    uses_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if uses_cuda and torch.cuda.device_count() < nproc:
        raise PdmpError(
            f"--devices {nproc} asks for {nproc} GPUs, this machine has {torch.cuda.device_count()}; "
            f"pass --devices {torch.cuda.device_count()} or fewer (or --device cpu to test on CPU)",
            exit_code=2,
        )
    if "OMP_NUM_THREADS" not in os.environ:  # N CPU processes must not each take every core
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "pdmp_cli", *argv])
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # torchrun's failure report: each rank printed its own line
    try:
        torchrun(args)
    except ChildFailedError as e:
        first = min(e.failures.values(), key=lambda f: f.timestamp)
        return first.exitcode if first.exitcode > 0 else 1
    except SignalException as e:  # Ctrl-C (or SIGTERM): torchrun passed it on to every rank, which
        return 128 + int(e.sigval)  # saved a resumable checkpoint within CHECK_EVERY steps
    finally:
        quiet.setLevel(level)
    return 0
