"""D&R (diagnosing and re-learning): purity, re-initialisation weight and blend against hand computations."""

import math

import numpy as np
import pytest
import torch

from pdmp_cli.methods.dr import blend_, cluster_purity, default_reinit_epoch, purity, reinit_due, reinit_weight


def test_purity_by_hand():
    # cluster 0 holds labels {0, 0, 1} (majority 2), cluster 1 holds {1, 1} (2): purity 4/5
    assert purity([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == pytest.approx(0.8)
    assert purity([2, 2, 5], [7, 7, 7]) == pytest.approx(2 / 3)


def test_cluster_purity_separates_clear_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres[labels] + rng.normal(scale=0.1, size=(60, 2))
    assert cluster_purity(x, labels, num_classes=3) == 1.0
    assert cluster_purity(rng.normal(size=(60, 2)), labels, num_classes=3) < 0.7  # noise: near chance


def test_blend_for_a_given_gap_by_hand():
    # gap |0.9 - 0.7| = 0.2, lambda 3: w = tanh(0.6) = 0.537050; theta 1, theta_init 0 -> 1 - w = 0.462950
    w = reinit_weight(0.9, 0.7, lam=3.0)
    assert w == pytest.approx(math.tanh(0.6)) and w == pytest.approx(0.5370496, abs=1e-7)
    assert reinit_weight(0.7, 0.9, lam=3.0) == w  # the gap is absolute
    p = torch.nn.Parameter(torch.tensor([1.0, 3.0]))
    blend_([p], [torch.tensor([0.0, -1.0])], w)
    torch.testing.assert_close(p.data, torch.tensor([1 - w, 3 * (1 - w) - w]))


def test_reinit_schedule_follows_the_reference():
    # ours.py: after 0-based epoch e with e % reinit_epoch == 0 and e > 0, at most reinit_num times
    due, done = [], 0
    for e in range(20):
        if reinit_due(e, 4, done, 3):
            due.append(e)
            done += 1
    assert due == [4, 8, 12]
    assert default_reinit_epoch(90) == 20 and default_reinit_epoch(20) == 4 and default_reinit_epoch(2) == 1


# --- the registered method at its re-initialisation point ----------------------------------------


class _Ctx:
    """The part of the loop's EpochContext D&R reads; records which splits it asked for."""

    def __init__(self, epoch, feats, labels, model, num_classes=3):
        self.epoch, self.model = epoch, model
        self.bundle = type("B", (), {"num_classes": num_classes})()
        self._data, self.asked = {"train": (feats[0], labels[0]), "val": (feats[1], labels[1])}, []

    def features(self, split, fraction=1.0):
        self.asked.append(split)
        return self._data[split]  # the real EpochContext refuses "test" (ValueError)


def test_reinit_blends_parameters_only_and_keeps_bn_stats_and_momentum():
    from pdmp_cli.methods import build_method
    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train.setup import build_optimizer

    torch.manual_seed(0)
    model = build_multimodal("small", "concat", {"audio": 1, "visual": 3}, num_classes=3)
    spec = TrainSpec(profile="p.json", encoder="small", lr=0.05, method="dr", epochs=20)
    method = build_method("dr", model, spec, None)
    assert method.period == 4  # 20 of 90 epochs, scaled to 20
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, spec, method)
    x = {"audio": torch.randn(8, 1, 16, 16), "visual": torch.randn(8, 3, 16, 16)}
    for _ in range(2):  # two SGD steps: weights move, momentum buffers and BN running stats fill
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x).logits, torch.arange(8) % 3).backward()
        opt.step()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    assert any(n.endswith("running_mean") for n in buffers)  # the encoders have BatchNorm layers
    momentum = {id(p): opt.state[p]["momentum_buffer"].clone() for p in model.parameters()}

    # audio: clean clusters on train, noise on val (gap 1 - low); visual: noise on both (small gap)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    clean = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])[y] + rng.normal(scale=0.1, size=(30, 2))
    train = {"audio": torch.tensor(clean), "visual": torch.tensor(rng.normal(size=(30, 2)))}
    val = {"audio": torch.tensor(rng.normal(size=(30, 2))), "visual": torch.tensor(rng.normal(size=(30, 2)))}
    ctx = _Ctx(4, (train, val), (torch.tensor(y), torch.tensor(y)), model)
    method.on_epoch_start(ctx)  # epoch 4 starts: not yet (the reference: after 0-based epoch 4)
    assert ctx.asked == [] and int(method.done) == 0
    ctx.epoch = 5
    method.on_epoch_start(ctx)
    assert sorted(set(ctx.asked)) == ["train", "val"] and int(method.done) == 1  # never the test split
    for m in ("audio", "visual"):
        r = method.last[m]
        assert r["weight"] == pytest.approx(math.tanh(3 * abs(r["purity_train"] - r["purity_val"])))
        for n, p in model.encoders[m].named_parameters():
            full = f"encoders.{m}.{n}"
            torch.testing.assert_close(p.detach(), r["weight"] * init[full] + (1 - r["weight"]) * before[full])
    assert method.last["audio"]["purity_train"] == 1.0 and method.last["audio"]["weight"] > method.last["visual"]["weight"]
    for n, p in model.fusion.named_parameters():  # the fusion head is not an encoder: left alone
        torch.testing.assert_close(p.detach(), before[f"fusion.{n}"])
    for n, b in model.named_buffers():  # BatchNorm running statistics: untouched, as in the reference
        torch.testing.assert_close(b, buffers[n])
    for p in model.parameters():  # the optimizer's momentum: untouched, as in the reference
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], momentum[id(p)])


def test_selecting_on_test_is_refused_before_anything_is_written():
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.methods import build_method
    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.specs import TrainSpec

    model = build_multimodal("small", "concat", {"audio": 1, "visual": 3}, num_classes=3)
    for m, fix in (("dr", "drop --select-on-test"), ("udi", "or set udi.anchor")):
        spec = TrainSpec(profile="p.json", encoder="small", method=m, select_on_test=True)
        with pytest.raises(PdmpError, match=f"{m} needs a validation split .*{fix}"):
            build_method(m, model, spec, None)
