"""Training from the packed store (:mod:`pdmp_cli.data.store`): a batch-level dataset, the epoch's
loader, and the augmentation's two placements.

* :class:`PackedSplit` replaces a files split's ``FilesSplit``: ``__getitems__`` reads a whole
  batch with one gather per modality (and chunk) from the memory maps, uint8 frames and float16
  spectrograms, and returns the batch already collated (:func:`collate`; ``default_collate``
  still works on it, sample by sample).
* :func:`train_loader` is the training loop's epoch loader for a packed split. Every sample's
  augmentation uniforms (frame per segment, crop tries, position, flip) are drawn for the whole
  epoch from the epoch's generator in the main process, beside the shuffled order, and travel
  with the indices. A batch therefore does not depend on the number of workers, and a resumed
  epoch (same generator state, ``start_step``) replays the remaining batches exactly.
* On the CPU the loader workers apply the crop per sample (:func:`~pdmp_cli.data.augment.crop_cpu`)
  and normalise. On CUDA the workers only gather: the batch reaches the device as uint8 frames +
  float16 spectrograms + each sample's crop box, and :meth:`PackedSplit.finish_on_device`, called
  by the training loop right after the copy, crops, flips and normalises the whole batch at once
  (:func:`~pdmp_cli.data.augment.crop_batched`).

Evaluation splits read the centre frames and normalise in the workers on every device.
"""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data import default_collate

from pdmp_cli.data import augment
from pdmp_cli.data.store import Store

AUGMENT = "_augment/"  # input key prefix of a modality's crop boxes on the way to the device
IMAGE_KINDS = ("frames", "image", "flow")


class PackedBatch(list):
    """``__getitems__``'s result: the samples (a list, for ``default_collate``) and the batch
    already collated (``collated``, for :func:`collate`)."""

    collated: tuple = ()


def collate(data):
    """The packed loaders' ``collate_fn``: the batch as gathered; anything else ``default_collate``."""
    return data.collated if isinstance(data, PackedBatch) else default_collate(data)


class Keys(list):
    """A batch's sample indices, with their augmentation uniforms (``uniforms``: (B, K) float32)."""

    uniforms: np.ndarray | None = None


