"""Figures of the packed store (issue 25): what the training loader costs per sample, packed ÷ today's.

CPU figure (:func:`measure`, in ``make bench``): a generated dataset in CREMA-D's layout read
through the shipped ``cremad`` manifest (224 x 224 frames, 1 x 257 x 188 spectrograms), batch 64,
``num_workers`` 0, every variant timed over whole epochs of the training loop's loader
(:func:`pdmp_cli.train.setup.epoch_loader`), in alternating rounds (medians):

* ``today``: the files loader over the warm features cache (cache lookup per sample, float
  conversion, RandomResizedCrop with antialias on floats, flip, normalise, collate);
* ``packed_read``: the packed loader as it runs on a CUDA host: one gather per batch from the
  memory maps, uint8 frames + float16 spectrograms + crop boxes (the crop runs on the GPU);
  goal <= 0.05 of today;
* ``packed_cpu``: the packed loader on the CPU path, end to end: the gather plus torchvision's
  uint8 crop per sample, flip and normalisation in the loader; goal <= 0.5 of today.

CUDA figure (:func:`measure_cuda`, in ``benchmarks/gpu_check.sh``): loader samples/s to the GPU
(copy + ``finish_on_device``) with 0, 2 and 4 workers, packed and today's, against the model's
training samples/s (ResNet-18, batch 64, PDMP, same shapes); the batched crop's ms per batch for
T = 1 and T = 3 (wall time between device synchronisations); ``pdmp train`` samples/s end to end with the packed store against
the model alone.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import interleaved, median, spread


def _bundles(root: Path, manifest: str):
    from pdmp_cli.data.check import load_checked
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.data.packed import use_store

    man = load_manifest(manifest)
    files, report = load_checked(man, root)  # the data check: decodes into the features cache
    if not report.ok:
        raise RuntimeError(f"generated data failed the check: {report.first()}")
    packed, _ = use_store(files, man)
    return files, packed


def measure(root: Path, *, manifest: str = "cremad", batch_size: int = 64, repeats: int = 7) -> dict:
    import torch

    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train.setup import epoch_loader

    files, packed = _bundles(root, manifest)
    n = len(files.train)
    spec = TrainSpec(profile="-", dataset=manifest, encoder="small", method="pdmp", batch_size=batch_size, lr=0.001,
                     num_workers=0, device="cpu")
    cpu = torch.device("cpu")
    gens = {k: torch.Generator().manual_seed(0) for k in ("today", "packed_read", "packed_cpu")}

    def epoch(bundle, name, on_device=False):
        def go():
            loader = epoch_loader(bundle, spec, gens[name], 0, cpu)
            if on_device:  # as on a CUDA host: the worker gathers, the crop is left to the GPU
                loader.dataset.on_device = True
            got = 0
            for inputs, labels in loader:
                got += labels.shape[0]
            assert got == n

        return go

    variants = {"today": epoch(files, "today"), "packed_read": epoch(packed, "packed_read", True),
                "packed_cpu": epoch(packed, "packed_cpu")}
    for go in variants.values():  # one untimed epoch each: imports, the cache's connection, the page cache
        go()
    t = interleaved(variants, repeats)
    ms = {k: 1000 * median(v) / n for k, v in t.items()}
    return {
        "samples": n, "batch_size": batch_size, "repeats": repeats,
        "ms_per_sample": ms, "spread": {k: spread(v) for k, v in t.items()},
        "read_ratio": ms["packed_read"] / ms["today"],
        "cpu_path_ratio": ms["packed_cpu"] / ms["today"],
        "store_bytes": packed.train.store.nbytes,
    }


def measure_cuda(root: Path, *, manifest: str = "cremad", batch_size: int = 64, workers=(0, 2, 4), epochs: int = 3,
                 model_steps: int = 20, device: str = "cuda", encoder: str = "resnet18", size: int = 224) -> dict:
    import torch

    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.data import augment as A
    from pdmp_cli.methods import build_method
    from pdmp_cli.runtime import to_device
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer, epoch_loader
    from pdmp_cli.train.state import EpochStats

    dev = torch.device(device)
    files, packed = _bundles(root, manifest)
    n = len(files.train)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def loader_rate(bundle, w):
        spec = TrainSpec(profile="-", dataset=manifest, encoder=encoder, method="pdmp", batch_size=batch_size,
                         lr=0.001, num_workers=w, device=dev.type)
        gen = torch.Generator().manual_seed(0)
        times = []
        for e in range(epochs + 1):  # the first epoch warms the page cache and the allocator
            sync()
            t0 = time.perf_counter()
            loader = epoch_loader(bundle, spec, gen, 0, dev)
            finish = getattr(loader.dataset, "finish_on_device", None)
            for inputs, labels in loader:
                inputs = to_device(inputs, dev)
                if finish is not None:
                    inputs = finish(inputs)
                labels = labels.to(dev, non_blocking=True)
            sync()
            if e:
                times.append(time.perf_counter() - t0)
        return n / median(times)

    out: dict = {"samples": n, "batch_size": batch_size,
                 "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    out["loader_samples_per_s"] = {
        name: {str(w): loader_rate(b, w) for w in workers} for name, b in (("today", files), ("packed", packed))}

    # the model's own rate: PDMP steps of ResNet-18 on batches already on the device
    spec = TrainSpec(profile="-", dataset=manifest, encoder=encoder, method="pdmp", batch_size=batch_size,
                     lr=0.001, num_workers=0, device=dev.type)
    profile = manual_profile("cremad", "visual", "audio", modalities=["audio", "visual"])
    torch.manual_seed(0)
    model = build_model(spec, packed, dev)
    method = build_method("pdmp", model, spec, profile)
    opt = build_optimizer(model, spec, method)
    loader = epoch_loader(packed, spec, torch.Generator().manual_seed(0), 0, dev)
    x, y = next(iter(loader))
    x = to_device(x, dev)
    if dev.type == "cuda":
        x = loader.dataset.finish_on_device(x)
    batch = [(x, y.to(dev))] * model_steps
    stats = EpochStats(model.modalities, dev)
    with GracefulInterrupt() as stop:
        for r in range(3):
            sync()
            t0 = time.perf_counter()
            train_one_epoch(Run(spec, dev, model, method, opt), batch, stats, epoch=0, start_step=0, stop=stop)
            sync()
            if r:
                out.setdefault("_model_times", []).append(time.perf_counter() - t0)
    model_rate = model_steps * batch_size / median(out.pop("_model_times"))
    out["model_samples_per_s"] = model_rate
    out["loader_over_model"] = {name: {w: r / model_rate for w, r in v.items()}
                                for name, v in out["loader_samples_per_s"].items()}

    # the batched crop alone, per batch, T = 1 and T = 3
    ms = {}
    for t in (1, 3):
        xb = torch.randint(0, 256, (batch_size, t, 3, size, size), dtype=torch.uint8, device=dev)
        u = torch.rand(batch_size, A.CROP_UNIFORMS, generator=torch.Generator().manual_seed(t)).numpy()
        boxes = torch.from_numpy(A.crop_boxes(u, size, size)).to(dev)
        for _ in range(3):
            A.normalise(A.crop_batched(xb, boxes, size), [0.5] * 3, [0.25] * 3)
        sync()
        t0 = time.perf_counter()
        for _ in range(20):
            A.normalise(A.crop_batched(xb, boxes, size), [0.5] * 3, [0.25] * 3)
        sync()
        ms[f"T{t}"] = 1000 * (time.perf_counter() - t0) / 20
    out["device_augment_ms_per_batch"] = ms
    return out


def train_rate(workdir: Path, root: Path, *, manifest: str = "cremad", profile: str = "cremad.paper", batch_size: int = 64,
               epochs: int = 3, num_workers: int = 2, device: str = "cuda", encoder: str = "resnet18") -> dict:
    """``pdmp train`` end to end on CUDA with the packed store: samples/s of its epochs after the first."""
    import json

    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import run

    spec = TrainSpec(profile=profile, dataset=manifest, data_root=str(root), encoder=encoder, method="pdmp",
                     batch_size=batch_size, lr=0.001, epochs=epochs, num_workers=num_workers, device=device,
                     select_on_test=True, run_dir=str(workdir / "run"))
    res = run(spec, quiet=True)
    lines = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    secs = [m["epoch_seconds"] for m in lines[1:]] or [lines[0]["epoch_seconds"]]
    return {"train_samples_per_s": res.summary.val_split["train_size"] / median(secs), "num_workers": num_workers}


def main(argv=None) -> int:
    """``python -m benchmarks.packed_loader --cuda``: the CUDA figures (benchmarks/gpu_check.sh)."""
    import argparse
    import json
    import sys
    import tempfile

    import torch

    from benchmarks import common, throughput

    p = argparse.ArgumentParser(prog="python -m benchmarks.packed_loader", description=main.__doc__)
    p.add_argument("--cuda", action="store_true", help="the CUDA figures (needs a GPU)")
    p.add_argument("--clips", type=int, default=384, help="generated CREMA-D-layout training clips")
    p.add_argument("--out", type=Path, default=Path("bench-results/packed-gpu.json"))
    args = p.parse_args(argv)
    if not args.cuda or not torch.cuda.is_available():
        print("no CUDA device: the CUDA figures need a GPU (the CPU figure is in `make bench`)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pdmp-packed-") as work:
        work = Path(work)
        import os

        os.environ["PDMP_CACHE_DIR"] = str(work / "cache")
        t0 = time.monotonic()
        root = common.make_cremad_layout(work / "cremad", args.clips, 16)
        out = {"machine": common.machine(torch.get_num_threads()), "load_average_start": common.load_average(),
               "data_seconds": time.monotonic() - t0}
        out["loader"] = measure_cuda(root)
        out["train"] = train_rate(work, root)
        out["train_over_model"] = out["train"]["train_samples_per_s"] / out["loader"]["model_samples_per_s"]
        # PDMP ÷ vanilla where the GPU limits the step: batch 256, tensors already on the device
        tp = throughput.measure(encoder="resnet18", batch_size=256, steps=5, rounds=3, device="cuda")
        out["throughput_batch256"] = tp
        out["load_average_end"] = common.load_average()
        out["seconds"] = time.monotonic() - t0
    common.write_json(args.out, out)
    lo = out["loader"]
    print(f"device {lo['device']}; model {lo['model_samples_per_s']:.0f} samples/s (ResNet-18, PDMP, batch 64)")
    for name, v in lo["loader_over_model"].items():
        print(f"loader ÷ model, {name}: " + ", ".join(f"{w} workers {r:.2f}" for w, r in v.items()))
    print(f"batched crop + normalise: {lo['device_augment_ms_per_batch']} ms per batch of 64")
    print(f"pdmp train ÷ model only: {out['train_over_model']:.2f} ({out['train']['train_samples_per_s']:.0f} samples/s)")
    print(f"PDMP ÷ vanilla at batch 256 (GPU-bound): {json.dumps(tp['pdmp_over_vanilla'])}")
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
