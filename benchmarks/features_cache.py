"""Figure: epoch time with the features cache ÷ epoch time decoding every sample every epoch
(target <= 0.5).

The data is generated in CREMA-D's layout (:func:`benchmarks.common.make_cremad_layout`) and
read through the shipped ``cremad`` manifest with ``--data-root``, so the paper's audio
settings apply: 16 kHz wav resampled to 22,050 Hz, tiled to 3 s, STFT n_fft 512 hop 353 ->
1 x 257 x 188; one face frame resized to 224 x 224 with RandomResizedCrop + flip at training.

"recompute" is the same dataset with the cache off (``FeatureCache(enabled=False)``, what
``PDMP_FEATURES_CACHE=0`` does): every ``__getitem__`` reads the wav, resamples, runs the STFT
and decodes the jpgs, every epoch, as the peer codebases (OGM-GE) do. "cached" reads the
decoded arrays that ``pdmp train``'s data check stored before the first epoch. Augmentation
(frame choice, crop, flip) runs after the cache in both, so both do the same per-epoch work
apart from decoding.

Two epochs are timed, each with the loader of the training loop (``epoch_loader``: shuffled,
``batch_size``, ``num_workers``): the data epoch alone (every batch loaded, nothing trained:
the ratio a GPU would see, where the model step is short), and a training epoch with the given
encoder (``train_one_epoch``, PDMP), where the CPU model step dilutes the difference.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import interleaved, median, spread


def measure(root: Path, *, manifest: str = "cremad", batch_size: int, repeats: int, num_workers: int = 0, encoder: str = "small",
            train_repeats: int | None = None) -> dict:
    import torch

    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.data.check import check_dataset
    from pdmp_cli.data.features import FeatureCache
    from pdmp_cli.data.loaders.files import FilesLoader
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.methods import build_method
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer, epoch_loader
    from pdmp_cli.train.state import EpochStats

    dataset = manifest
    manifest = load_manifest(dataset)
    device = torch.device("cpu")

    # pdmp train's data check decodes every sample through the cache before the first epoch
    report = check_dataset(manifest, root, workers=0)
    if not report.ok:
        raise RuntimeError(f"generated data failed the check: {report.first()}")

    bundles = {
        "cached": FilesLoader.build(manifest, data_root=root, features=FeatureCache(enabled=True)),
        "recompute": FilesLoader.build(manifest, data_root=root, features=FeatureCache(enabled=False)),
    }
    spec = TrainSpec(profile="-", dataset=dataset, encoder=encoder, method="pdmp", batch_size=batch_size,
                     lr=0.001, gamma_p=15.0, num_workers=num_workers, device="cpu")
    gens = {k: torch.Generator().manual_seed(0) for k in bundles}

    def data_epoch(name):
        def go():
            for inputs, labels in epoch_loader(bundles[name], spec, gens[name], 0, device):
                pass

        return go

    data = interleaved({k: data_epoch(k) for k in bundles}, repeats)

    profile = manual_profile("cremad", "visual", "audio", modalities=["audio", "visual"])
    trainers = {}
    for name, bundle in bundles.items():
        torch.manual_seed(0)
        model = build_model(spec, bundle, device)
        method = build_method("pdmp", model, spec, profile)
        opt = build_optimizer(model, spec, method)

        def go(bundle=bundle, model=model, method=method, opt=opt, name=name):
            loader = epoch_loader(bundle, spec, gens[name], 0, device)
            train_one_epoch(Run(spec, device, model, method, opt), loader, EpochStats(model.modalities, device), epoch=0, start_step=0, stop=GracefulInterrupt())

        trainers[name] = go
    train = interleaved(trainers, train_repeats or repeats)

    def figure(t):
        c, r = median(t["cached"]), median(t["recompute"])
        return {"ratio": c / r, "cached_s": c, "recompute_s": r,
                "cached_spread": spread(t["cached"]), "recompute_spread": spread(t["recompute"])}

    n_train, n_test = len(bundles["cached"].train), len(bundles["cached"].test)
    x, _ = bundles["cached"].train[0]
    return {
        "target": 0.5,
        "data_epoch": figure(data),
        "train_epoch": figure(train),
        "config": {
            "layout": "CREMA-D (train.csv/test.csv, AudioWAV/*.wav 16 kHz, Image-01-FPS/<clip>/*.jpg)",
            "train_clips": n_train,
            "test_clips": n_test,
            "manifest": dataset,
            "audio": manifest.modalities["audio"].preprocessing or "defaults",
            "visual": manifest.modalities["visual"].preprocessing,
            "input_shapes": {m: list(v.shape) for m, v in x.items()},
            "batch_size": batch_size,
            "num_workers": num_workers,
            "train_epoch_encoder": encoder,
            "method": "pdmp",
            "rounds": repeats,
            "train_rounds": train_repeats or repeats,
        },
    }
