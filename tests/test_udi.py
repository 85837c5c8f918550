"""UDI (an approximation): anchor choice, consistency loss and its dynamic weight by hand."""

import math

import pytest
import torch

from pdmp_cli.methods.udi import choose_anchor, consistency_weight, follower_loss, js_divergence, predictive_entropy


def test_anchor_is_best_accuracy_ties_by_lower_entropy():
    acc, ent = {"audio": 0.80, "visual": 0.795}, {"audio": 0.9, "visual": 0.5}
    assert choose_anchor(acc, ent, tie_tolerance=0.01) == "visual"  # within 0.01: a tie, lower entropy wins
    assert choose_anchor(acc, ent, tie_tolerance=0.0) == "audio"  # exact: best accuracy wins
    assert choose_anchor({"a": 0.5, "b": 0.5}, {"a": 0.3, "b": 0.3}) == "a"  # full tie: dataset order
    assert choose_anchor({"a": 0.4, "b": 0.6, "c": 0.6}, {"a": 0.1, "b": 0.7, "c": 0.2}) == "c"


def test_predictive_entropy_by_hand():
    assert predictive_entropy(torch.zeros(3, 4)).item() == pytest.approx(math.log(4))


def test_js_divergence_by_hand():
    # P = [.5, .5], Q = [.75, .25], M = [.625, .375]
    # KL(P||M) = .5 ln(.8) + .5 ln(4/3) = 0.032269;  KL(Q||M) = .75 ln(1.2) + .25 ln(2/3) = 0.035375
    js = js_divergence(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]]))
    assert js.item() == pytest.approx(0.5 * (0.032269 + 0.035375), abs=1e-5)
    assert js_divergence(torch.randn(5, 3), torch.randn(5, 3)).item() >= 0
    x = torch.randn(4, 3)
    assert js_divergence(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_consistency_weight_is_the_followers_lag():
    y = torch.tensor([0])
    anchor, follower = torch.tensor([[math.log(3), 0.0]]), torch.zeros(1, 2)  # p(y): .75 vs .5
    assert consistency_weight(anchor, follower, y).item() == pytest.approx(0.25)
    assert consistency_weight(follower, anchor, y).item() == 0.0  # a follower ahead: supervised loss only
    f = torch.zeros(1, 2, requires_grad=True)
    loss, lam = follower_loss(f, anchor, y)
    assert lam.item() == pytest.approx(0.25)
    assert loss.item() == pytest.approx(math.log(2) + 0.25 * js_divergence(f, anchor).item(), abs=1e-6)


# --- the registered method: stage 2 leaves the anchor alone -----------------------------------


class _Ctx:
    def __init__(self, epoch, feats, labels):
        self.epoch, self._val = epoch, (feats, labels)

    def features(self, split, fraction=1.0):
        assert split == "val"  # the anchor is chosen on the held-out split, never on test
        return self._val


def test_anchor_chosen_on_val_and_frozen_in_stage_2():
    from pdmp_cli.methods import build_method
    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_optimizer
    from pdmp_cli.train.state import EpochStats

    torch.manual_seed(0)
    model = build_multimodal("small", "concat", {"audio": 1, "visual": 3}, num_classes=3)
    spec = TrainSpec(profile="p.json", encoder="small", lr=0.05, method="udi", epochs=4)
    method = build_method("udi", model, spec, None)
    opt = build_optimizer(model, spec, method)
    x = {"audio": torch.randn(6, 1, 16, 16), "visual": torch.randn(6, 3, 16, 16)}
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def batch(epoch):
        train_one_epoch(
            Run(spec, torch.device("cpu"), model, method, opt), [(x, y)], EpochStats(model.modalities, torch.device("cpu")),
            epoch=epoch, start_step=0, stop=GracefulInterrupt(),
        )  # fmt: skip

    batch(0)  # stage 1: both modalities learn alone (momentum buffers now exist for all)
    assert method.anchor is None and method.stage1 == 2
    method.on_epoch_start(_Ctx(1, {}, None))  # still stage 1: nothing asked
    # validation features on which the visual head is right more often: visual becomes the anchor
    model.eval()
    with torch.no_grad():
        feats = model(x).features
    labels = method.heads["visual"](feats["visual"]).argmax(1)  # labels the visual head gets all right
    model.train()
    method.on_epoch_start(_Ctx(2, feats, labels))
    assert method.choice["anchor"] == "visual" == method.anchor
    assert method.choice["accuracy"]["visual"] == 1.0
    again = build_method("udi", model, spec, None)
    again.load_state_dict(method.state_dict())  # a resumed run stays in stage 2 with its anchor
    assert again.anchor == "visual" and again.choice == method.choice

    own = [*model.modality_parameters()["visual"], *method.heads["visual"].parameters()]
    before = [p.detach().clone() for p in own]
    stats = {n: b.clone() for n, b in model.encoders["visual"].named_buffers()}
    follower = [p.detach().clone() for p in model.modality_parameters()["audio"]]
    batch(2)  # stage 2
    for p, b in zip(own, before):
        assert torch.equal(p.detach(), b)  # no step, no weight decay, no momentum
    for n, b in model.encoders["visual"].named_buffers():
        assert torch.equal(b, stats[n])  # its BatchNorm statistics stay put too
    assert any(not torch.equal(p.detach(), b) for p, b in zip(model.modality_parameters()["audio"], follower))
