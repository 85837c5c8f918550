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
