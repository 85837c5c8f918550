"""Run specs: layering, and one-line messages naming field, value and what is allowed."""

import pytest

from pdmp_cli.errors import PdmpError
from pdmp_cli.specs import AnalyzeSpec, TrainSpec, dataset_defaults, read_spec_file, resolve_spec
from pdmp_cli.models.fusions import FUSIONS


def test_bad_gamma_names_field_value_and_bound():
    with pytest.raises(PdmpError) as e:
        resolve_spec(TrainSpec, {"profile": "p.json", "gamma_p": -1})
    assert str(e.value) == "gamma_p must be > 0, got -1"
    assert e.value.exit_code == 2


def test_every_problem_is_reported_at_once():
    with pytest.raises(PdmpError) as e:
        resolve_spec(TrainSpec, {"profile": "p.json", "gamma_p": 0, "fusion": "bogus", "method": "x"})
    msg = str(e.value)
    assert "gamma_p must be > 0, got 0" in msg
    assert f"fusion: unknown fusion; choose one of {sorted(FUSIONS.names())}, got 'bogus'" in msg
    assert "method: unknown method; choose one of ['agm', " in msg and "got 'x'" in msg


@pytest.mark.parametrize("subset", [0, 1.5, "0.2,1.5", -0.1])
def test_subset_outside_unit_interval_is_refused(subset):
    with pytest.raises(PdmpError, match=r"subset: each subset must be in \(0, 1\]"):
        resolve_spec(AnalyzeSpec, {"dataset": "synthetic", "subset": subset})


def test_subset_list_form():
    spec = resolve_spec(AnalyzeSpec, {"dataset": "synthetic", "subset": "0.2,0.4,1.0"})
    assert spec.subset == [0.2, 0.4, 1.0]


def test_unknown_key_in_a_spec_file_is_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('profile = "p.json"\ngama_p = 3\n')
    with pytest.raises(PdmpError, match="gama_p is not a known option"):
        resolve_spec(TrainSpec, read_spec_file(f))


def test_layers_flags_over_file_over_dataset_over_paper(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('profile = "p.json"\nepochs = 7\nlr = 0.5\n')
    spec = resolve_spec(
        TrainSpec, dataset_defaults("synthetic", TrainSpec), read_spec_file(f), {"lr": 0.25, "seed": None}
    )
    assert spec.lr == 0.25  # flag beats file
    assert spec.epochs == 7  # file beats dataset default (20)
    assert spec.encoder == "small"  # dataset default beats the paper's resnet18
    assert spec.momentum == 0.9 and spec.weight_decay == 1e-4  # the paper's settings
    assert spec.seed == 0  # a flag left unset (None) does not override


def test_json_spec_and_bad_syntax(tmp_path):
    good = tmp_path / "s.json"
    good.write_text('{"profile": "p.json", "gamma_p": 15}')
    assert resolve_spec(TrainSpec, read_spec_file(good)).gamma_p == 15
    bad = tmp_path / "b.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(PdmpError, match="could not be parsed"):
        read_spec_file(bad)
    with pytest.raises(PdmpError, match=r"must be .yaml, .yml, .toml or .json"):  # YAML: tests/test_examples.py
        ini = tmp_path / "s.ini"
        ini.write_text("x = 1")
        read_spec_file(ini)


def test_unknown_dataset_lists_the_manifests():
    with pytest.raises(PdmpError, match="unknown dataset 'nope'; choose one of: .*synthetic"):
        dataset_defaults("nope", TrainSpec)


def test_a_manifest_sets_method_hyperparameters_flags_still_win(tmp_path):
    from pdmp_cli.specs import TrainSpec, dataset_defaults, resolve_spec

    m = tmp_path / "m.toml"
    m.write_text('loader = "synthetic"\n[audio]\nreliability = 0.6\n[visual]\nreliability = 0.9\n'
                 '[defaults]\ngamma_p = 5.0\n[defaults.method_args.ogm-ge]\nalpha = 0.4\n')
    d = dataset_defaults(str(m), TrainSpec)
    assert resolve_spec(TrainSpec, d, {"profile": "p", "method": "ogm-ge"}).method_args["ogm-ge"]["alpha"] == 0.4
    flag = {"method_args": {"ogm-ge": {"alpha": 0.1}}}
    assert resolve_spec(TrainSpec, d, {"profile": "p", "method": "ogm-ge"}, flag).method_args["ogm-ge"]["alpha"] == 0.1
