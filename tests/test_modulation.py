"""Eq. 10-12 on one batch: modulated gradients against an unmodulated backward of the same batch."""

import pytest
import torch

from pdmp_cli.errors import PdmpError
from pdmp_cli.models.fusions import FUSIONS, builds_model
from pdmp_cli.models.multimodal import build_multimodal
from pdmp_cli.modulation import PDMPModulator, resolve_gammas
from conftest import make_profile
from pdmp_cli.profile import Profile

def _model_and_batch(channels: dict[str, int], fusion="concat", seed=0):
    torch.manual_seed(seed)
    model = build_multimodal("small", fusion, channels, num_classes=3)
    inputs = {m: torch.randn(4, c, 16, 16) for m, c in channels.items()}
    labels = torch.tensor([0, 1, 2, 1])
    return model, inputs, labels


def _grads(model, inputs, labels, after_backward=None) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks (mmformer) in every pass
    loss = torch.nn.functional.cross_entropy(model(inputs, with_branches=False).logits, labels)
    loss.backward()
    if after_backward is not None:
        after_backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _check(model, ref, got, gammas):
    """Modality m's own grads are exactly gammas[m] x the reference; every shared grad unchanged."""
    assert ref.keys() == got.keys()
    owner = {id(p): m for m, ps in model.modality_parameters().items() for p in ps}
    n_owned = n_shared = 0
    for name, p in model.named_parameters():
        m = owner.get(id(p))
        if m is not None:
            assert torch.equal(got[name], ref[name] * gammas[m]), name
            n_owned += 1
        else:
            assert torch.equal(got[name], ref[name]), f"{name} is shared: it must be untouched"
            n_shared += 1
    assert n_owned == len(owner) and n_shared > 0


@pytest.mark.parametrize(
    "mp, mo, expected",
    [
        ("visual", "audio", {"visual": 10.0, "audio": 0.1}),  # m_p != m_o: gamma_r = 1 / gamma_p
        ("audio", "audio", {"audio": 10.0, "visual": 10.0}),  # m_p == m_o: gamma_r = gamma_p
    ],
    ids=["mp-ne-mo", "mp-eq-mo"],
)
@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_encoder_grads_scaled_exactly_fusion_untouched(mp, mo, expected, fusion):
    model, x, y = _model_and_batch({"audio": 1, "visual": 3}, fusion)
    ref = _grads(model, x, y)
    mod = PDMPModulator(model.encoders, gamma_p=10, performance_dominant=mp, optimization_dominant=mo)
    assert mod.gammas == expected
    _check(model, ref, _grads(model, x, y, mod.apply), expected)


@pytest.mark.parametrize("fusion", [n for n in FUSIONS.names() if builds_model(n)])
@pytest.mark.parametrize(
    "channels, mp, mo, expected",
    [
        ({"audio": 1, "visual": 3}, "visual", "audio", {"visual": 5.0, "audio": 0.2}),
        ({"rgb": 3, "depth": 1, "ir": 1}, "depth", "depth", {"rgb": 5.0, "depth": 5.0, "ir": 5.0}),
    ],
    ids=["2-modalities", "3-modalities"],
)
def test_intermediate_fusions_scale_exactly_the_modality_owned_grads(fusion, channels, mp, mo, expected):
    """se / mmformer: encoders, excitation layers, tokenizers, intra-modal transformers and position
    embeddings x gamma; squeeze layers, inter-modal transformer and classifier untouched."""
    model, x, y = _model_and_batch(channels, fusion)
    owned = {id(p) for ps in model.modality_parameters().values() for p in ps}
    shared = {n.split(".")[0] + (".squeeze" if ".squeeze." in n else "") for n, p in model.named_parameters() if id(p) not in owned}
    assert shared == {"se": {"mmtm.squeeze", "head"}, "mmformer": {"inter", "norm", "classifier"}}[fusion]
    ref = _grads(model, x, y)
    mod = PDMPModulator(model.modality_parameters(), gamma_p=5, performance_dominant=mp, optimization_dominant=mo)
    assert mod.gammas == expected
    _check(model, ref, _grads(model, x, y, mod.apply), expected)
    hooked = PDMPModulator(model, gamma_p=5, performance_dominant=mp, optimization_dominant=mo).install_hooks()
    _check(model, ref, _grads(model, x, y), expected)  # the model itself, and hooks: the same
    hooked.remove_hooks()


def test_modules_or_parameter_lists_resolve_to_the_same_parameters():
    model, _, _ = _model_and_batch({"audio": 1, "visual": 3}, "se")
    enc, excite = model.encoders["audio"], [b.excite["audio"] for b in model.mmtm]
    as_modules = PDMPModulator({"audio": [enc, *excite], "visual": model.modality_parameters()["visual"]}, 2, "audio", "audio")
    assert [id(p) for p in as_modules.params["audio"]] == [id(p) for p in model.modality_parameters()["audio"]]
    twice = list(enc.parameters())
    assert len(PDMPModulator({"audio": twice + twice, "visual": [model.head.bias]}, 2, "audio", "audio").params["audio"]) == len(twice)


def test_three_modalities_every_remaining_modality_gets_gamma_r():
    model, x, y = _model_and_batch({"rgb": 3, "depth": 1, "ir": 1})
    ref = _grads(model, x, y)
    mod = PDMPModulator(model.encoders, gamma_p=4, performance_dominant="depth", optimization_dominant="ir")
    assert mod.gammas == {"rgb": 0.25, "depth": 4.0, "ir": 0.25}
    _check(model, ref, _grads(model, x, y, mod.apply), mod.gammas)
    same = PDMPModulator(model.encoders, gamma_p=4, performance_dominant="rgb", optimization_dominant="rgb")
    assert same.gammas == {"rgb": 4.0, "depth": 4.0, "ir": 4.0}
    _check(model, ref, _grads(model, x, y, same.apply), same.gammas)


