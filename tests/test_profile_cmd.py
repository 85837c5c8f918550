"""`pdmp profile show|new` and the reference profiles shipped in profiles/."""

import json
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pdmp_cli.analysis import build_profile
from pdmp_cli.cli.app import app
from pdmp_cli.data import load_dataset
from pdmp_cli.profile import Profile

runner = CliRunner()
PROFILES = Path(__file__).resolve().parents[1] / "profiles"

# what the paper states (Table I/III unimodal accuracy; Sec. III-A, IV-D; Fig. 3, 4): m_p, m_o
PAPER = {"cremad": ("visual", "audio"), "ave": ("audio", "audio"), "vggsound": ("audio", "audio"), "ks": ("visual", None)}


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_the_shipped_reference_profiles_are_exactly_the_papers_four():
    assert sorted(p.name for p in PROFILES.glob("*.paper.json")) == [f"{d}.paper.json" for d in sorted(PAPER)]


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_reference_profile_states_the_papers_ranking_and_says_it_was_not_measured(dataset):
    p = Profile.load(PROFILES / f"{dataset}.paper.json")
    assert p.dataset == dataset and p.modalities == ["audio", "visual"]
    assert (p.performance_dominant, p.optimization_dominant) == PAPER[dataset]
    assert p.late_ranking[0] == p.performance_dominant
    assert p.provenance.source == "reference" and p.optimization_criterion == "reference"
    assert p.provenance.reference.startswith("arXiv 2604.05773, ") and "Table" in p.provenance.reference
    assert p.results == {} and p.early_ranking == [] and p.dataset_identity is None
    assert any("nothing in it was measured" in n for n in p.notes)
    if p.optimization_dominant is None:
        assert any("does not state" in n for n in p.notes)


def test_analyze_output_never_lands_on_a_reference_profile():
    from pdmp_cli.analysis import profile_path

    for d in PAPER:
        written = {profile_path(None, d, 1.0, False), profile_path(None, d, 0.4, True)}
        assert written == {Path("profiles") / f"{d}.json", Path("profiles") / f"{d}.subset-0.4.json"}


def test_show_prints_a_reference_profile():
    result = runner.invoke(app, ["profile", "show", str(PROFILES / "ks.paper.json")], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "performance-dominant   visual" in out
    assert "optimization-dominant  unknown  (reference)" in out
    assert "reference (arXiv 2604.05773, Table I and Table III" in out
    assert "│ late_ranking │ visual > audio │ -         │" in out
    assert "the paper does not state" in out


def test_show_prints_a_measured_profile_with_its_curves(tmp_path):
    p, _ = build_profile(
        dataset="synthetic", identity="abc123", modalities=["audio", "visual"],
        curves={"audio": [0.59, 0.53], "visual": [0.17, 0.775]}, eval_size=480, early_epochs=1, subset=0.4,
        seed=3, settings={"encoder": "small", "epochs": 2, "train_samples": 480},
    )  # fmt: skip
    p.save(tmp_path / "m.json")
    result = runner.invoke(app, ["profile", "show", "m.json"], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "identity abc123" in out and "subset / seed          0.4 / 3" in out
    assert "│ audio    │ 0.590 │ 0.530 │    480 │ -            │ 0.59 0.53           │" in out  # 2 epochs: no trend
    assert "│ visual   │ 0.170 │ 0.775 │    480 │ -            │ 0.17 0.78           │" in out
    assert "early_ranking │ audio > visual │ no" in out
    assert "encoder=small, epochs=2, train_samples=480" in out


def test_show_says_when_the_two_m_o_criteria_disagree(tmp_path):
    args = dict(
        dataset="synthetic", identity="abc123", modalities=["audio", "visual"],
        curves={"audio": [0.59, 0.53], "visual": [0.17, 0.775]}, eval_size=480, early_epochs=1, subset=0.4,
        seed=3, settings={"encoder": "small", "epochs": 2},
    )  # fmt: skip
    for probe_acc, disagree in (({"audio": 0.3, "visual": 0.5}, True), ({"audio": 0.5, "visual": 0.3}, False)):
        p, _ = build_profile(**args, probe={"fusion": "concat", "epochs": 1, "branch_accuracy": probe_acc})
        p.save(tmp_path / "m.json")
        out = runner.invoke(app, ["profile", "show", "m.json"], terminal_width=250).output
        said = ("the m_o criteria disagree: the multimodal probe ranks visual first, early unimodal accuracy audio; "
                "`pdmp tune` tries both")  # fmt: skip
        assert (said in " ".join(out.split())) is disagree, out
        assert "probe_ranking" in out and "early_ranking" in out  # both criteria shown


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "error: profile nope.json does not exist; run `pdmp analyze` or `pdmp profile new`"),
        ("{oops", "error: profile nope.json is not valid JSON"),
        ('{"schema_version": 3}', "error: profile nope.json has schema_version 3, this pdmp reads 1 and 2"),
        ('{"some": "other tool"}', "error: profile nope.json has schema_version None"),
        ('{"schema_version": 1, "dataset": "x"}', "error: profile nope.json is invalid: modalities is required"),
    ],
)
def test_show_refuses_missing_corrupt_and_foreign_files_in_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "nope.json").write_text(content)
    result = runner.invoke(app, ["profile", "show", "nope.json"])
    assert result.exit_code == 2
    assert result.output.startswith(message), result.output
    assert result.output.count("\n") == 1


