"""The training loop of ``pdmp train`` (Alg. 1, stage 2), nanoGPT-style: read it top to bottom.

    run = setup(spec)                                    every refusal; writes nothing (train/setup.py)
    open_run_dir(run)                                    the first write
    for epoch:                                           (train_epoch)
        method.on_epoch_start                            PMR, G-Blending, D&R, UDI; others nothing
        for batch:                                       (train_one_epoch)
            for part in method.parts:                    one part (MLA: one per modality)
                method.forward_loss -> method.backward   fused CE, one backward (MMPareto: several)
                -> method.after_backward   PDMP: Eq. 10-12 on the encoders' grads; OGM-GE; nothing
                -> clip -> optimizer.step -> accumulate metrics (tensors: no per-step device sync)
        health -> evaluate (method.predict) -> best.pt, last.pt -> metrics.jsonl -> summary.json
    finish(run, why)                                     every way a run ends: complete, diverged, interrupted

The hooks are documented in :mod:`pdmp_cli.methods`; the objects they see are in
:mod:`pdmp_cli.train.state`. The method's own modules are in the optimizer, in the checkpoints and
(through :class:`~pdmp_cli.train.state.TrainStep`) inside the DDP forward. The run-directory format
is defined in :mod:`pdmp_cli.rundir`; the checkpoint format is :meth:`Run.state_dict`.

Several processes (torchrun, ``pdmp train --devices N``): the model trains in DDP, each rank on
its shard of every global batch; the helpers of :mod:`pdmp_cli.distributed` (no-ops with
one process) agree on metrics and stops, and only rank 0 writes or prints. Mixed precision
(``spec.precision``) is :mod:`pdmp_cli.train.amp`: the modulation always sees unscaled gradients.

Reproducibility: the model is seeded by ``spec.seed``, the data order comes from its own
generator, and ``last.pt`` holds every RNG state, so ``resume`` continues exactly where the
run stopped (mid-epoch after Ctrl-C, or at an epoch end); on CPU with ``num_workers`` 0 the
metrics equal those of an uninterrupted run.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from torch.utils.data import DataLoader

from pdmp_cli import distributed, rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.metrics import dependency, logit_mass, macro_f1
from pdmp_cli.models.multimodal import MultimodalModel
from pdmp_cli.rundir import EpochMetrics, RunSummary, selection_score
from pdmp_cli.runtime import resolve_device, to_device, use_threads
from pdmp_cli.signals import GracefulInterrupt
from pdmp_cli.specs import TrainSpec
from pdmp_cli.train import health
from pdmp_cli.train.setup import Run, epoch_loader, open_run_dir, setup
from pdmp_cli.train.state import EpochContext, EpochStats, StepInfo, TrainStep

CHECK_EVERY = 20  # steps between non-finite-loss checks; each check waits for the device once


@dataclass
class RunResult:
    run_dir: Path
    summary: RunSummary
    metrics: list[EpochMetrics]

    @property
    def status(self) -> str:
        return self.summary.status


@dataclass
class Stop:
    """Why a run ends, handed to :func:`finish`: every exit of the loop is one of these."""

    status: Literal["complete", "diverged", "interrupted"]
    message: str | None = None
    error: BaseException | None = None  # a failure: the summary is written (in place), then this is raised


# -----------------------------------------------------------------------------------------------
# one epoch: the steps, evaluation


def train_one_epoch(
    run: Run,
    loader,
    stats: EpochStats,
    *,
    epoch: int,
    start_step: int,
    stop: GracefulInterrupt,
    on_step: Callable[[StepInfo], None] | None = None,
    advance: Callable[[], None] | None = None,
) -> Literal["diverged", "interrupted"] | None:
    """One pass over ``loader``. Returns None when done, else ``"diverged"`` or ``"interrupted"``.

    ``run.ddp_model`` (several processes) runs the forward pass, so backward averages the gradients
    over ranks; without it the model and the method's loss run as a :class:`TrainStep`.
    ``run.precision``: autocast and fp16 loss scaling.
    """
    model, method, optimizer, precision, device = run.model, run.method, run.optimizer, run.precision, run.device
    grad_clip = run.spec.grad_clip
    forward = run.ddp_model if run.ddp_model is not None else TrainStep(model, method)
    forward.train()
    owned = model.modality_parameters()  # once per epoch, not twice per step (gradient norms)
    # the packed store on CUDA: crop, flip and normalisation of the whole batch on the device, after the copy
    finish_batch = getattr(getattr(loader, "dataset", None), "finish_on_device", None)
    for step, (inputs, labels) in enumerate(loader, start=start_step):
        inputs, labels = to_device(inputs, device), labels.to(device, non_blocking=True)
        if finish_batch is not None:
            inputs = finish_batch(inputs)
        for part in method.parts(epoch):  # one optimizer step each; every method but MLA: one
            with precision.autocast():
                carried, loss = forward(inputs, labels, epoch, part)  # method.forward_loss: CE of the fused logits
                out = carried.value
            optimizer.zero_grad(set_to_none=True)
            method.backward(loss, precision)  # DDP: every rank now holds the same gradients, averaged over ranks
            precision.unscale_(optimizer)  # fp16: true gradients before the norms and the modulation
            before = encoder_grad_norms(owned)
            gamma = method.after_backward(out, labels, epoch)  # PDMP: Eq. 10-12, encoders' grads only
            after = encoder_grad_norms(owned)
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(optimizer_params(optimizer), grad_clip)
            precision.step(optimizer)
        stats.add(step, loss, before, after, gamma)  # the batch's last step
        if on_step is not None:
            on_step(StepInfo(epoch, step, loss.detach(), model, optimizer))
        if advance is not None:
            advance()
        # a non-finite loss is noticed within CHECK_EVERY steps; those steps' weights are never saved.
        # Under DDP, a Ctrl-C too (every rank must stop at the same step: one collective per check)
        at_check = (step + 1) % CHECK_EVERY == 0
        if at_check and stats.bad_step() is not None:
            return "diverged"
        if distributed.any_rank(stop.requested, now=at_check):
            return "diverged" if stats.bad_step() is not None else "interrupted"
    return "diverged" if stats.bad_step() is not None else None


def encoder_grad_norms(owned: dict[str, list[torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    """L2 norm of each modality's own parameters' gradient (0-dim tensors: every step, no sync).

    ``owned``: ``model.modality_parameters()``, resolved once per epoch by the caller (late fusion:
    the encoders; se/mmformer: each stream). A modality without a gradient in this step (MLA's
    other parts, UDI's frozen anchor) gets 0 on the model's device (``get_total_norm([])`` would
    give a CPU tensor).
    """
    out = {}
    for m, params in owned.items():
        grads = [p.grad for p in params if p.grad is not None]
        out[m] = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=params[0].device)
    return out


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for g in optimizer.param_groups for p in g["params"]]


@torch.no_grad()
def evaluate(model: MultimodalModel, loader: DataLoader, device: torch.device, num_classes: int, predict=None) -> dict:
    """Accuracy, macro-F1, each branch's accuracy (argmax of s_m) and Eq. 5 on the test split.

    ``predict``: the method's prediction rule (``out -> out'``, read for the logits and the branch
    logits); default the model's output as it is.
    """
    model.eval()
    preds, labels_all = [], []
    branch_preds: dict[str, list] = {m: [] for m in model.modalities}
    mass = {m: 0.0 for m in model.modalities}
    for inputs, labels in loader:
        out = model(to_device(inputs, device))
        if predict is not None:
            out = predict(out)
        preds.append(out.logits.argmax(dim=1).cpu())
        labels_all.append(labels)
        for m, s in out.branch_logits.items():
            branch_preds[m].append(s.argmax(dim=1).cpu())
        for m, v in logit_mass(out.branch_logits).items():
            mass[m] += v
    model.train()
    # DDP: each rank evaluated its shard; every rank gets all predictions (identity with one process)
    preds, labels = distributed.gather_cat(torch.cat(preds)), distributed.gather_cat(torch.cat(labels_all))
    branch = {m: distributed.gather_cat(torch.cat(p)) for m, p in branch_preds.items()}
    mass = distributed.sum_floats(mass)
    dep = dependency(mass)
    w = dep.get("w")
    return {
        "accuracy": (preds == labels).float().mean().item(),
        "macro_f1": macro_f1(preds, labels, num_classes),
        "branch_accuracy": {m: (p == labels).float().mean().item() for m, p in branch.items()},
        "w": w if w is not None and w == w and abs(w) != float("inf") else None,
        "shares": {m: dep[f"share/{m}"] for m in model.modalities},
    }


def epoch_metrics(run: Run, epoch: int, stats: EpochStats) -> EpochMetrics:
    """Evaluate after ``epoch`` (0-based): validation, then test (unless the run never reads it)."""
    predict, n = run.method.predict, run.bundle.num_classes
    val = evaluate(run.model, run.val_loader, run.device, n, predict) if run.val_loader is not None else {}
    test = evaluate(run.model, run.test_loader, run.device, n, predict) if run.test_loader is not None else None
    shown = test or val  # the branch accuracies, w and shares: on test, else on validation
    means = stats.means()
    return EpochMetrics(
        epoch=epoch + 1,
        train_loss=means["train_loss"],
        test_accuracy=test["accuracy"] if test else None,
        test_macro_f1=test["macro_f1"] if test else None,
        val_accuracy=val.get("accuracy"),
        val_macro_f1=val.get("macro_f1"),
        branch_accuracy=shown["branch_accuracy"],
        w=shown["w"],
        shares=shown["shares"],
        grad_norm_before=means["grad_norm_before"],
        grad_norm_after=means["grad_norm_after"],
        gamma=means["gamma"],
        lr=run.optimizer.param_groups[0]["lr"],
        epoch_seconds=stats.seconds,
    )


# -----------------------------------------------------------------------------------------------
# the run: epochs, and one finish


def train_epoch(run: Run, epoch: int, stop: GracefulInterrupt, log: EpochLog, on_step=None) -> Stop | None:
    """Epoch ``epoch`` (0-based) from its first step, or from ``run.start_step`` in a resumed one:
    the steps, the health checks, evaluation, checkpoints and the epoch line. None: go on."""
    spec, model = run.spec, run.model
    step0 = run.start_step if epoch == run.start_epoch else 0
    stats = run.stats if step0 and run.stats is not None else EpochStats(model.modalities, run.device)
    epoch_gen_state = run.data_gen.get_state()  # a mid-epoch checkpoint replays this order
    if step0 == 0:  # PMR prototypes, G-Blending weights, D&R re-initialisation, stages
        run.method.on_epoch_start(
            EpochContext(epoch, model, run.optimizer, spec, run.bundle, run.device, run.val_split["source"]))
    loader = epoch_loader(run.bundle, spec, run.data_gen, step0, run.device)
    with log.bar(epoch, step0, step0 + len(loader)) as advance:
        t = time.monotonic()
        outcome = train_one_epoch(run, loader, stats, epoch=epoch, start_step=step0, stop=stop, on_step=on_step,
                                  advance=advance)  # fmt: skip
        stats.seconds += time.monotonic() - t

    if outcome == "diverged":
        return Stop("diverged", f"the loss became non-finite at epoch {epoch + 1}, step {stats.bad_step() + 1}; "
                                f"{health.remedy(spec)}; {health.kept_note(run.run_dir, len(run.history))}")  # fmt: skip
    distributed.average_stats_(stats)  # DDP: the global batch's loss; all ranks alike
    distributed.sync_buffers(model)  # DDP: rank 0's BatchNorm statistics everywhere
    # a finite loss does not make a finite model (BatchNorm statistics can overflow): weights,
    # buffers and gradient norms are checked before any checkpoint is written
    if blown := health.blown_up(model, stats, run.precision.kind):
        return Stop("diverged", f"the model blew up in epoch {epoch + 1}: {blown}; {health.remedy(spec)}; "
                                f"{health.kept_note(run.run_dir, len(run.history))}")  # fmt: skip
    if log.huge_note is None and (huge := health.oversized(model)):  # finite, but far past normal
        log.warn(f"warning: after epoch {epoch + 1}, {huge}; {health.remedy(spec)}")
    if outcome == "interrupted":
        if distributed.is_main():
            run.save("last.pt", run.state_dict(epoch, stats.steps, stats, epoch_gen_state))
        return Stop("interrupted", f"interrupted at epoch {epoch + 1}, step {stats.steps}; "
                                   f"continue with `pdmp train --resume {run.run_dir}`")  # fmt: skip

    m = epoch_metrics(run, epoch, stats)
    run.history.append(m)
    run.lr_schedule.step()  # the next epoch's lr (m.lr is the one this epoch trained with)
    if run.best_score is None or selection_score(m) > run.best_score:  # best.pt: the best validation epoch
        run.best_score = selection_score(m)
        if distributed.is_main():
            run.save("best.pt", run.best_state(m))
    if distributed.is_main():
        run.save("last.pt", run.state_dict(epoch + 1))
        rundir.append_metrics(run.run_dir, m)
        log.tensorboard.log(m)
    run.write_summary("running")
    log.epoch_done(m, epoch, run)
    if distributed.any_rank(stop.requested) and epoch + 1 < spec.epochs:
        return Stop("interrupted", f"interrupted after epoch {epoch + 1}; continue with `pdmp train --resume {run.run_dir}`")
    return None


def finish(run: Run, why: Stop) -> RunResult:
    """The one way out: summary.json says how the run ended; a failure is then raised."""
    if why.error is None:
        return RunResult(run.run_dir, run.write_summary(why.status, why.message), run.history)
    try:  # never leave the summary at "running"; in place if the folder itself became read-only
        run.write_summary(why.status, why.message, in_place=True)
    except (PdmpError, OSError):
        pass  # nothing can be written there any more; the error raised says why
    if isinstance(why.error, PdmpError):
        raise why.error from None
    raise why.error


def _resumable(run: Run) -> bool:
    return (run.run_dir / rundir.CHECKPOINTS / "last.pt").exists()


def second_ctrl_c(run: Run) -> Stop:
    """A second Ctrl-C stops at once: last.pt is the last finished epoch."""
    if _resumable(run):
        return Stop("interrupted", f"interrupted; {len(run.history)} epochs saved, continue with "
                                   f"`pdmp train --resume {run.run_dir}`")  # fmt: skip
    return Stop("interrupted", "interrupted before the first epoch finished; nothing to resume")


def failed(run: Run, e: Exception) -> Stop:
    """A write failed (the run directory no longer writable) or the data did: one line, exit code kept.
    Anything else (a bug, CUDA out of memory) is raised as it is. Either way the summary says so."""
    if isinstance(e, (PdmpError, OSError)):
        err = e if isinstance(e, PdmpError) else PdmpError(f"{type(e).__name__}: {e}", 1)
        msg = f"the run stopped: {err}"
        if _resumable(run):
            msg += f"; then continue with `pdmp train --resume {run.run_dir}`"
        return Stop("interrupted", msg, PdmpError(msg, err.exit_code))
    first = str(e).splitlines()[0] if str(e) else ""
    msg = f"the run stopped: {type(e).__name__}: {first}".rstrip(": ")
    if _resumable(run):
        msg += f"; continue with `pdmp train --resume {run.run_dir}`"
    return Stop("interrupted", msg, e)


class EpochLog:
    """What the run says while it trains: the start lines, a progress bar on a terminal, each epoch's
    line and ETA, TensorBoard (rank 0 only writes; other ranks' consoles are quiet)."""

    def __init__(self, run: Run, console):
        from pdmp_cli.progress import Rate
        from pdmp_cli.tracking import TensorBoard

        self.console = console
        self.huge_note: str | None = None  # a warning once weights grow far past normal (health.oversized)
        self.tensorboard = TensorBoard(run.run_dir if run.spec.tensorboard and distributed.is_main() else None,
                                       run.start_epoch)  # fmt: skip
        self.rate = Rate(run.spec.epochs, run.start_epoch)  # the ETA of each epoch line
        self.progress = None
        if not console.quiet and console.is_terminal:  # a log file gets the epoch lines only
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True,
            )
            self.progress.start()

    def say(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)

    def warn(self, line: str) -> None:
        self.huge_note = line
        self.say(line)

    @contextmanager
    def bar(self, epoch: int, done: int, total: int):
        """A progress bar for one epoch's steps; yields its ``advance`` (None without a terminal)."""
        if self.progress is None:
            yield None
            return
        task = self.progress.add_task(f"epoch {epoch + 1}/{self.rate.total}", total=total, completed=done)
        yield lambda: self.progress.advance(task)
        self.progress.remove_task(task)

    def epoch_done(self, m: EpochMetrics, epoch: int, run: Run) -> None:
        from pdmp_cli.progress import cpu_estimate_line

        self.rate.update(epoch + 1)
        self.say(f"{_epoch_line(m, run.spec.epochs)}  {self.rate.eta()}".rstrip())
        if epoch == run.start_epoch and (note := cpu_estimate_line(self.rate.per_unit, run.spec.epochs - epoch - 1, run.device)):
            self.say(note)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.tensorboard.close()


