"""``pdmp train --dry-run`` and ``pdmp analyze --dry-run``: check a run before it starts.

A dry run resolves the spec (the command did), checks the data and the profile as the real
run would, builds the model and the method, runs forward and backward passes (and optimizer
steps) on one training batch, then prints the parameters per modality, the gradient factor γ per
modality and an estimate of the time per epoch. Whatever the real run refuses before it trains
(a profile of other data, an occupied ``--run-dir``, fp16 on a CPU, a batch that does not
split over ``--devices``, a missing TensorBoard package, an unwritable ``--out``...) it refuses
with the same one line. It writes nothing: no run directory, no profile, no spec file (the
dataset check may fill the cache, as any command does).

The estimate times a second step on the same batch and a second evaluation of one batch (the
first ones pay one-off start-up costs: allocations, kernel choice), times the steps and
evaluation batches of an epoch. With ``num_workers`` > 0 loading overlaps compute and the
estimate takes the slower of the two.
"""

from __future__ import annotations

import math
import time

import torch

from pdmp_cli.errors import PdmpError
from pdmp_cli.progress import duration


def _count(params) -> int:
    return sum(p.numel() for p in params)


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def _timed_batch(loader):
    t = time.perf_counter()
    batch = next(iter(loader))
    return batch, time.perf_counter() - t


def _per_step(load: float, step: float, workers: int) -> float:
    """Seconds per training step: loading overlaps compute when workers prefetch."""
    return max(load / workers, step) if workers > 0 else load + step