def test_new_reads_the_modalities_from_the_manifest(tiny_manifest, tmp_path, monkeypatch):
    args = ["profile", "new", "--dataset", str(tiny_manifest), "--performance-dominant", "visual",
            "--optimization-dominant", "audio", "--note", "from a pilot study"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["pdmp", *args])  # what the console script sees (recorded as the command)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output == "wrote profiles/tiny.json\n"
    p = Profile.load(tmp_path / "profiles" / "tiny.json")
    assert (p.dataset, p.modalities) == ("tiny", ["audio", "visual"])
    assert p.dataset_identity == load_dataset(tiny_manifest).identity
    assert (p.performance_dominant, p.optimization_dominant) == ("visual", "audio")
    assert p.optimization_criterion == "manual" and p.provenance.source == "manual"
    assert p.notes[0] == "from a pilot study" and p.results == {}
    assert p.provenance.command == shlex.join(["pdmp", *args])

    again = runner.invoke(app, args)  # no silent overwrite
    assert again.exit_code == 2
    assert again.output.startswith("error: profiles/tiny.json already exists; pass --force")
    forced = runner.invoke(app, [*args[:-2], "--force"])
    assert forced.exit_code == 0 and Profile.load(tmp_path / "profiles" / "tiny.json").notes[0] != "from a pilot study"


def test_new_without_a_manifest_takes_modalities_and_leaves_m_o_unknown(tmp_path):
    result = runner.invoke(
        app, ["profile", "new", "--dataset", "mylab", "--modalities", "rgb,depth,ir", "--performance-dominant", "depth",
              "--out", "p/my.json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    raw = json.loads((tmp_path / "p" / "my.json").read_text())
    assert raw["modalities"] == ["rgb", "depth", "ir"] and raw["optimization_dominant"] is None
    assert raw["performance_dominant"] == "depth" and raw["schema_version"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--performance-dominant", "depth"],
         "error: --performance-dominant 'depth' is not a modality of dataset tiny (audio, visual); choose one of them"),
        (["--performance-dominant", "visual", "--optimization-dominant", "text"],
         "error: --optimization-dominant 'text' is not a modality of dataset tiny (audio, visual)"),
    ],
)  # fmt: skip
def test_new_refuses_a_modality_the_dataset_lacks(tiny_manifest, tmp_path, extra, message):
    result = runner.invoke(app, ["profile", "new", "--dataset", str(tiny_manifest), *extra])
    assert result.exit_code == 2
    assert result.output.startswith(message), result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "profiles").exists()


def test_new_for_an_unknown_dataset_suggests_modalities(tmp_path):
    result = runner.invoke(app, ["profile", "new", "--dataset", "nope", "--performance-dominant", "audio"])
    assert result.exit_code == 2
    assert result.output.startswith("error: unknown dataset 'nope'")
    assert "or pass --modalities" in result.output and result.output.count("\n") == 1