def test_hooks_equal_apply_and_can_be_removed():
    model, x, y = _model_and_batch({"audio": 1, "visual": 3})
    ref = _grads(model, x, y)
    mod = PDMPModulator(model.encoders, gamma_p=5, performance_dominant="visual", optimization_dominant="audio")
    assert mod.install_hooks() is mod
    hooked = _grads(model, x, y)
    _check(model, ref, hooked, {"visual": 5.0, "audio": 0.2})
    with pytest.raises(PdmpError, match="already scale"):
        mod.apply()  # would scale twice
    mod.remove_hooks()
    assert all(torch.equal(g, ref[n]) for n, g in _grads(model, x, y).items())


def _profile(**kw) -> Profile:
    return make_profile(**{"dataset": "toy", **kw})


def test_profile_object_or_path(tmp_path):
    model, _, _ = _model_and_batch({"audio": 1, "visual": 3})
    assert PDMPModulator(model.encoders, 15, profile=_profile()).gammas == {"audio": 1 / 15, "visual": 15.0}
    path = _profile(optimization_dominant="visual").save(tmp_path / "p.json")
    assert PDMPModulator(model.encoders, 15, profile=str(path)).gammas == {"audio": 15.0, "visual": 15.0}
    # a hand-given dominant wins over the profile's
    assert PDMPModulator(model.encoders, 2, profile=_profile(), optimization_dominant="visual").gammas == {
        "audio": 2.0,
        "visual": 2.0,
    }


def test_refusals_name_the_cause():
    model, _, _ = _model_and_batch({"audio": 1, "visual": 3})
    with pytest.raises(PdmpError, match="optimization-dominant modality is unknown"):
        PDMPModulator(model.encoders, 10, profile=_profile(optimization_dominant=None))
    with pytest.raises(PdmpError, match=r"profile is for modalities \['rgb', 'depth'\] but the modalities given are \['audio', 'visual'\]"):
        PDMPModulator(
            model.encoders, 10, profile=_profile(modalities=["rgb", "depth"], performance_dominant="rgb", optimization_dominant="rgb")
        )
    with pytest.raises(PdmpError, match="modalities 'audio' and 'visual' share parameters, so one gamma cannot"):
        PDMPModulator({"audio": model.encoders["audio"], "visual": model.encoders["audio"]}, 10, "visual", "audio")
    with pytest.raises(PdmpError, match="modality 'visual' was given no parameters to scale"):
        PDMPModulator({"audio": model.encoders["audio"], "visual": []}, 10, "visual", "audio")
    with pytest.raises(PdmpError, match="modality 'audio': expected modules or parameters, got str"):
        PDMPModulator({"audio": ["conv"], "visual": model.encoders["visual"]}, 10, "visual", "audio")
    with pytest.raises(PdmpError, match="gamma_p must be > 0, got -1"):
        resolve_gammas(["audio", "visual"], "visual", "audio", -1)
    with pytest.raises(PdmpError, match="performance-dominant modality 'text' is not one of"):
        resolve_gammas(["audio", "visual"], "text", "audio", 10)


def test_describe_states_eq12_branch():
    model, _, _ = _model_and_batch({"audio": 1, "visual": 3})
    d = PDMPModulator(model.encoders, 10, "visual", "audio").describe()
    assert d.startswith("audio x0.1, visual x10") and "gamma_r = 1/gamma_p" in d
    assert "gamma_r = gamma_p because audio" in PDMPModulator(model.encoders, 10, "audio", "audio").describe()


def test_eq12_readings_for_a_third_modality():
    mods = ["audio", "visual", "depth"]  # m_p visual, m_o audio; depth is neither
    assert resolve_gammas(mods, "visual", "audio", 10) == {"audio": 0.1, "visual": 10.0, "depth": 0.1}  # default
    assert resolve_gammas(mods, "visual", "audio", 10, others="one") == {"audio": 0.1, "visual": 10.0, "depth": 1.0}
    assert resolve_gammas(mods, "visual", "audio", 10, others="gamma_p") == {"audio": 0.1, "visual": 10.0, "depth": 10.0}
    for others in ("gamma_r", "one", "gamma_p"):  # m_p == m_o: every reading gives everyone gamma_p
        assert resolve_gammas(mods, "visual", "visual", 10, others=others) == {m: 10.0 for m in mods}
    with pytest.raises(PdmpError, match="others must be one of gamma_r, one, gamma_p, got 'x'"):
        resolve_gammas(mods, "visual", "audio", 10, others="x")


def test_describe_names_the_criterion_that_chose_m_o_and_a_disagreement():
    model, _, _ = _model_and_batch({"audio": 1, "visual": 3})
    probe = _profile(optimization_dominant="audio").model_copy(update={
        "optimization_criterion": "multimodal-probe", "early_ranking": ["visual", "audio"],
        "probe": {"ranking": ["audio", "visual"]},
    })  # fmt: skip
    d = PDMPModulator(model.encoders, 10, profile=probe).describe()
    assert d.endswith("m_o audio by the branch ranking of a multimodal probe (Alg. 1) (the criteria disagree: "
                      "early unimodal accuracy says visual; `pdmp tune` tries both)")  # fmt: skip
    agree = probe.model_copy(update={"early_ranking": ["audio", "visual"]})
    assert PDMPModulator(model.encoders, 10, profile=agree).describe().endswith("m_o audio by the branch ranking of a multimodal probe (Alg. 1)")
    assert "m_o" not in PDMPModulator(model.encoders, 10, "visual", "audio").describe().split("Eq. 12)")[1]  # by hand: no profile