def announce(run: Run, console) -> None:
    """The start lines: where the run goes, the data, the model, the method."""
    spec, bundle = run.spec, run.bundle
    where = f" (resuming at epoch {run.start_epoch + 1}" + (f", after step {run.start_step})" if run.start_step else ")")
    console.print(f"run directory: {run.run_dir}" + (where if run.resumed else ""), soft_wrap=True)
    console.print(
        f"data: {bundle.name}, {len(bundle.train)} train / {_val_words(run.val_split)} / "
        f"{f'{len(bundle.test)} test' if run.evaluate_test else 'test split not read'}, "
        f"{'+'.join(bundle.modalities)}, {bundle.num_classes} classes; model: {spec.encoder} encoders, "
        f"{spec.fusion} fusion; device {run.device}, {spec.threads} thread{'s' if spec.threads != 1 else ''}"
        f"{_scale_note(spec, run.device)}",
        soft_wrap=True,
    )
    if run.data_report.skipped:
        console.print(f"left out {run.data_report.skipped} bad samples (skip_bad)", soft_wrap=True)
    for line in run.packed_lines:
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"method {spec.method}: {run.method.describe()}", highlight=False, soft_wrap=True)
    if spec.lr_schedule != "none":
        console.print(run.lr_schedule.describe(spec), highlight=False, soft_wrap=True)


