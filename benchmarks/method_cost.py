"""Figure: what each training method costs, ÷ vanilla, side by side in one run.

Every registered method (``pdmp methods``) runs the real loop of ``pdmp train``
(:func:`pdmp_cli.train.loop.train_one_epoch`: the method's parts, forward and loss, backward,
gradient hook, optimizer step, running metrics) on the same batches of one dataset, from the
same initial weights, with the same optimizer; only ``--method`` differs. The rounds alternate
the order of the methods and each figure is a ratio of per-step medians, so load from other
processes lands on every method alike. What the figure shows: AGM's extra forward passes,
MLA's one optimizer step per modality, MMPareto's backward per loss, ... in time per batch.

* ``step_ms``: median time of one batch (every part of it: MLA makes one step per modality).
* ``epoch_boundary_ms``: the method's work between epochs (D&R's clustering, UDI's anchor choice,
  PMR's prototypes), the mean over the run's epochs, timed once over ``epochs`` epochs; not in
  the step time.
* ``peak_mb``: peak memory. On a GPU, ``torch.cuda.max_memory_allocated`` from building the
  method's model to the end of its first round, less what was allocated before (the methods
  measured earlier stay alive for the alternating rounds); on the CPU, the peak RSS of a ``pdmp train --epochs 1`` child per
  method (the whole training process: data, model, optimizer, evaluation), for ``memory``'s
  methods only (all of them in ``make bench``).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import interleaved, median, spread
from benchmarks.step_time import _batches


def measure(dataset: str, encoder: str, batch_size: int, steps: int, repeats: int, *, device: str = "cpu",
            workdir: Path | None = None, threads: int | None = None, memory: list[str] | str | None = "all",
            epochs: int | None = None) -> dict:
    import torch

    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.data import load_dataset
    from pdmp_cli.data.split import with_validation
    from pdmp_cli.methods import METHODS, build_method
    from pdmp_cli.specs import TrainSpec, dataset_defaults
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer
    from pdmp_cli.train.state import EpochContext, EpochStats
    from pdmp_cli.signals import GracefulInterrupt

    dev = torch.device(device)
    bundle, _ = with_validation(load_dataset(dataset))  # D&R and UDI read the validation split
    batches = _batches(bundle, batch_size, steps)
    mods = list(bundle.modalities)
    # the synthetic presets' regime: the first modality learns fastest, the second performs best
    profile = manual_profile(bundle.name, mods[-1], mods[0], modalities=mods)
    epochs = epochs or dataset_defaults(dataset, TrainSpec).get("epochs", 20)
    names = sorted(
        (n for n in METHODS.names() if (METHODS.get(n).max_modalities or len(mods)) >= len(mods)),
        key=lambda n: (METHODS.get(n).table_order, n),
    )

    if dev.type == "cuda":  # one-time allocations (cuBLAS/cuDNN workspaces) before any method is measured
        _warm_up(build_model(TrainSpec(profile="-", dataset=dataset, encoder=encoder, device=device), bundle, dev),
                 batches[0], dev)
    runners, boundary, peak = {}, {}, {}
    for name in names:
        if dev.type == "cuda":  # this method's own memory: what it allocates on top of the others still alive
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        spec = TrainSpec(profile="-", dataset=dataset, encoder=encoder, method=name, batch_size=batch_size,
                         lr=0.01, epochs=epochs, device=device)
        torch.manual_seed(0)  # the same initial weights for every method
        model = build_model(spec, bundle, dev)
        method = build_method(name, model, spec, profile).to(dev)
        opt = build_optimizer(model, spec, method)
        t0 = time.perf_counter()
        for e in range(epochs):  # the epoch-boundary hook as a run meets it (D&R: its re-initialisations)
            method.on_epoch_start(EpochContext(e, model, opt, spec, bundle, dev))
        boundary[name] = (time.perf_counter() - t0) / epochs
        epoch = epochs - 1  # steps in the run's last epoch: every stage-based method in its final stage

        def one_round(model=model, method=method, opt=opt, epoch=epoch):
            stats = EpochStats(model.modalities, dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_one_epoch(Run(spec, dev, model, method, opt), batches, stats, epoch=epoch, start_step=0, stop=GracefulInterrupt())
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / steps

        one_round()  # warm-up: allocator, first-call costs, optimizer state
        if dev.type == "cuda":  # model, method, optimizer state and the step's activations
            peak[name] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
        runners[name] = one_round

    times = interleaved(runners, repeats)
    v = median(times["vanilla"])
    out = {
        "methods": {
            n: {
                "step_ms": median(times[n]) * 1e3,
                "step_ratio": median(times[n]) / v,
                "spread": spread(times[n]),
                "epoch_boundary_ms": boundary[n] * 1e3,
            }
            for n in names
        },
        "config": {
            "dataset": bundle.name, "encoder": encoder, "batch_size": batch_size, "steps_per_round": steps,
            "rounds": repeats, "epochs": epochs, "device": device, "memory": "cuda allocated" if peak else "child RSS",
        },
    }  # fmt: skip
    if not peak and memory and workdir is not None:
        peak = _child_peaks(workdir, dataset, encoder, batch_size, threads, names if memory == "all" else list(memory))
    for n, mb in peak.items():
        out["methods"][n]["peak_mb"] = mb
        if "vanilla" in peak:
            out["methods"][n]["peak_ratio"] = mb / peak["vanilla"]
    return out


def _warm_up(model, batch, dev) -> None:
    import torch
    import torch.nn.functional as F

    from pdmp_cli.runtime import to_device

    inputs, labels = batch
    F.cross_entropy(model(to_device(inputs, dev)).logits, labels.to(dev)).backward()
    torch.cuda.synchronize()


def _child_peaks(workdir: Path, dataset: str, encoder: str, batch_size: int, threads: int | None, names: list[str]) -> dict:
    """Peak RSS (MiB) of ``pdmp train --epochs 1 --method NAME`` per method, each its own process."""
    from benchmarks.peak_memory import train_peak
    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.data import load_dataset

    mods = list(load_dataset(dataset).modalities)
    prof = workdir / "method-cost-profile.json"
    manual_profile(dataset, mods[-1], mods[0], modalities=mods).save(prof)
    args = ["--profile", str(prof), "--dataset", dataset, "--encoder", encoder, "--batch-size", str(batch_size)]
    return {n: train_peak(workdir, f"cost-{n}", args, threads, method=n)["peak_rss_mb"] for n in names}


def rows(mc: dict) -> list[tuple[str, str, str, str, str]]:
    """The benchmark table's lines: one per method, ÷ vanilla."""
    c = mc["config"]
    out = []
    for n, m in mc["methods"].items():
        mem = ""
        if "peak_mb" in m:
            mem = f"; peak {m['peak_mb']:.0f} MiB" + (f" ({m['peak_ratio']:.2f} x vanilla, {c['memory']})" if "peak_ratio" in m else "")
        out.append((
            f"method cost {n} ÷ vanilla ({c['encoder']}, batch {c['batch_size']}, {c['device']})",
            f"{m['step_ratio']:.2f}", "", "",
            f"{m['step_ms']:.0f} ms/batch; between epochs {m['epoch_boundary_ms']:.0f} ms/epoch{mem}",
        ))  # fmt: skip
    return out