class PackedSplit(Dataset):
    """One split of the packed store as a torch Dataset of ``({modality: tensor}, label)``.

    The tensors match :class:`~pdmp_cli.data.loaders.files.FilesSplit`'s (same shapes, float32);
    at evaluation the values equal it (uint8 frames exactly; audio within float16 rounding).
    """

    def __init__(self, dataset: str, split: str, store: Store, modalities: dict, train: bool):
        self.dataset = dataset
        self.split = split
        self.store = store
        self.modalities = modalities
        self.train = train
        self.on_device = False  # set on the training loader's copy on CUDA: crops are left to the device
        self.slots: dict[str, tuple[int, int, bool]] = {}  # modality -> (first uniform, frames, crop?)
        k = 0
        for m, mod in modalities.items():
            if mod.kind in IMAGE_KINDS:
                t = mod.prep.frames if mod.kind != "image" else 0
                crop = bool(mod.prep.train_augment)
                self.slots[m] = (k, t, crop)
                k += augment.uniforms_needed(t, crop)
        self.uniforms_per_sample = k

    @property
    def labels(self) -> list[int]:
        return self.store.labels.tolist()

    def __len__(self) -> int:
        return self.store.n

    def __getitem__(self, i: int):
        return self.__getitems__([int(i)])[0]

    def __getitems__(self, keys) -> PackedBatch:
        idx = np.asarray([int(i) for i in keys], dtype=np.int64)
        train = self.train
        u = getattr(keys, "uniforms", None)
        if train and u is None and self.uniforms_per_sample:  # a plain loader: torch's RNG, as FilesSplit
            u = torch.rand(len(idx), self.uniforms_per_sample).numpy()
        out: dict[str, torch.Tensor] = {}
        for m, mod in self.modalities.items():
            if mod.kind in IMAGE_KINDS:
                self._image(m, mod, idx, u, out)
            else:
                x = torch.from_numpy(self.store.gather(m, idx))
                out[m] = x if (self.on_device and x.dtype == torch.float16) else x.float()
        labels = torch.from_numpy(self.store.labels[idx])
        batch = PackedBatch(({m: x[b] for m, x in out.items()}, labels[b]) for b in range(len(idx)))
        batch.collated = (out, labels)
        return batch

    def _image(self, m: str, mod, idx: np.ndarray, u, out: dict) -> None:
        p = mod.prep
        first, t, crop = self.slots[m]
        train = self.train
        um = u[:, first:first + augment.uniforms_needed(t, crop)] if (train and u is not None) else None
        counts = self.store.counts(m)[idx]
        if mod.kind == "frames":
            picks = augment.frame_picks(counts, t, um[:, :t] if um is not None else None)
            x = self.store.gather(m, idx, picks)  # (B, T, C, S, S)
        elif mod.kind == "flow":
            L = p.stack
            starts = augment.frame_picks(np.maximum(counts - L + 1, 1), t, um[:, :t] if um is not None else None)
            picks = np.minimum(starts[:, :, None] + np.arange(L)[None, None, :], (counts - 1)[:, None, None])
            x = self.store.gather(m, idx, picks)  # (B, T, L, 2, S, S)
            x = x.reshape(x.shape[0], t, 2 * L, *x.shape[-2:])
        else:
            x = self.store.gather(m, idx)[:, None]  # (B, 1, C, S, S)
        x = torch.from_numpy(x)
        mean, std = p.mean_std()
        if train and crop:
            boxes = augment.crop_boxes(um[:, t:], x.shape[-2], x.shape[-1], p.crop_scale)
            if self.on_device and x.shape[-1] <= p.size:  # upscaling crops: exact without antialiasing
                out[m] = x
                out[AUGMENT + m] = torch.from_numpy(boxes)
                return
            x = augment.normalise(augment.crop_cpu(x, boxes, p.size, flow=mod.kind == "flow"), mean, std)
        else:
            x = x.float() / 255  # as the files loader: resize in [0, 1] floats, then normalise
            if x.shape[-2:] != (p.size, p.size):
                from torchvision.transforms.v2 import functional as F

                x = F.resize(x.flatten(0, 1), [p.size, p.size], antialias=True).view(*x.shape[:3], p.size, p.size)
            x = _norm01(x, mean, std)
        out[m] = _layout(x, mod)

    def finish_on_device(self, inputs: dict) -> dict:
        """The device path, after the copy: each modality with crop boxes is cropped, flipped and
        normalised in one batched ``grid_sample``; float16 spectrograms become float32. Returns
        the inputs the model takes (the layout of :func:`pdmp_cli.runtime.place_input`)."""
        from pdmp_cli.runtime import place_input

        out = {}
        for m, x in inputs.items():
            if m.startswith(AUGMENT):
                continue
            boxes = inputs.get(AUGMENT + m)
            if boxes is not None:
                mod = self.modalities[m]
                mean, std = mod.prep.mean_std()
                x = augment.crop_batched(x, boxes, mod.prep.size, flow=mod.kind == "flow")
                x = place_input(_layout(augment.normalise(x, mean, std), mod), x.device)
            elif x.dtype == torch.float16:
                x = x.float()
            out[m] = x
        return out