def run(
    spec: TrainSpec,
    command: str = "",
    *,
    resume: bool = False,
    console=None,
    quiet: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    evaluate_test: bool = True,
) -> RunResult:
    """Train one multimodal model as ``spec`` says and write its run directory.

    ``resume=True`` continues the run in ``spec.run_dir`` from ``checkpoints/last.pt`` (its
    saved profile copy is used; only epochs, device, num_workers and data_root may differ).
    Returns the :class:`RunResult`; ``summary.status`` is ``"complete"``, ``"diverged"``
    (non-finite loss: ``summary.message`` names epoch and step, last.pt keeps the last good
    state) or ``"interrupted"`` (Ctrl-C: last.pt is resumable).

    Started by torchrun (several processes), every process calls this: it joins the process
    group, trains its shard in DDP, and rank 0 alone writes the run directory and prints.

    ``evaluate_test=False`` (``pdmp tune``): no test sample is ever read (the dataset check skips
    them too); each epoch's test fields are None and its branch accuracies, w and shares are
    measured on the validation split.

    Raises:
        PdmpError: a profile that does not fit the dataset, a method that cannot run with this
            profile or dataset, an occupied run directory, a resume that does not fit its run,
            a precision the device cannot run, a global batch that does not split over the ranks.
    """
    # intra-op threads fixed before any work (and saved in spec.json): same thread count, same numbers
    spec = spec.model_copy(update={"threads": use_threads(spec)})
    device, started = distributed.setup(resolve_device(spec.device))  # torchrun: join its group
    try:
        return _run(
            spec, device, command, resume=resume, console=console,
            quiet=quiet or not distributed.is_main(), on_step=on_step, evaluate_test=evaluate_test,
        )
    finally:
        distributed.teardown(started)


