"""``pdmp train``: parse flags, resolve the TrainSpec, call :func:`pdmp_cli.train.run`, print."""

from __future__ import annotations

import os
import shlex
import sys

import typer

from pdmp_cli.cli._app import app, command, console, err_console, fail, overrides


@app.command("train")
@command
def train_cli(
    profile: str = typer.Option(None, "--profile", help="Dominance profile JSON (from `pdmp analyze` or written by hand)."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset name or manifest path; default: the profile's (must match it)."),
    method: str = typer.Option(None, "--method", help="Method name (default pdmp); `pdmp methods` lists them with their hyperparameters."),
    fusion: str = typer.Option(None, "--fusion", help="concat (default), sum, film, gated (after the encoders); se, mmformer (inside them)."),
    gamma_p: float = typer.Option(None, "--gamma-p", help="gamma_p of Eq. 10 (default 10); lr-scale multiplies every lr by it."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (paper: 100; synthetic presets: 20)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Mini-batch size (paper: 64)."),
    lr: float = typer.Option(None, "--lr", help="SGD learning rate (paper: 1e-3; synthetic presets: 0.01)."),
    seed: int = typer.Option(None, "--seed", help="Seed of model init, data order and noise (default 0)."),
    encoder: str = typer.Option(None, "--encoder", help="Encoder: resnet18 (paper) or small (CPU-sized)."),
    set_: list[str] = typer.Option(None, "--set", help="A method hyperparameter, METHOD.FIELD=VALUE (e.g. --set agm.alpha=1.5); repeatable; `pdmp methods` lists them."),
    grad_clip: float = typer.Option(None, "--grad-clip", help="Clip the total gradient norm (default: off)."),
    num_workers: int = typer.Option(None, "--num-workers", help="DataLoader worker processes (default 0)."),
    data_root: str = typer.Option(None, "--data-root", help="Override the manifest's data root."),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory (default runs/<time>-<dataset>-<method>-<fusion>-g<gamma_p>-s<seed>)."),
    spec: str = typer.Option(None, "--spec", help="Spec file (YAML, TOML or JSON) with any of these options; flags win."),
    resume: str = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
    device: str = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
    skip_bad: bool = typer.Option(None, "--skip-bad", help="Leave out unreadable samples instead of refusing to train."),
    devices: int = typer.Option(None, "--devices", help="Processes (GPUs) on this node; > 1 launches torchrun (DDP); --batch-size stays the global batch."),
    precision: str = typer.Option(None, "--precision", help="fp32 (default), bf16 (autocast; CUDA or CPU) or fp16 (autocast + loss scaling; CUDA)."),
    val_fraction: float = typer.Option(None, "--val-fraction", help="Validation split carved from train when the dataset has none (default 0.1)."),
    select_on_test: bool = typer.Option(None, "--select-on-test", help="No validation split: choose the best epoch on test (the paper's convention; labelled so)."),
    lr_schedule: str = typer.Option(None, "--lr-schedule", help="none (default, the paper's constant lr), step or cosine."),
    lr_step_size: int = typer.Option(None, "--lr-step-size", help="step: epochs between lr drops (default 70, OGM-GE's)."),
    lr_step_gamma: float = typer.Option(None, "--lr-step-gamma", help="step: factor of each drop (default 0.1)."),
    lr_min: float = typer.Option(None, "--lr-min", help="cosine: the lr it anneals to (default 0)."),
    lr_cosine_epochs: int = typer.Option(None, "--lr-cosine-epochs", help="cosine: epochs it anneals over (default: --epochs)."),
    tensorboard: bool = typer.Option(None, "--tensorboard", help="Also write TensorBoard event files into the run directory."),
    threads: int = typer.Option(None, "--threads", help="Intra-op CPU threads, fixed before any work (default: 1 for small; see docs/scaling.md for resnet18)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check spec, data and profile, build and try one batch, estimate the time; write nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output; only the final line."),
):
    """Train a multimodal model with PDMP gradient modulation (Eq. 10-12) or a baseline.

    The performance-dominant modality's encoder gradients are multiplied by gamma_p, every other
    encoder's by 1/gamma_p (or gamma_p when it is also the optimization-dominant one); fusion and
    head are untouched. Writes a run directory: spec.json, profile.json, metrics.jsonl,
    summary.json, checkpoints/last.pt and best.pt. Ctrl-C saves a resumable checkpoint.

    Example: pdmp train --profile profiles/synthetic.json --gamma-p 10

    Several GPUs: pdmp train --devices 4 ... (or torchrun --nproc-per-node 4 -m pdmp_cli train ...).
    """
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.methods import check_set_for, parse_set
    from pdmp_cli.specs import read_spec_file, refuse_ignored_flags
    from pdmp_cli.train import run

    flags = overrides(
        profile=profile, dataset=dataset, method=method, fusion=fusion, gamma_p=gamma_p, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, encoder=encoder, grad_clip=grad_clip,
        num_workers=num_workers, data_root=data_root, run_dir=run_dir, device=device, skip_bad=skip_bad,
        devices=devices, precision=precision, val_fraction=val_fraction, select_on_test=select_on_test,
        method_args=parse_set(set_), lr_schedule=lr_schedule, lr_step_size=lr_step_size, lr_step_gamma=lr_step_gamma,
        lr_min=lr_min, lr_cosine_epochs=lr_cosine_epochs, tensorboard=tensorboard, threads=threads,
    )
    from pdmp_cli import distributed

    if distributed.launched() and os.environ.get("RANK", "0") != "0":
        # one of torchrun's processes: rank 0 prints (every rank meets the same refusals alike)
        console.quiet = err_console.quiet = True
    if resume:
        from pdmp_cli.train.setup import RESUMABLE, resume_spec

        fixed = sorted(set(flags) - RESUMABLE) + (["spec"] if spec else [])
        if fixed:
            raise PdmpError(
                f"--resume continues {resume} with its saved spec; "
                f"{', '.join('--' + k.replace('_', '-') for k in fixed)} cannot be changed (start a new run instead)",
                exit_code=2,
            )
        train_spec = resume_spec(resume, flags)
    else:
        from pdmp_cli.sweep import base_spec

        file_layer = read_spec_file(spec) if spec else {}
        profile_path = flags.get("profile") or file_layer.get("profile")
        if not profile_path:
            raise PdmpError("--profile is required: make one with `pdmp analyze --dataset NAME` or write it by hand", 2)
        train_spec = base_spec(profile_path, dataset=flags.get("dataset"), file_layer=file_layer, flags=flags)
        check_set_for(parse_set(set_), train_spec.method)  # nothing set for a method not run, nor twice
        refuse_ignored_flags(train_spec, flags)  # nor a flag the run would never read

    if dry_run:
        from pdmp_cli.dryrun import dry_run_train

        dry_run_train(train_spec, console, resume=bool(resume))
        return
    if train_spec.devices > 1 and not distributed.launched():
        # torchrun starts `devices` copies of this same command line; each trains its shard
        distributed.per_rank_batch(train_spec.batch_size, train_spec.devices)  # refuse before starting any
        code = distributed.launch(train_spec.devices, sys.argv[1:], device=train_spec.device)
        if code:
            raise typer.Exit(code)
        return
    result = run(train_spec, command=shlex.join(["pdmp", *sys.argv[1:]]), resume=bool(resume), console=console, quiet=quiet)
    s = result.summary
    if s.status == "diverged":
        fail(s.message, 1)
    if s.status == "interrupted":
        from pdmp_cli.signals import interrupt_exit_code

        fail(s.message, interrupt_exit_code())  # 130 after Ctrl-C, 143 after SIGTERM
    if s.message:  # a complete run's warning (weights far past normal): said again at the end
        err_console.print(s.message, highlight=False, soft_wrap=True)
    console.print(headline(s) + f"; {result.run_dir}", highlight=False, soft_wrap=True)


def headline(s) -> str:
    """The closing line: test accuracy at the epoch chosen on validation first, the paper's convention last."""
    if s.selection == "validation":
        chosen = f"test accuracy {s.selected_accuracy:.4f} at the best validation epoch {s.selected_epoch} (val {s.val_accuracy:.4f})"
    else:
        chosen = f"test accuracy {s.selected_accuracy:.4f} at epoch {s.selected_epoch}, SELECTED ON TEST (no validation split)"
    return (
        f"done: {chosen}; final epoch {s.final_accuracy:.4f}, macro-F1 {s.final_macro_f1:.4f}; "
        f"best test epoch (the paper's convention) {s.best_accuracy:.4f} (epoch {s.best_epoch})"
    )
