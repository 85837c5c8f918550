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