def dry_run_train(spec, console, *, resume: bool = False) -> dict:
    """Everything ``pdmp train`` does before its first write, plus one training step.

    Returns what it printed as a dict (parameters, gamma, seconds per epoch).
    """
    from torch.utils.data import DataLoader, Subset

    from pdmp_cli.runtime import resolve_device
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train import health
    from pdmp_cli.train.loop import evaluate, optimizer_params, train_one_epoch
    from pdmp_cli.train.setup import epoch_loader, setup
    from pdmp_cli.train.state import EpochStats

    if resume:
        raise PdmpError("--dry-run checks a new run; drop --resume (a resumed run was checked when it started)", 2)
    device = resolve_device(spec.device)
    run = setup(spec, device, dry_run=True)  # the real run's set-up: every refusal, nothing written
    bundle, model, method, profile, report = run.bundle, run.model, run.method, run.profile, run.data_report

    train_loader = epoch_loader(bundle, run.spec, run.data_gen, 0, device)
    batch, load_s = _timed_batch(train_loader)
    stats = EpochStats(model.modalities, device)
    stamps = []

    def stamp(_info):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    with GracefulInterrupt() as stop:
        outcome = train_one_epoch(run, [batch, batch], stats, epoch=0, start_step=0, stop=stop, on_step=stamp)
    step_s = stamps[1] - stamps[0]  # the second step: the first pays start-up costs
    if outcome == "diverged":
        raise PdmpError(f"the first training step's loss is not finite; {health.remedy(spec)}", 1)

    eval_sets = [bundle.test] + ([bundle.val] if bundle.val is not None else [])
    n_eval = min(spec.batch_size, len(bundle.test))
    for _ in range(2):  # the second is timed
        t = time.perf_counter()
        evaluate(model, DataLoader(Subset(bundle.test, range(n_eval)), batch_size=n_eval), device,
                 bundle.num_classes, method.predict)  # fmt: skip
        eval_batch_s = time.perf_counter() - t
    steps = len(train_loader)
    eval_batches = sum(-(-len(d) // spec.batch_size) for d in eval_sets)
    epoch_s = _per_step(load_s, step_s, spec.num_workers) * steps + eval_batch_s * eval_batches

    own = {m: _count(ps) for m, ps in model.modality_parameters().items()}
    total = _count(optimizer_params(run.optimizer))
    step_gamma = stats.means()["gamma"]
    params = ", ".join(f"{m} {_millions(n)}" for m, n in own.items())
    gammas = ", ".join(f"{m} {g:.4g}" for m, g in method.gamma.items())
    measured = ", ".join(f"{m} {g:.4g}" for m, g in step_gamma.items())
    val = f"{len(bundle.val)} val / " if bundle.val is not None else ""
    lines = [
        f"dry run: nothing written; the run would go to {spec.run_dir or spec.runs_root + '/<time>-...'}",
        f"data: {bundle.name}, {len(bundle.train)} train / {val}{len(bundle.test)} test, "
        f"{'+'.join(bundle.modalities)}, {bundle.num_classes} classes"
        + (f"; {report.skipped} bad samples left out (skip_bad)" if report.skipped else ""),
        f"profile {run.profile_path}: performance-dominant {profile.performance_dominant}, "
        f"optimization-dominant {profile.optimization_dominant}",
        f"model: {spec.encoder} encoders, {spec.fusion} fusion; parameters per modality: {params}; "
        f"shared and method-owned {_millions(total - sum(own.values()))}; total {_millions(total)}",
        f"method {spec.method}: γ per modality {gammas} (first step: {measured}); {run.lr_schedule.describe(spec)}",
        f"one batch of {spec.batch_size}: loss {float(stats.loss) / 2:.4f}, load {load_s:.2f} s, "
        f"forward+backward+step {step_s:.3f} s on {device}",
        f"estimated time per epoch: {duration(epoch_s)} ({steps} steps + {eval_batches} evaluation batches); "
        f"{spec.epochs} epochs: {duration(epoch_s * spec.epochs)}",
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    return {"parameters": own, "total_parameters": total, "gamma": dict(method.gamma), "epoch_seconds": epoch_s}


def dry_run_analyze(spec, console, force: bool = False) -> dict:
    """Everything ``pdmp analyze`` does before it trains, plus one step of each unimodal model."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset

    from pdmp_cli import analysis
    from pdmp_cli.data.check import load_checked
    from pdmp_cli.models.multimodal import build_unimodal
    from pdmp_cli.runtime import place_input, place_model, resolve_device, seed_everything, stratified_subset

    device = resolve_device(spec.device)
    bundle, _ = load_checked(spec.dataset, spec.data_root)
    many = len(spec.subset) > 1
    stem = analysis.default_stem(spec.dataset, bundle.name, bundle.identity)
    outs = [analysis.profile_path(spec.out, stem, s, many) for s in spec.subset]
    for p, s in zip(outs, spec.subset):
        analysis._check_writable(p)
        analysis.check_overwrite(p, bundle.name, bundle.identity, spec, s, force)  # as the real run would
    epochs = spec.epochs if isinstance(spec.epochs, int) else spec.max_epochs  # --epochs auto: the cap
    cap = "" if isinstance(spec.epochs, int) else " at most"
    eval_batches = -(-len(bundle.test) // max(spec.batch_size, 256))
    per_model: dict[str, dict] = {}
    for m in bundle.modalities:
        seed_everything(spec.seed)
        model = place_model(build_unimodal(spec.encoder, bundle.in_channels[m], bundle.num_classes), device)
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        loader = DataLoader(bundle.train, batch_size=spec.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(spec.seed))  # fmt: skip
        (inputs, y), load_s = _timed_batch(loader)
        x, y = place_input(inputs[m], device), y.to(device)
        model.train()
        losses = []
        for _ in range(2):  # the second step is timed: the first pays start-up costs
            t = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))  # waits for the device
            step_s = time.perf_counter() - t
        if not all(map(math.isfinite, losses)):
            raise PdmpError(f"the {m} model's first loss is not finite; try a smaller --lr than {spec.lr:g}", 1)
        n_eval = min(max(spec.batch_size, 256), len(bundle.test))
        xe = place_input(next(iter(DataLoader(Subset(bundle.test, range(n_eval)), batch_size=n_eval)))[0][m], device)
        model.eval()
        with torch.no_grad():
            for _ in range(2):
                t = time.perf_counter()
                model(xe).argmax(dim=1).cpu()
                eval_s = time.perf_counter() - t
        per_model[m] = {"parameters": _count(model.parameters()), "step": step_s, "load": load_s, "eval": eval_s,
                        "loss": losses[0]}  # fmt: skip

    console.print(f"dry run: nothing written; profiles would go to {', '.join(map(str, outs))}", highlight=False, soft_wrap=True)
    console.print(
        f"data: {bundle.name}, {len(bundle.train)} train / {len(bundle.test)} test, {'+'.join(bundle.modalities)}, "
        f"{bundle.num_classes} classes",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    from pdmp_cli.data.split import with_validation

    train_part, _ = with_validation(bundle, spec.val_fraction, spec.seed, select_on_test=spec.select_on_test)
    total = 0.0
    for s in spec.subset:
        n = len(stratified_subset(train_part.train_labels, s, spec.seed))
        steps = -(-n // spec.batch_size)
        for m, r in per_model.items():
            epoch_s = _per_step(r["load"], r["step"], spec.num_workers) * steps + r["eval"] * eval_batches
            total += epoch_s * epochs
            console.print(
                f"subset {s:g} · {m}: {_millions(r['parameters'])} parameters ({spec.encoder}), first loss {r['loss']:.4f}; "
                f"estimated {duration(epoch_s)} per epoch ({steps} steps), {duration(epoch_s * epochs)} for{cap} {epochs} epochs",
                highlight=False, soft_wrap=True,
            )  # fmt: skip
    n_seeds = len(getattr(spec, "seeds", None) or [spec.seed])
    seeds = f" x {n_seeds} seeds" if n_seeds > 1 else ""
    console.print(f"estimated total: {duration(total * n_seeds)}{seeds} (without the analysis cache)", highlight=False,
                  soft_wrap=True)  # fmt: skip
    return {m: r["parameters"] for m, r in per_model.items()} | {"total_seconds": total}
