"""Figure (GPU): training samples/s of ResNet-18 at batch 64 on CREMA-D-shaped inputs, PDMP vs
vanilla, with and without autocast.

Runs where CUDA is available (``make bench`` skips it otherwise and says so); ``--tiny`` runs
the same code on the CPU at a toy size so the suite exercises it. Inputs are random tensors
already on the device (audio 1 x 257 x 188, one RGB frame 3 x 224 x 224, 6 classes), so the
figure is the model's and the method's throughput, not the data pipeline's. Each variant is
``pdmp train``'s own step (:func:`pdmp_cli.train.loop.train_one_epoch`) with the precision
``--precision`` would give it (:mod:`pdmp_cli.train.amp`: bf16 autocast where the GPU supports
it, else fp16 autocast with loss scaling); the four variants run in alternating rounds, and the
device is synchronised before each clock reading.
"""

from __future__ import annotations

import time

from benchmarks.common import interleaved, median

CREMAD_SHAPES = {"audio": (1, 257, 188), "visual": (3, 224, 224)}


def measure(*, encoder: str = "resnet18", batch_size: int = 64, shapes: dict | None = None, steps: int = 10,
            rounds: int = 5, device: str = "cuda", precisions: tuple | None = None,
            layouts: tuple = ("nchw",)) -> dict:
    """``precisions``: default fp32 and the autocast ``--precision`` picks there (bf16 where
    supported, else fp16); ``layouts``: ``nchw`` and/or ``channels_last`` (model and 4-D inputs
    in NHWC, forced whatever :func:`pdmp_cli.runtime.channels_last` would choose)."""
    import torch

    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.methods import build_method
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import amp
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer
    from pdmp_cli.train.state import EpochStats

    dev = torch.device(device)
    shapes = shapes or CREMAD_SHAPES
    half = "bf16" if dev.type == "cpu" or torch.cuda.is_bf16_supported() else "fp16"
    g = torch.Generator().manual_seed(0)
    batches = [({m: torch.randn(batch_size, *s, generator=g).to(dev) for m, s in shapes.items()},
                torch.randint(0, 6, (batch_size,), generator=g).to(dev)) for _ in range(steps)]
    bundle = type("Shapes", (), {"in_channels": {m: s[0] for m, s in shapes.items()}, "num_classes": 6})()
    profile = manual_profile("cremad", "visual", "audio", modalities=list(shapes))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    from pdmp_cli import runtime

    precisions = tuple(precisions or ("fp32", half))
    default_layout = runtime.channels_last

    def use_layout(layout):
        runtime.channels_last = (lambda device: True) if layout == "channels_last" else (lambda device: False)

    def variant(method_name, precision, layout):
        return f"{method_name}/{precision}" + ("" if layout == "nchw" else f"/{layout}")

    runners = {}
    for method_name, precision, layout in [(m, p, lay) for lay in layouts for p in precisions
                                           for m in ("vanilla", "pdmp")]:
        use_layout(layout)
        spec = TrainSpec(profile="-", encoder=encoder, method=method_name, batch_size=batch_size, lr=1e-3,
                         gamma_p=15.0, precision=precision, device=dev.type)
        torch.manual_seed(0)
        model = build_model(spec, bundle, dev)
        method = build_method(method_name, model, spec, profile)
        opt = build_optimizer(model, spec, method)
        prec = amp.resolve(precision, dev)

        def go(model=model, method=method, opt=opt, prec=prec, layout=layout):
            use_layout(layout)
            sync()
            t0 = time.perf_counter()
            train_one_epoch(Run(spec, dev, model, method, opt, precision=prec), batches, EpochStats(model.modalities, dev), epoch=0, start_step=0, stop=GracefulInterrupt())
            sync()
            return time.perf_counter() - t0

        go()  # warm-up: cuDNN autotuning, allocator
        runners[variant(method_name, precision, layout)] = go
    try:
        times = interleaved(runners, rounds)
    finally:
        runtime.channels_last = default_layout
    sps = {k: batch_size * steps / median(v) for k, v in times.items()}
    keys = [variant("x", p, lay)[2:] for lay in layouts for p in precisions]
    out = {
        "samples_per_s": sps,
        "pdmp_over_vanilla": {k: sps[f"pdmp/{k}"] / sps[f"vanilla/{k}"] for k in keys},
        "autocast_speedup": {m: sps[f"{m}/{half}"] / sps[f"{m}/fp32"] for m in ("vanilla", "pdmp")},
        "config": {
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "encoder": encoder, "batch_size": batch_size, "input_shapes": {m: list(s) for m, s in shapes.items()},
            "autocast": half, "steps_per_round": steps, "rounds": rounds,
            "precisions": list(precisions), "layouts": list(layouts),
        },
    }
    if len(precisions) > 2:
        out["autocast_speedup_by_precision"] = {
            f"{m}/{p}": sps[f"{m}/{p}"] / sps[f"{m}/fp32"] for m in ("vanilla", "pdmp") for p in precisions if p != "fp32"}
    if "channels_last" in layouts and "nchw" in layouts:
        out["channels_last_speedup"] = {
            f"{m}/{p}": sps[f"{m}/{p}/channels_last"] / sps[f"{m}/{p}"] for m in ("vanilla", "pdmp") for p in precisions}
    return out
