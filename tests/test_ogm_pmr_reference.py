"""OGM-GE's coefficient and PMR's prototype momentum against their reference code, by hand.

OGM-GE: GeWu-Lab/OGM-GE_CVPR2022 343dc1d, main.py::train_epoch (ratio_v = score_v / score_a,
ratio_a = 1 / ratio_v; ``if ratio_v > 1`` k_v = 1 - tanh(alpha * relu(ratio_v)), else k_a = the
same with ratio_a). PMR: fanyunfeng-bit/Modal-Imbalance-PMR 3615e48, main_Prototype_grad.py
(``calculate_prototype`` blends with momentum only for ``epoch > 0``, and is called with epoch 0
before training and after epoch 0).
"""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import make_profile

from pdmp_cli.methods import build_method
from pdmp_cli.methods.ogm_ge import ogm_coefficients
from pdmp_cli.models.multimodal import build_multimodal
from pdmp_cli.specs import TrainSpec


def _logits(p_true: float, n: int = 2, classes: int = 3) -> torch.Tensor:
    """n rows whose softmax gives the true class (label 0) probability p_true."""
    rest = (1 - p_true) / (classes - 1)
    return torch.log(torch.tensor([[p_true] + [rest] * (classes - 1)] * n, dtype=torch.float64)).float()


@pytest.mark.parametrize(
    "p_a, p_v, alpha",
    [(0.6, 0.3, 0.8), (0.3, 0.6, 0.8), (0.6, 0.3, 0.1), (0.9, 0.3, 1.0), (0.5, 0.45, 0.6)],
)
def test_ogm_k_is_one_minus_tanh_alpha_rho_on_the_leading_modality(p_a, p_v, alpha):
    # score_m = n * p_m; rho = score_lead / score_other; k_lead = 1 - tanh(alpha * rho), k_other = 1
    k = ogm_coefficients({"audio": _logits(p_a), "visual": _logits(p_v)}, torch.zeros(2, dtype=torch.long), alpha)
    lead, other = ("audio", "visual") if p_a > p_v else ("visual", "audio")
    rho = max(p_a, p_v) / min(p_a, p_v)
    assert k[lead].item() == pytest.approx(1 - math.tanh(alpha * rho), abs=2e-6)  # relu(rho), not relu(rho - 1)
    assert k[other].item() == 1.0


def test_ogm_tie_damps_the_first_modality_as_the_reference():
    # ratio_v = 1 is not > 1: the reference's else branch, k_a = 1 - tanh(alpha * 1), k_v = 1
    k = ogm_coefficients({"audio": _logits(0.4), "visual": _logits(0.4)}, torch.zeros(2, dtype=torch.long), 0.8)
    assert k["audio"].item() == pytest.approx(1 - math.tanh(0.8), abs=1e-6)
    assert k["visual"].item() == 1.0


def test_ogm_k_reaches_zero_in_float32_only_past_alpha_rho_9():
    # tanh(x) rounds to 1.0 in float32 from x ~ 9.011; rho = 0.99 / 0.099 = 10
    labels = torch.zeros(2, dtype=torch.long)
    logits = {"audio": _logits(0.99, classes=11), "visual": _logits(0.099, classes=11)}
    assert ogm_coefficients(logits, labels, 1.0)["audio"].item() == 0.0  # alpha * rho = 10
    k = ogm_coefficients(logits, labels, 0.8)["audio"].item()  # alpha * rho = 8: 1 - tanh(8) = 2.3e-7
    assert 0 < k < 1e-6


def _pmr(momentum):
    torch.manual_seed(0)
    model = build_multimodal("small", "concat", {"audio": 1, "visual": 3}, num_classes=3)
    spec = TrainSpec(profile="p", encoder="small", method="pmr", method_args={"pmr": {"momentum": momentum}})
    return build_method("pmr", model, spec, make_profile(dataset="toy"))


def test_pmr_momentum_applies_from_the_third_prototype_computation_as_the_reference():
    method = _pmr(0.5)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    feats = [{m: torch.randn(6, 128) for m in ("audio", "visual")} for _ in range(3)]

    def means(f):
        return torch.stack([f["audio"][labels == c].mean(0) for c in range(3)])

    for epoch in (0, 1):  # the reference: epoch <= 0 for both calls -> the class means as they are
        method.on_epoch_start(SimpleNamespace(features=lambda split, fraction: (feats[epoch], labels), epoch=epoch))
        torch.testing.assert_close(method.proto_audio, means(feats[epoch]))
    method.on_epoch_start(SimpleNamespace(features=lambda split, fraction: (feats[2], labels), epoch=2))
    torch.testing.assert_close(method.proto_audio, 0.5 * means(feats[2]) + 0.5 * means(feats[1]))
