import math

import torch

from pdmp_cli.metrics import accuracy, dependency, logit_mass, macro_f1


def test_dependency_is_eq5_ratio_and_shares():
    s1 = torch.tensor([[1.0, -2.0], [0.5, 0.5]])  # sum |s1| = 4
    s2 = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # sum |s2| = 2
    d = dependency(logit_mass({"audio": s1, "visual": s2}))
    assert d["w"] == 2.0
    assert math.isclose(d["share/audio"], 4 / 6) and math.isclose(d["share/visual"], 2 / 6)


def test_three_modalities_have_shares_but_no_w():
    d = dependency({"rgb": 1.0, "depth": 1.0, "ir": 2.0})
    assert "w" not in d and d["share/ir"] == 0.5


def test_macro_f1_hand_case():
    labels = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 1, 1, 1])
    # class 0: tp1 fp0 fn1 -> 2/3; class 1: tp2 fp1 fn0 -> 4/5
    assert math.isclose(macro_f1(preds, labels, 3), (2 / 3 + 4 / 5) / 2)
    assert accuracy(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])) == 0.5
