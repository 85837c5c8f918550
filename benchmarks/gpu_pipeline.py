"""Figure (GPU): does the data pipeline keep the GPU busy?

The training loader of ``pdmp train`` (:func:`pdmp_cli.train.setup.epoch_loader`: shuffled,
``batch_size``, ``num_workers``, pinned memory on CUDA) reads a generated dataset in CREMA-D's
layout through the shipped ``cremad`` manifest, with the features cache warm (``pdmp train``'s
data check fills it before the first epoch), and every batch is copied to the GPU as the loop
copies it (``non_blocking``). Nothing is trained: the figure is the samples/s the loader can
deliver, per worker count, to be set against the model's samples/s of the ``throughput`` figure
(ResNet-18, batch 64, same shapes). Per-epoch work that stays after the cache (frame choice,
RandomResizedCrop to 224 x 224, flip, normalisation) runs in the workers, as in training.

Each epoch builds a fresh loader, as the loop does (its workers start every epoch), so worker
start-up is part of the figure.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import median


def measure(root: Path, *, manifest: str = "cremad", batch_size: int = 64, workers=(0, 4, 8),
            epochs: int = 3, device: str = "cuda") -> dict:
    import torch

    from pdmp_cli.data.check import check_dataset
    from pdmp_cli.data.features import FeatureCache
    from pdmp_cli.data.loaders.files import FilesLoader
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.runtime import to_device
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train.setup import epoch_loader

    dev = torch.device(device)
    man = load_manifest(manifest)
    report = check_dataset(man, root, workers=max(workers))  # fills the features cache
    if not report.ok:
        raise RuntimeError(f"generated data failed the check: {report.first()}")
    bundle = FilesLoader.build(man, data_root=root, features=FeatureCache(enabled=True))
    default_workers = man.defaults.num_workers

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    per_workers = {}
    for w in sorted(set(workers) | ({default_workers} if default_workers is not None else set())):
        spec = TrainSpec(profile="-", dataset=manifest, encoder="resnet18", method="vanilla", batch_size=batch_size,
                         lr=0.001, num_workers=w, device=dev.type)
        gen = torch.Generator().manual_seed(0)
        times = []
        for epoch in range(epochs + 1):  # the first epoch warms the page cache and the allocator
            sync()
            t0 = time.perf_counter()
            n = 0
            for inputs, labels in epoch_loader(bundle, spec, gen, 0, dev):
                inputs, labels = to_device(inputs, dev), labels.to(dev, non_blocking=True)
                n += labels.shape[0]
            sync()
            if epoch:
                times.append(time.perf_counter() - t0)
        per_workers[str(w)] = n / median(times)
    x, _ = bundle.train[0]
    return {
        "samples_per_s": per_workers,
        "config": {
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "manifest": manifest,
            "manifest_default_workers": default_workers,
            "train_clips": len(bundle.train),
            "batch_size": batch_size,
            "input_shapes": {m: list(v.shape) for m, v in x.items()},
            "epochs_timed": epochs,
            "cpu_count": __import__("os").cpu_count(),
        },
    }
