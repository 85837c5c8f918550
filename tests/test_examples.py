"""YAML spec files, and examples/: one commented spec per paper setting, each valid."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pdmp_cli.cli.app import app
from pdmp_cli.data import load_manifest
from pdmp_cli.errors import PdmpError
from pdmp_cli.profile import Profile
from pdmp_cli.specs import AnalyzeSpec, TrainSpec, dataset_defaults, read_spec_file, resolve_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PAPER_DATASETS = {"cremad", "ave", "ks", "vggsound", "ucf101", "cefa"}
TABLE_V = {"cremad": 15.0, "ave": 15.0, "ks": 10.0, "cefa": 15.0, "vggsound": 15.0}  # and Sec. IV-D for VGGSound


def test_yaml_toml_and_json_spec_files_read_alike(tmp_path):
    (tmp_path / "s.yaml").write_text("# a comment\ngamma_p: 15\nsubset: [0.2, 0.4]\nprofile: p.json\n")
    (tmp_path / "s.yml").write_text("{gamma_p: 15, subset: [0.2, 0.4], profile: p.json}\n")
    (tmp_path / "s.toml").write_text('gamma_p = 15\nsubset = [0.2, 0.4]\nprofile = "p.json"\n')
    (tmp_path / "s.json").write_text(json.dumps({"gamma_p": 15, "subset": [0.2, 0.4], "profile": "p.json"}))
    read = [read_spec_file(tmp_path / f"s.{ext}") for ext in ("yaml", "yml", "toml", "json")]
    assert all(r == {"gamma_p": 15, "subset": [0.2, 0.4], "profile": "p.json"} for r in read)
    (tmp_path / "empty.yaml").write_text("# only comments\n")
    assert read_spec_file(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(
    "name, text, says",
    [
        ("bad.yaml", "gamma_p: [1,\n", "could not be parsed"),
        ("list.yaml", "- 1\n- 2\n", "must hold a mapping of options (key: value), not a list"),
        ("spec.ini", "x=1", "must be .yaml, .yml, .toml or .json"),
    ],
)
def test_bad_spec_files_are_one_line(tmp_path, name, text, says):
    (tmp_path / name).write_text(text)
    with pytest.raises(PdmpError, match=None) as e:
        read_spec_file(tmp_path / name)
    assert says in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2


def opening_command(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# pdmp "), f"{path.name} must open with the command that runs it"
    return first.removeprefix("# pdmp ").split()


def test_every_paper_setting_has_an_example():
    datasets = {read_spec_file(p)["dataset"] for p in EXAMPLES if ".analyze" not in p.name}
    assert PAPER_DATASETS <= datasets


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # any folder: reference profiles by name, the rest written and read where pdmp runs
    analyze = path.name.endswith(".analyze.yaml")
    assert opening_command(path) == ["analyze" if analyze else "train", "--spec", f"examples/{path.name}"]
    layer = read_spec_file(path)
    model = AnalyzeSpec if analyze else TrainSpec
    spec = resolve_spec(model, dataset_defaults(layer["dataset"], model), layer)  # as the command resolves it
    manifest = load_manifest(spec.dataset)
    assert spec.encoder == "resnet18" and spec.batch_size == 64 and spec.lr == 0.001  # the paper's settings
    if analyze:
        sibling = ROOT / "examples" / path.name.replace(".analyze.yaml", ".yaml")
        assert read_spec_file(sibling)["profile"] == spec.out  # the train example uses what this writes
        return
    assert spec.method == "pdmp" and spec.fusion == "concat" and spec.epochs == 100 and spec.lr_schedule == "none"
    if spec.dataset in TABLE_V:
        assert spec.gamma_p == TABLE_V[spec.dataset]
    if spec.profile.endswith(".paper"):  # a shipped reference profile: it must describe this dataset
        profile = Profile.load(spec.profile)
        assert profile.dataset == spec.dataset
        assert sorted(profile.modalities) == sorted(manifest.modalities)
    else:
        assert (ROOT / "examples" / path.name.replace(".yaml", ".analyze.yaml")).is_file()


@pytest.mark.parametrize("path", [p for p in EXAMPLES if str(read_spec_file(p).get("profile", "-")).endswith(".paper")],
                         ids=lambda p: p.name)  # fmt: skip
def test_example_command_runs_up_to_the_data(path, monkeypatch, tmp_path):
    """The opening command, as a dry run from another folder, gets past the spec and the profile
    and stops only at the data, which this machine does not have."""
    monkeypatch.chdir(tmp_path)  # not the checkout: the examples name no checkout-relative file
    from pdmp_cli.data.loaders.files import root_env_var

    monkeypatch.setenv("PDMP_DATA_ROOT", str(tmp_path))  # certainly no data there
    monkeypatch.delenv(root_env_var(read_spec_file(path)["dataset"]), raising=False)
    command = [str(ROOT / a) if a.startswith("examples/") else a for a in opening_command(path)]
    r = CliRunner().invoke(app, [*command, "--dry-run"])
    assert r.exit_code != 0
    assert r.output.startswith("error: data root ") and f"of dataset {read_spec_file(path)['dataset']} does not exist" in r.output