def _run(spec: TrainSpec, device: torch.device, command: str, *, resume, console, quiet, on_step, evaluate_test=True) -> RunResult:
    if console is None or quiet:
        from rich.console import Console

        console = Console(quiet=quiet)
    run = setup(spec, device, resume=resume, evaluate_test=evaluate_test)  # every refusal; writes nothing
    open_run_dir(run, command)  # a new run directory, or the resumed one's metrics.jsonl from last.pt
    announce(run, console)
    run.write_summary("running")
    log = EpochLog(run, console)
    try:
        with GracefulInterrupt() as stop:
            for epoch in range(run.start_epoch, run.spec.epochs):
                why = train_epoch(run, epoch, stop, log, on_step)
                if why is not None:  # diverged, blown up, Ctrl-C mid-epoch or after it
                    return finish(run, why)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        return finish(run, second_ctrl_c(run))
    except Exception as e:  # a write or the data failed (one line), or a bug: the summary never stays "running"
        return finish(run, failed(run, e))
    finally:
        log.close()
    return finish(run, Stop("complete", log.huge_note))  # the warning stays with the run


def _scale_note(spec: TrainSpec, device: torch.device) -> str:
    """How the run is spread and in what precision, for the start line ('' for one process in fp32)."""
    w = distributed.world_size()
    ddp = (f" x {w} processes (DDP over {distributed.backend()}; global batch {spec.batch_size} = {w} x "
           f"{spec.batch_size // w})" if distributed.active() else "")
    return ddp + (f"; precision {spec.precision}" if spec.precision != "fp32" else "")


def _val_words(record: dict) -> str:
    """``120 validation (carved 0.1 of train)``, ``no validation: selected on test``..."""
    if record["selection"] == "test":
        return "no validation: best epoch selected on test"
    how = f"carved {record['fraction']:g} of train, seed {record['seed']}" if record["source"] == "carved" else "the dataset's own"
    return f"{record['val_size']} validation ({how})"


def _epoch_line(m: EpochMetrics, epochs: int) -> str:
    w = f"{m.w:.3g}" if m.w is not None else "-"
    branches = " ".join(f"{k} {v:.3f}" for k, v in m.branch_accuracy.items())
    gammas = " ".join(f"{k} {v:.3g}" for k, v in m.gamma.items())
    val = f"val {m.val_accuracy:.4f}  " if m.val_accuracy is not None else ""
    test = f"acc {m.test_accuracy:.4f}  f1 {m.test_macro_f1:.4f}  " if m.test_accuracy is not None else ""
    return (
        f"epoch {m.epoch:>3}/{epochs}  loss {m.train_loss:.4f}  {val}{test}w {w}  branch acc: {branches}  "
        f"gamma: {gammas}  {m.epoch_seconds:.1f}s"
    )
