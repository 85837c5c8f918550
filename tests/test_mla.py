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


# --- the registered method in the training loop ---------------------------------------------------


def _mla(**args):
    from pdmp_cli.methods import build_method
    from pdmp_cli.models.multimodal import build_multimodal
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train.setup import build_optimizer

    torch.manual_seed(0)
    model = build_multimodal("small", "concat", {"audio": 1, "visual": 3}, num_classes=3)
    spec = TrainSpec(profile="p.json", encoder="small", lr=0.01, method="mla", method_args={"mla": args})
    method = build_method("mla", model, spec, None)
    return model, method, build_optimizer(model, spec, method), spec


def _one_batch(model, method, optimizer, x, y, epoch=0):
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run
    from pdmp_cli.train.state import EpochStats

    cpu = torch.device("cpu")
    train_one_epoch(
        Run(TrainSpec(profile="p.json", method="mla"), cpu, model, method, optimizer), [(x, y)], EpochStats(model.modalities, cpu),
        epoch=epoch, start_step=0, stop=GracefulInterrupt(),
    )  # fmt: skip


class _Ctx:
    """The part of the loop's EpochContext that MLA reads."""

    def __init__(self, n_train, batch_size):
        self.spec = type("S", (), {"batch_size": batch_size})()
        self._n = n_train

    def dataset(self, split):
        return range(self._n)


def test_one_batch_is_one_step_per_modality_in_order():
    model, method, opt, _ = _mla(projection=True)
    method.on_epoch_start(_Ctx(n_train=40, batch_size=4))  # 10 batches per epoch
    x = {"audio": torch.randn(4, 1, 16, 16), "visual": torch.randn(4, 3, 16, 16)}
    y = torch.tensor([0, 1, 2, 1])
    params = model.modality_parameters()
    seen = []

    def record(optimizer, args, kwargs):
        has = {m for m, ps in params.items() if any(p.grad is not None for p in ps)}
        seen.append((sorted(has), method.head.weight.grad is not None, any(p.grad is not None for p in model.fusion.parameters())))

    opt.register_step_pre_hook(record)
    with torch.no_grad():
        z_visual = model(x).features["visual"]  # the visual encoder is not stepped before its own step
    _one_batch(model, method, opt, x, y)
    # audio first, then visual; the shared head in each; the model's own fusion head never
    assert seen == [(["audio"], True, False), (["visual"], True, False)]
    # the first step of the run is not projected; the second updates P with the visual batch-mean feature
    expected = owm_update(torch.eye(z_visual.shape[1]), z_visual, owm_alpha(0, 10))
    torch.testing.assert_close(method.P, expected)
    assert method.exp_count == 2 and method.batch_index == 1
    # the counters travel with the method's state (checkpoints, --resume)
    state = method.state_dict()
    _, again, _, _ = _mla()
    again.load_state_dict(state)
    assert (again.exp_count, again.batch_index, again.batches) == (2, 1, 10)
    torch.testing.assert_close(again.P, method.P)


def test_default_leaves_the_head_gradient_unprojected_as_the_official_code():
    x = {"audio": torch.randn(4, 1, 16, 16), "visual": torch.randn(4, 3, 16, 16)}
    y = torch.tensor([0, 1, 2, 1])
    grads = {}
    for projection in (None, True):  # None: the default
        model, method, _, _ = _mla(**({} if projection is None else {"projection": projection}))
        method.on_epoch_start(_Ctx(n_train=40, batch_size=4))
        method.exp_count = 1  # past the run's first step, where the projection would apply
        out, loss = method.forward_loss(model, x, y, 0, "visual")
        loss.backward()
        raw = method.head.weight.grad.clone()
        z = out.features["visual"].detach()  # the unprojected gradient by hand: (softmax - onehot)^T z / B
        p = torch.softmax(method.head(z), 1) - torch.nn.functional.one_hot(y, 3)
        torch.testing.assert_close(raw, p.T @ z / 4)
        method.after_backward(out, y, 0)
        grads[projection] = (raw, method.head.weight.grad.clone())
    raw, after = grads[None]
    torch.testing.assert_close(after, raw, rtol=0, atol=0)  # default: exactly the unprojected gradient
    raw, after = grads[True]
    assert after.norm() < 0.2 * raw.norm()  # projection on: P / ||P||_F shrinks it (about 1/sqrt(D))


def test_projection_off_reproduces_the_official_code():
    model, method, opt, _ = _mla(projection=False, fusion="fixed")
    method.on_epoch_start(_Ctx(n_train=8, batch_size=4))
    x = {"audio": torch.randn(4, 1, 16, 16), "visual": torch.randn(4, 3, 16, 16)}
    _one_batch(model, method, opt, x, torch.tensor([0, 1, 2, 1]))
    torch.testing.assert_close(method.P, torch.eye(method.P.shape[0]))  # never updated, never applied
    # fixed fusion: uniform weights; the branch logits become the shared head's unimodal outputs
    model.eval()
    out = model(x)
    fused_branches = dict(out.branch_logits)
    pred = method.predict(out)
    a, v = method.head(out.features["audio"]), method.head(out.features["visual"])
    torch.testing.assert_close(pred.logits, 0.5 * a + 0.5 * v)
    torch.testing.assert_close(pred.branch_logits["visual"], v)
    # predict returns a new output and leaves the model's own untouched
    assert out.branch_logits.keys() == fused_branches.keys() and all(out.branch_logits[m] is s for m, s in fused_branches.items())
    assert not torch.equal(out.logits, pred.logits)


def test_bad_fixed_weights_are_refused_in_one_line():
    from pdmp_cli.errors import PdmpError

    with pytest.raises(PdmpError, match="mla.fixed_weights has 3 values and the dataset 2 modalities"):
        _mla(fixed_weights=[1, 1, 1])