def _norm01(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` of floats in [0, 1], as ``augment_and_normalise`` computes it."""
    c = x.shape[-3]
    mean_t = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    if mean_t.shape[0] == 1 and c > 1:
        mean_t, std_t = mean_t.expand(c, 1, 1), std_t.expand(c, 1, 1)
    return (x - mean_t) / std_t


def _layout(x: torch.Tensor, mod) -> torch.Tensor:
    """(B, T, C, H, W) -> the files loader's (B, C, T, H, W), or (B, C, H, W) when T = 1."""
    x = x.permute(0, 2, 1, 3, 4)
    return x[:, :, 0] if x.shape[2] == 1 else x.contiguous()


# ------------------------------------------------------------------------------------ the epoch loader


class EpochBatches(Sampler):
    """Batches of (index, uniforms) in the epoch's order: ``Keys`` lists for ``__getitems__``."""

    def __init__(self, indices: np.ndarray, uniforms: np.ndarray | None, batch_size: int):
        self.indices, self.uniforms, self.batch_size = indices, uniforms, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self):
        for s in range(0, len(self.indices), self.batch_size):
            keys = Keys(self.indices[s:s + self.batch_size].tolist())
            keys.uniforms = None if self.uniforms is None else self.uniforms[s:s + self.batch_size]
            yield keys


def unwrap(dataset):
    """(the PackedSplit under ``dataset``, its index of each of ``dataset``'s samples) or (None, None)."""
    from torch.utils.data import Subset

    if isinstance(dataset, PackedSplit):
        return dataset, np.arange(len(dataset))
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, PackedSplit):
        return dataset.dataset, np.asarray(dataset.indices, dtype=np.int64)
    return None, None


def train_loader(dataset, order: torch.Tensor, *, batch_size: int, start_step: int, data_gen: torch.Generator,
                 device: torch.device, num_workers: int, worker_init_fn=None):
    """The epoch's DataLoader over a packed training split, or None when ``dataset`` is not packed.

    ``order``: the epoch's permutation (already drawn from ``data_gen``). The epoch's uniforms
    are drawn next, for every position of the order, whatever ``start_step``: a resumed epoch
    (generator restored to the epoch's start) gets the same ones and skips ``start_step`` global
    batches of ``batch_size``. Under DDP each rank keeps its positions of the rest (as
    :func:`pdmp_cli.distributed.shard` does for the files loader).
    """
    from torch.utils.data import DataLoader

    from pdmp_cli import distributed

    base, index = unwrap(dataset)
    if base is None:
        return None
    n = len(order)
    k = base.uniforms_per_sample
    u = torch.rand(n, k, generator=data_gen).numpy() if k else None
    positions = np.asarray(distributed.shard(list(range(start_step * batch_size, n))), dtype=np.int64)
    samples = index[order.numpy()[positions]] if len(positions) else np.zeros(0, dtype=np.int64)
    ds = copy.copy(base)
    ds.on_device = device.type == "cuda"
    batches = EpochBatches(samples, None if u is None else u[positions], distributed.per_rank_batch(batch_size))
    return DataLoader(
        ds, batch_sampler=batches, num_workers=num_workers, collate_fn=collate, generator=data_gen,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn,
    )


# ------------------------------------------------------------------------------------ packing a bundle


def split_store(split_ds, split: str, identity: str, audio_dtype: str, *, force: bool = False, progress=None,
                load=None, extra: dict | None = None) -> tuple[Store, bool]:
    """The store of a files split (``FilesSplit``): opened when one for this data exists (and its
    files' modification times are those recorded), else packed from the features cache.
    -> (store, whether it was packed now)."""
    from pdmp_cli.data import store as st

    key = st.store_key(identity, split, split_ds.modalities, audio_dtype)
    dest = st.split_dir(split_ds.dataset, split)
    mtimes = getattr(split_ds, "mtimes", None)
    found = None if force else Store.open(dest, key, mtimes)
    if found is not None:
        return found, False
    with st.pack_lock(dest):  # two runs packing the same split: the second waits, then reads the first's
        found = None if force else Store.open(dest, key, mtimes)
        if found is not None:
            return found, False
        return st.pack(dest, key, dataset=split_ds.dataset, split=split, modalities=split_ds.modalities,
                       samples=split_ds.samples, labels=split_ds.labels, load=load or _loader(split_ds.features),
                       audio_dtype=audio_dtype, progress=progress, extra=extra, mtimes=mtimes), True


def _loader(features):
    """Each sample through the features cache: the data check of the same run has just decoded and
    stored it, so packing reads it back instead of decoding it again (a sample the cache no longer
    holds, on a dataset larger than its size limit, is decoded once more)."""

    def load(mod, path):
        return features.load(mod, path) if features.enabled else mod.decode(path)

    return load


def use_store(bundle, dataset, *, splits=("train", "val", "test"), force: bool = False,
              progress: bool = False, extra: dict | None = None) -> tuple[object, list[str]]:
    """``bundle`` with its files splits replaced by packed ones (packing those not packed yet)
    -> (bundle, lines to print). ``dataset``: its manifest, or a name or path to load it from.
    ``progress``: a progress bar on stderr while packing. Generated datasets, and ``PDMP_PACKED=0``,
    leave it as it is."""
    from dataclasses import replace

    from pdmp_cli.data.loaders.files import FilesSplit
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.data import store as st

    if not st.enabled_by_env() or not isinstance(bundle.train, FilesSplit):
        return bundle, []
    manifest = load_manifest(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    audio_dtype = manifest.packed.audio_dtype if getattr(manifest, "packed", None) is not None else "float16"
    changes, lines = {}, []
    for split in splits:
        ds = getattr(bundle, split, None)
        if not isinstance(ds, FilesSplit):
            continue
        with _bar(progress, f"packing {ds.dataset} [{split}]", len(ds)) as advance:
            store, new = split_store(ds, split, bundle.identity, audio_dtype, force=force, progress=advance,
                                     extra=extra)
        changes[split] = PackedSplit(ds.dataset, split, store, ds.modalities, ds.train)
        lines.append(f"packed store {'written' if new else 'read'}: {store.path} ({st.human(store.nbytes)}, "
                     f"{store.n} samples)")
    return replace(bundle, **changes), lines


class _bar:
    """A transient rich progress bar on stderr (``on``), or nothing."""

    def __init__(self, on: bool, what: str, total: int):
        self.on, self.what, self.total, self.bar = on, what, total, None

    def __enter__(self):
        if not self.on:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        task = self.bar.add_task(self.what, total=self.total)
        self.bar.start()
        return lambda n: self.bar.update(task, completed=n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def pack_dataset(dataset, data_root=None, *, dry_run: bool = False, force: bool = False, skip_bad: bool = False,
                 progress: bool = False) -> list[str]:
    """``pdmp datasets pack``: check the dataset (decoding every sample through the features cache)
    and write the packed store of each split -> lines to print. ``dry_run``: decode nothing and
    write nothing; say where each split's store would go and about how large it would be (from
    the file listings). ``force``: repack even when a store for this data exists."""
    import shutil

    from pdmp_cli.data.check import load_checked
    from pdmp_cli.data.loaders.files import FilesLoader, FilesSplit
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.data import store as st
    from pdmp_cli.errors import PdmpError

    manifest = load_manifest(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    if manifest.loader != "files":
        raise PdmpError(f"dataset {manifest.name} is generated ({manifest.loader}); only datasets of files are packed", 2)
    if dry_run:
        bundle = FilesLoader.build(manifest, data_root=data_root, skip_bad=skip_bad)
        lines, total = [], 0
        for split in ("train", "val", "test"):
            ds = getattr(bundle, split, None)
            if not isinstance(ds, FilesSplit):
                continue
            n = st.estimate(ds.modalities, ds.samples, manifest.packed.audio_dtype)
            total += n
            dest = st.split_dir(ds.dataset, split)
            state = "up to date" if st.Store.open(dest, st.store_key(
                bundle.identity, split, ds.modalities, manifest.packed.audio_dtype), ds.mtimes) is not None \
                else "to write"
            lines.append(f"{split}: {len(ds)} samples, about {st.human(n)} at {dest} ({state})")
        where = st.packed_root()
        probe = next((p for p in [where, *where.parents] if p.exists()), None)
        free = f", {st.human(shutil.disk_usage(probe).free)} free there" if probe is not None else ""
        lines.append(f"would write about {st.human(total)} in all{free} (dry run: nothing decoded or written)")
        return lines
    bundle, report = load_checked(manifest, data_root, skip_bad=skip_bad, progress=progress)
    _, lines = use_store(bundle, manifest, force=force, progress=progress,
                         extra=_checked(manifest, data_root, bundle, report))
    if report.skipped:
        lines.append(f"left out {report.skipped} bad samples (--skip-bad)")
    return lines


def load_packed(dataset, data_root=None, *, skip_bad: bool = False, splits=("train", "val", "test")):
    """``pdmp train``'s data: ``(bundle, report, lines)`` with its files splits packed.

    When every split of ``splits`` already has its store for this data (same lists, file sizes and
    frame counts, settings, files' modification times, and the same samples the data check left
    out, recorded in the store), the deep check is skipped and nothing is decoded;
    ``report.skipped`` is the recorded count.
    Otherwise :func:`~pdmp_cli.data.check.load_checked` (decoding every sample of ``splits`` through
    the features cache), then the stores are packed from the cache. Generated datasets and
    ``PDMP_PACKED=0``: ``load_checked`` alone.
    """
    from pdmp_cli.data.check import load_checked
    from pdmp_cli.data.manifest import load_manifest
    from pdmp_cli.data import store as st

    manifest = load_manifest(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    skip_splits = tuple(s for s in ("test",) if s not in splits)
    if manifest.loader == "files" and st.enabled_by_env():
        found = _stored(manifest, data_root, skip_bad, splits)
        if found is not None:
            return found
    bundle, report = load_checked(manifest, data_root, skip_bad=skip_bad, skip_splits=skip_splits)
    extra = _checked(manifest, data_root, bundle, report) if manifest.loader == "files" else None
    bundle, lines = use_store(bundle, manifest, splits=splits, extra=extra)
    return bundle, report, lines


def _checked(manifest, data_root, bundle, report) -> dict:
    """What a store records of the check it was packed after: the samples left out, the identity
    of the data with them, and their files' modification times (a repaired file changes one of
    them, even at the same size, so the next run checks again)."""
    from pdmp_cli.data.loaders.files import FilesLoader

    excluded = {tuple(x) for x in report.bad_samples}
    whole = FilesLoader.build(manifest, data_root=data_root, skip_bad=True) if excluded else bundle
    return {"excluded": sorted(list(x) for x in excluded), "source_identity": whole.identity,
            "excluded_mtimes": _excluded_mtimes(whole, excluded)}


def _excluded_mtimes(whole, excluded: set) -> str:
    """A digest of the modification times of the left-out samples' files (``whole``: the bundle
    with them)."""
    from pdmp_cli.cache import stable_hash
    from pdmp_cli.data.loaders.files import file_mtimes

    out = []
    for split in ("train", "val", "test"):
        ds = getattr(whole, split, None)
        if ds is not None and excluded:
            out.append(file_mtimes([s for s in ds.samples if (split, s.id) in excluded], ds.modalities))
    return stable_hash(out)


def _stored(manifest, data_root, skip_bad: bool, splits):
    """(bundle, report, lines) from complete stores of this data, or None (then check and pack)."""
    import json
    from dataclasses import replace

    from pdmp_cli.data.check import Report
    from pdmp_cli.data.loaders.files import FilesLoader, FilesSplit
    from pdmp_cli.data import store as st
    from pdmp_cli.errors import PdmpError

    try:
        meta = json.loads((st.split_dir(manifest.name, "train") / st.META).read_text())
        excluded = {(a, b) for a, b in meta.get("excluded", [])}
    except (OSError, ValueError, TypeError):
        return None
    if excluded and not skip_bad:  # the check must say what is wrong
        return None
    try:
        bundle = FilesLoader.build(manifest, data_root=data_root, exclude=excluded, skip_bad=skip_bad)
        whole = FilesLoader.build(manifest, data_root=data_root, skip_bad=True) if excluded else bundle
    except PdmpError:
        return None
    if meta.get("source_identity") != whole.identity:  # a file changed, or a left-out one was repaired
        return None
    if meta.get("excluded_mtimes") != _excluded_mtimes(whole, excluded):  # a left-out one modified since
        return None
    audio_dtype = manifest.packed.audio_dtype
    changes, lines = {}, []
    for split in splits:
        ds = getattr(bundle, split, None)
        if not isinstance(ds, FilesSplit):
            continue
        store = Store.open(st.split_dir(ds.dataset, split), st.store_key(bundle.identity, split, ds.modalities, audio_dtype),
                           ds.mtimes)
        if store is None or {tuple(x) for x in store.meta.get("excluded", [])} != excluded:
            return None
        changes[split] = PackedSplit(ds.dataset, split, store, ds.modalities, ds.train)
        lines.append(f"packed store read: {store.path} ({st.human(store.nbytes)}, {store.n} samples; "
                     "data unchanged since packing, not decoded again)")
    report = Report(manifest.name, None, {s: len(getattr(bundle, s)) for s in changes}, skipped=len(excluded))
    return replace(bundle, **changes), report, lines
