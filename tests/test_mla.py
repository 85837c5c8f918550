"""MLA (alternating unimodal adaptation): OWM projection and fusion weights against hand computations."""

import math

import pytest
import torch

from pdmp_cli.methods.mla import combine, entropy_weights, owm_alpha, owm_update, project_


def test_owm_alpha_follows_the_batch_index():
    assert owm_alpha(0, 10) == pytest.approx(0.1)
    assert owm_alpha(5, 10) == pytest.approx(0.1**1.5)  # 0.0316228


def test_owm_update_matches_hand_computation():
    # P = I, r = mean([[1, 1]]) = [1, 1], alpha 1: k = P r^T = [1, 1]^T, r k = 2
    # P - k k^T / 3 = [[2/3, -1/3], [-1/3, 2/3]];  ||.||_F = sqrt(10)/3  ->  [[2, -1], [-1, 2]] / sqrt(10)
    P = owm_update(torch.eye(2), torch.tensor([[1.0, 1.0]]), alpha=1.0)
    s = math.sqrt(10)
    torch.testing.assert_close(P, torch.tensor([[2 / s, -1 / s], [-1 / s, 2 / s]]))
    # r is the batch MEAN: [[1, 0], [3, 0]] -> r = [2, 0]; alpha 0.1: P00 = 1 - 4/4.1 = 0.1/4.1, then / ||P||_F
    P = owm_update(torch.eye(2), torch.tensor([[1.0, 0.0], [3.0, 0.0]]), alpha=0.1)
    n = math.sqrt((0.1 / 4.1) ** 2 + 1)
    torch.testing.assert_close(P, torch.tensor([[0.1 / 4.1 / n, 0.0], [0.0, 1 / n]]))


def test_projection_is_grad_times_p_transposed():
    s = math.sqrt(10)
    P = torch.tensor([[2 / s, -1 / s], [-1 / s, 2 / s]])
    g = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # (K=2, D=2)
    project_(g, P)
    torch.testing.assert_close(g, torch.tensor([[2 / s, -1 / s], [-3 / s, 6 / s]]))


def test_dynamic_weights_per_sample_by_hand():
    # sample 0: audio uniform H = ln 2 = 0.693147; visual softmax([ln 3, 0]) = [.75, .25],
    # H = .75 ln(4/3) + .25 ln 4 = 0.562335.  w_v = e^(0.693147-0.562335) / (1 + e^0.130812) = 0.532657
    # sample 1 swaps the modalities, so its weights swap: the weights are per sample, not per batch
    a = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    v = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]])
    w = entropy_weights({"audio": a, "visual": v})
    torch.testing.assert_close(w["visual"], torch.tensor([0.532657, 0.467343]), atol=1e-6, rtol=0)
    torch.testing.assert_close(w["audio"], torch.tensor([0.467343, 0.532657]), atol=1e-6, rtol=0)
    # three modalities: equal entropies give 1/3 each
    z = torch.zeros(1, 4)
    w3 = entropy_weights({"a": z, "b": z, "c": z})
    assert [float(x) for x in w3.values()] == pytest.approx([1 / 3] * 3)


def test_combine_fixed_and_per_sample_weights():
    a, v = torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(combine({"a": a, "v": v}, {"a": 0.5, "v": 0.5}), torch.tensor([[0.5, 2.0], [1.0, 1.0]]))
    w = {"a": torch.tensor([1.0, 0.0]), "v": torch.tensor([0.0, 1.0])}
    torch.testing.assert_close(combine({"a": a, "v": v}, w), torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
