"""The validation split: stratified, seeded, disjoint from train and test; the manifest's own
split wins; 0 only with an explicit flag; clear refusals."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch

from pdmp_cli.data import load_dataset
from pdmp_cli.data.split import carve, eval_split, with_validation
from pdmp_cli.errors import PdmpError
from pdmp_cli.specs import TrainSpec


def test_carve_is_stratified_seeded_and_disjoint():
    labels = [0] * 50 + [1] * 30 + [2] * 20  # 100 samples, unbalanced
    train, val = carve(labels, 0.1, seed=0)
    assert sorted(train + val) == list(range(100)) and not set(train) & set(val)
    assert Counter(labels[i] for i in val) == {0: 5, 1: 3, 2: 2}  # each class in proportion
    assert carve(labels, 0.1, seed=0) == (train, val)  # same seed, same split
    assert carve(labels, 0.1, seed=1)[1] != val


def test_with_validation_carves_from_train_and_never_touches_test(tiny_manifest):
    bundle = load_dataset(tiny_manifest)  # 60 train (3 classes x 20), 30 test, no val of its own
    b, rec = with_validation(bundle, 0.1, seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (54, 6, 30) and b.test is bundle.test
    assert b.identity == bundle.identity and b.train_labels == [bundle.train_labels[i] for i in b.train.indices]
    assert Counter(b.val_labels) == {0: 2, 1: 2, 2: 2}
    assert set(b.train.indices).isdisjoint(b.val.indices)
    # the val samples are train samples (read as they are), none of them a test sample
    tests = torch.stack([bundle.test[i][0]["visual"] for i in range(len(bundle.test))])
    for i, j in enumerate(b.val.indices):
        x, y = b.val[i]
        assert torch.equal(x["visual"], bundle.train[j][0]["visual"]) and y == bundle.train_labels[j]
        assert not (tests == x["visual"]).flatten(1).all(1).any()
    assert (rec["selection"], rec["source"], rec["fraction"], rec["seed"], rec["val_size"]) == ("validation", "carved", 0.1, 0, 6)
    assert eval_split(b) == (b.val, "val")


def test_the_datasets_own_split_wins_and_test_selection_is_explicit(tiny_manifest):
    bundle = load_dataset(tiny_manifest)
    own = replace(bundle, val=bundle.test, val_labels=[0] * len(bundle.test))  # stands in for a manifest's [splits.val]
    b, rec = with_validation(own, 0.1, seed=0)
    assert b is own and rec["source"] == "manifest" and rec["fraction"] is None
    b, rec = with_validation(bundle, 0.0, seed=0, select_on_test=True)
    assert b.val is None and rec["selection"] == "test" and eval_split(b) == (b.test, "test")
    with pytest.raises(PdmpError, match="has no validation split of its own and --val-fraction is 0"):
        with_validation(bundle, 0.0, seed=0)


def test_refusals_are_one_clear_line(tiny_manifest):
    with pytest.raises(PdmpError, match=r"cannot carve a stratified validation split of 0.01 from 60 training samples .*--val-fraction"):
        with_validation(load_dataset(tiny_manifest), 0.01, seed=0)  # 1 sample for 3 classes
    with pytest.raises(ValueError, match="pass --select-on-test to accept that"):
        TrainSpec(profile="p.json", val_fraction=0)
    assert TrainSpec(profile="p.json", val_fraction=0, select_on_test=True).select_on_test


class _Augmenting:
    """Stands in for a file-backed training split: ``train`` True adds its 'augmentation' (+100)."""

    def __init__(self, n: int):
        self.n, self.train = n, True

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return {"x": torch.tensor([float(i) + (100.0 if self.train else 0.0)])}, i % 2


def test_methods_read_the_training_split_unaugmented_unless_they_ask():
    from types import SimpleNamespace

    from torch.utils.data import Subset

    from pdmp_cli.train.state import EpochContext

    base = _Augmenting(10)
    for train, order in ((base, list(range(10))), (Subset(base, [7, 2, 5]), [7, 2, 5])):  # own val / carved val
        bundle = SimpleNamespace(train=train, val=None, name="t")
        ctx = EpochContext(epoch=0, model=None, optimizer=None, spec=None, bundle=bundle, device=torch.device("cpu"))
        assert [ctx.dataset("train")[i][0]["x"].item() for i in range(len(order))] == order
        augmented = ctx.dataset("train", view="augmented")
        assert [augmented[i][0]["x"].item() for i in range(len(order))] == [i + 100 for i in order]
    assert base.train is True  # the training loader's split is left as it is
    with pytest.raises(ValueError, match="only the training split is augmented"):
        ctx.dataset("val", view="augmented")
