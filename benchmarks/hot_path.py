"""The hot-path study: where a training epoch spends its time, and which knobs pay on this machine.

``python benchmarks/run.py --hot-path`` (or ``--only hot_path``). Two parts:

* ``profile``: torch.profiler over one training epoch of ``pdmp train``'s loop (PDMP, cached
  CREMA-D-layout data, ``num_workers`` 0 so the data work is in the profile): the operators
  with the most self CPU time, and the share of the epoch spent fetching batches.
* ``knobs``: each a ratio "with ÷ without", both measured in alternating rounds: intra-op
  threads (2 ÷ 1), ``PDMP_CHANNELS_LAST=1`` in the real loop, DataLoader workers (2 ÷ 0, data epoch, with and without the cache),
  persistent workers (kept ÷ started every epoch), channels_last, torch.compile (steady state;
  the compile time is reported apart), bf16 autocast on the CPU, and PDMP's gradient scaling
  as one ``torch._foreach_mul_`` per encoder ÷ one ``mul_`` per parameter (ResNet-18 sized).
  pin_memory and CUDA autocast need a GPU: none here, so they are not measured.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import interleaved, median


def _knob(name: str, times: dict, with_: str, without: str, detail: str, **extra) -> dict:
    a, b = median(times[with_]), median(times[without])
    return {"name": name, "ratio": a / b, "with_s": a, "without_s": b,
            "detail": f"{detail}: {a * 1e3:.1f} vs {b * 1e3:.1f} ms", **extra}


def _model_and_batch(encoder: str, shapes: dict, batch: int, classes: int = 6):
    import torch

    from pdmp_cli.models.multimodal import build_multimodal

    torch.manual_seed(0)
    model = build_multimodal(encoder, "concat", {m: s[0] for m, s in shapes.items()}, classes)
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(batch, *s, generator=g) for m, s in shapes.items()}
    y = torch.randint(0, classes, (batch,), generator=g)
    return model, x, y


def _stepper(model, x, y, autocast=None):
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step():
        if autocast is not None:
            with torch.autocast("cpu", dtype=autocast):
                loss = F.cross_entropy(model(x, with_branches=False).logits, y)
        else:
            loss = F.cross_entropy(model(x, with_branches=False).logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _steps(step, n: int):
    def go():
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - t0) / n

    return go


def profile_epoch(bundle, spec, top: int = 12) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.methods import build_method
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer, epoch_loader
    from pdmp_cli.train.state import EpochStats

    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(spec, bundle, device)
    method = build_method("pdmp", model, spec, manual_profile("cremad", "visual", "audio", modalities=["audio", "visual"]))
    opt = build_optimizer(model, spec, method)
    gen = torch.Generator().manual_seed(0)

    def epoch():
        train_one_epoch(Run(spec, device, model, method, opt), epoch_loader(bundle, spec, gen, 0, device), EpochStats(model.modalities, device), epoch=0, start_step=0, stop=GracefulInterrupt())

    epoch()  # warm-up
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        epoch()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    fetch = sum(e.cpu_time_total for e in events if "DataLoader" in e.key and "__next__" in e.key)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "epoch_s": wall,
        "data_fetch_share": fetch / total,
        "top_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
                     "calls": e.count} for e in rows],
    }


def loop_channels_last(dataset: str, rounds: int, batch_size: int = 64, steps: int = 3) -> dict:
    """``train_one_epoch`` (PDMP) with the model and inputs channels-last (``PDMP_CHANNELS_LAST=1``)
    and in the default NCHW layout (``=0``)."""
    import os

    import torch

    from benchmarks.step_time import _batches
    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.data import load_dataset
    from pdmp_cli.methods import build_method
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer
    from pdmp_cli.train.state import EpochStats

    bundle = load_dataset(dataset)
    batches = _batches(bundle, batch_size, steps)
    device = torch.device("cpu")
    profile = manual_profile(bundle.name, "visual", "audio", modalities=["audio", "visual"])
    spec = TrainSpec(profile="-", encoder="small", method="pdmp", batch_size=batch_size, lr=0.01, device="cpu")
    saved = os.environ.get("PDMP_CHANNELS_LAST")
    runners = {}
    try:
        for flag in ("1", "0"):
            os.environ["PDMP_CHANNELS_LAST"] = flag
            torch.manual_seed(0)
            model = build_model(spec, bundle, device)
            method = build_method("pdmp", model, spec, profile)
            opt = build_optimizer(model, spec, method)

            def go(model=model, method=method, opt=opt, flag=flag):
                os.environ["PDMP_CHANNELS_LAST"] = flag  # to_device reads it for every batch
                t0 = time.perf_counter()
                train_one_epoch(Run(spec, device, model, method, opt), batches, EpochStats(model.modalities, device), epoch=0, start_step=0, stop=GracefulInterrupt())
                return (time.perf_counter() - t0) / steps

            go()
            runners[flag] = go
        t = interleaved(runners, rounds)
    finally:
        if saved is None:
            os.environ.pop("PDMP_CHANNELS_LAST", None)
        else:
            os.environ["PDMP_CHANNELS_LAST"] = saved
    shapes = {m: list(v.shape) for m, v in bundle.train[0][0].items()}
    return _knob("PDMP_CHANNELS_LAST=1 ÷ 0 in pdmp train's loop", t, "1", "0",
                 f"PDMP step, small encoder, batch {batch_size}, {bundle.name} {shapes}")


def measure(root: Path, *, manifest: str = "cremad", synthetic: str = "synthetic", tiny: bool = False,
            threads: int = 1) -> dict:
    import torch

    from pdmp_cli.data.features import FeatureCache
    from pdmp_cli.data.loaders.files import FilesLoader
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train.setup import epoch_loader

    rounds = 2 if tiny else 5
    batch = 4 if tiny else 16
    man = load_manifest(manifest)
    cached = FilesLoader.build(man, data_root=root, features=FeatureCache(enabled=True))
    raw = FilesLoader.build(man, data_root=root, features=FeatureCache(enabled=False))
    for i in range(len(cached.train)):  # fill the cache, as pdmp train's data check does
        cached.train[i]
    x0, _ = cached.train[0]
    shapes = {m: tuple(v.shape) for m, v in x0.items()}
    spec = TrainSpec(profile="-", dataset=manifest, encoder="small", method="pdmp", batch_size=batch * 4, lr=1e-3,
                     gamma_p=15.0, num_workers=0, device="cpu")
    out: dict = {"profile": profile_epoch(cached, spec), "knobs": [], "config": {
        "encoder": "small", "step_batch": batch, "epoch_batch": spec.batch_size, "input_shapes": shapes,
        "train_clips": len(cached.train), "rounds": rounds, "baseline_threads": threads}}
    knobs = out["knobs"]

    # -- intra-op threads: the same step with 2 threads and with 1 -----------------------------
    model, x, y = _model_and_batch("small", shapes, batch)
    step = _steps(_stepper(model, x, y), 2)

    def with_threads(n):
        def go():
            torch.set_num_threads(n)
            try:
                return step()
            finally:
                torch.set_num_threads(threads)
        return go

    t = interleaved({"2": with_threads(2), "1": with_threads(1)}, rounds)
    knobs.append(_knob("2 intra-op threads ÷ 1", t, "2", "1", f"small encoder step, batch {batch}"))

    # -- channels_last through pdmp train's own loop: PDMP_CHANNELS_LAST=1 ÷ 0 ----------------------
    knobs.append(loop_channels_last(synthetic, rounds, batch_size=16 if tiny else 64))

    # -- channels_last, bf16 autocast, torch.compile on the same step ------------------------------
    m_cl, x_cl, y_cl = _model_and_batch("small", shapes, batch)
    m_cl = m_cl.to(memory_format=torch.channels_last)
    x_cl = {m: v.contiguous(memory_format=torch.channels_last) for m, v in x_cl.items()}
    base = _steps(_stepper(*_model_and_batch("small", shapes, batch)), 2)
    t = interleaved({"channels_last": _steps(_stepper(m_cl, x_cl, y_cl), 2), "default": base}, rounds)
    knobs.append(_knob("channels_last ÷ default", t, "channels_last", "default", f"small encoder step, batch {batch}"))

    t = interleaved({"bf16": _steps(_stepper(*_model_and_batch("small", shapes, batch), autocast=torch.bfloat16), 2),
                     "fp32": base}, rounds)
    knobs.append(_knob("bf16 autocast ÷ fp32 (CPU)", t, "bf16", "fp32", f"small encoder step, batch {batch}"))

    if not tiny:
        import os
        import tempfile

        m_c, x_c, y_c = _model_and_batch("small", shapes, batch)
        # a cache of its own, empty: the compile time is a first compile's, not a cache read's
        saved_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="pdmp-bench-inductor-")
        try:
            compiled = torch.compile(m_c)
            c_step = _stepper(compiled, x_c, y_c)
            t0 = time.perf_counter()
            c_step()
            c_step()  # first calls compile forward and backward
            compile_s = time.perf_counter() - t0
            t = interleaved({"compiled": _steps(c_step, 2), "eager": base}, rounds)
            knobs.append(_knob("torch.compile ÷ eager (steady state)", t, "compiled", "eager",
                               f"small encoder step, batch {batch}; compiling took {compile_s:.0f} s",
                               compile_s=compile_s))
        except Exception as e:  # no compiler toolchain, unsupported op...
            out["compile_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        finally:
            import shutil

            shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
            if saved_cache is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved_cache

    # -- DataLoader workers: a data epoch with 2 workers and with none ---------------------------
    gen = torch.Generator().manual_seed(0)

    def data_epoch(bundle, workers):
        s = spec.model_copy(update={"num_workers": workers})

        def go():
            for _ in epoch_loader(bundle, s, gen, 0, torch.device("cpu")):
                pass

        return go

    for name, bundle in (("cache", cached), ("no cache", raw)):
        t = interleaved({"2": data_epoch(bundle, 2), "0": data_epoch(bundle, 0)}, rounds)
        knobs.append(_knob(f"2 DataLoader workers ÷ 0 (data epoch, {name})", t, "2", "0",
                           f"{len(bundle.train)} clips, batch {spec.batch_size}"))

    # -- persistent workers: one loader kept across epochs vs a new one (new workers) each epoch ---
    from torch.utils.data import DataLoader

    kept = DataLoader(cached.train, batch_size=spec.batch_size, shuffle=True, num_workers=2, persistent_workers=True)

    def persistent():
        for _ in kept:
            pass

    def fresh():
        for _ in DataLoader(cached.train, batch_size=spec.batch_size, shuffle=True, num_workers=2):
            pass

    persistent()  # start its workers outside the timing: what every epoch after the first sees
    t = interleaved({"persistent": persistent, "fresh": fresh}, rounds)
    knobs.append(_knob("persistent workers ÷ new workers each epoch", t, "persistent", "fresh",
                       f"data epoch, 2 workers, cache, {len(cached.train)} clips"))
    del kept

    # -- PDMP's gradient scaling: one foreach call per encoder vs one mul_ per parameter ---------
    if not tiny:
        from pdmp_cli.models.multimodal import build_multimodal

        big = build_multimodal("resnet18", "concat", {"audio": 1, "visual": 3}, 6)
        for p in big.parameters():
            p.grad = torch.randn_like(p)
        gammas = {"audio": 1 / 15, "visual": 15.0}

        def per_param():
            with torch.no_grad():
                for m, enc in big.encoders.items():
                    for p in enc.parameters():
                        p.grad.mul_(gammas[m])

        def foreach():
            with torch.no_grad():
                for m, enc in big.encoders.items():
                    torch._foreach_mul_([p.grad for p in enc.parameters()], gammas[m])

        t = interleaved({"foreach": foreach, "per_param": per_param}, rounds * 4)
        n = sum(p.numel() for p in big.encoders.parameters())
        knobs.append(_knob("PDMP scaling: foreach ÷ per-parameter mul_", t, "foreach", "per_param",
                           f"ResNet-18 audio + visual encoders, {n / 1e6:.1f} M gradients"))
    return out
