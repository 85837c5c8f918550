"""The validation split: where every decision (best epoch, modality ranking, tuning) is made.

Nothing is ever chosen on the test split. The validation split is, in order of preference:

1. the dataset's own validation split (``DatasetBundle.val``: a manifest's ``[splits.val]``,
   e.g. KS's and CeFA's), used as shipped; ``fraction`` does not apply;
2. else a class-stratified, seeded ``fraction`` of the training split (default 10 %), carved
   with scikit-learn's ``train_test_split(stratify=...)``; the model then trains on the rest,
   so the two are disjoint, and both are disjoint from test;
3. none, only when the caller asks for it explicitly (``select_on_test=True``, the paper's
   convention): results are then labelled "selected on test".

    from pdmp_cli.data.split import with_validation
    bundle, record = with_validation(bundle, fraction=0.1, seed=0)
    bundle.train, bundle.val            # train on one, select on the other
    record["source"], record["val_size"]  # "carved", 120; saved in the run directory and profile

``bundle`` keeps its name and ``identity`` (the data did not change); the split is described
by ``record`` (:func:`record_of`), which keys caches and is written beside results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from pdmp_cli.errors import PdmpError

DEFAULT_FRACTION = 0.1
# what a result says about how its epoch / ranking was chosen
SELECTED_ON_VAL, SELECTED_ON_TEST = "validation", "test"


def carve(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val) of a class-stratified, seeded split of ``labels``: disjoint, each sorted.

    Raises PdmpError when the split cannot hold every class (too small a ``fraction`` for the
    number of classes, or a class with a single sample).
    """
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise PdmpError(f"the validation fraction must be in (0, 1), got {fraction:g}", 2)
    index = list(range(len(labels)))
    try:
        train, val = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels, shuffle=True)
    except ValueError as e:  # sklearn: a class with one member, or fewer val (or train) samples than classes
        import math

        classes, n = len(set(labels)), len(labels)
        n_val = math.ceil(fraction * n)
        if n - n_val < classes:  # the training part is what is too small: the advice goes the other way
            fix = "use a smaller --val-fraction"
        elif n_val < classes:
            fix = "use a larger --val-fraction"
        else:  # a class with a single sample: no fraction helps
            fix = "give every class at least two training samples"
        raise PdmpError(
            f"cannot carve a stratified validation split of {fraction:g} from {n} training samples "
            f"({e}); {fix}, or give the dataset its own [splits.val]",
            2,
        ) from None
    return sorted(train), sorted(val)


def with_validation(bundle, fraction: float = DEFAULT_FRACTION, seed: int = 0, *, select_on_test: bool = False):
    """``(bundle', record)``: ``bundle'.train`` to train on and ``bundle'.val`` to select on.

    The manifest's own ``val`` when it has one; else a stratified ``fraction`` of ``train``
    (:func:`carve`, seeded by ``seed``), removed from ``bundle'.train``. ``select_on_test``:
    no validation split at all (``bundle'.val`` is None; callers then select on test and must
    label the result so). ``record`` is :func:`record_of`'s description of the split.
    """
    if select_on_test:
        b = replace(bundle, val=None, val_labels=None)
        return b, record_of(SELECTED_ON_TEST, b, None, None, None)
    if bundle.val is not None:
        return bundle, record_of("manifest", bundle, None, None, None)
    if fraction <= 0:
        raise PdmpError(
            f"dataset {bundle.name!r} has no validation split of its own and --val-fraction is 0; "
            "give a fraction such as 0.1, or pass --select-on-test to select on the test split (the paper's convention)",
            2,
        )
    from torch.utils.data import Subset

    train_idx, val_idx = carve(bundle.train_labels, fraction, seed)
    labels = bundle.train_labels
    b = replace(
        bundle,
        train=Subset(bundle.train, train_idx),
        train_labels=[labels[i] for i in train_idx],
        val=_EvalSubset(bundle.train, val_idx),
        val_labels=[labels[i] for i in val_idx],
    )
    return b, record_of("carved", b, fraction, seed, val_idx)


def record_of(source: str, bundle, fraction: float | None, seed: int | None, val_idx: list[int] | None) -> dict:
    """What was selected on and how: saved in summary.json and the profile, part of cache keys.

    ``source``: ``manifest`` | ``carved`` | ``test`` (no validation split: selected on test).
    ``val_indices_sha256`` fingerprints a carved split (indices into the manifest's train split).
    """
    return {
        "selection": SELECTED_ON_TEST if source == SELECTED_ON_TEST else SELECTED_ON_VAL,
        "source": source,
        "fraction": fraction,
        "seed": seed,
        "train_size": len(bundle.train),
        "val_size": len(bundle.val) if bundle.val is not None else 0,
        "val_indices_sha256": hashlib.sha256(json.dumps(val_idx).encode()).hexdigest()[:16] if val_idx else None,
    }


def eval_split(bundle):
    """``(dataset, name)`` that decisions are made on: ``val``, or ``test`` when there is none."""
    return (bundle.val, "val") if bundle.val is not None else (bundle.test, "test")


def evaluation_view(dataset):
    """``dataset`` (a training split, or a ``Subset`` of one) read as an evaluation split: the same
    samples in the same order, without augmentation."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        return _EvalSubset(dataset.dataset, list(dataset.indices))
    return _EvalSubset(dataset, list(range(len(dataset))))


class _EvalSubset:
    """Samples ``indices`` of a training split, read as an evaluation split (no augmentation).

    A file-backed training split augments (random crops, random frames) unless ``train`` is
    False; a validation sample must be read like a test sample, so a copy of the split with
    ``train=False`` serves it when the split has that switch. Other datasets (synthetic tensors)
    are read as they are.
    """

    def __init__(self, dataset, indices: list[int]):
        import copy

        if getattr(dataset, "train", None) is True:
            dataset = copy.copy(dataset)
            dataset.train = False
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def split_file(bundle, record: dict) -> dict:
    """``split.json`` of a run directory: the record and, for a carved split, its indices into train."""
    val = bundle.val
    return {**record, "val_indices": list(val.indices) if isinstance(val, _EvalSubset) else None}
