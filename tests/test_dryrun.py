"""--dry-run: checks, one batch, an estimate; writes nothing; refuses what the real run refuses."""

import hashlib
import re
import sys

import pytest
from typer.testing import CliRunner

from pdmp_cli.cli.app import app
from conftest import make_profile as _profile


def tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}  # fmt: skip


@pytest.fixture
def cwd(tmp_path, tiny_manifest, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _profile().save(tmp_path / "p.json")
    _profile(dataset="other").save(tmp_path / "other.json")
    (tmp_path / "taken" / "checkpoints").mkdir(parents=True)
    (tmp_path / "taken" / "spec.json").write_text("{}")
    (tmp_path / "outdir").mkdir()
    return tmp_path


TRAIN = ["train", "--profile", "p.json", "--dataset", "tiny.toml", "--encoder", "small", "--epochs", "2",
         "--batch-size", "16", "--device", "cpu"]  # fmt: skip


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_train_dry_run_prints_the_plan_and_writes_nothing(cwd):
    before = tree(cwd)
    r = invoke(*TRAIN, "--dry-run", "--lr-schedule", "step", "--lr-step-size", "1")
    assert r.exit_code == 0, r.output
    assert tree(cwd) == before
    out = r.output
    assert "dry run: nothing written" in out
    assert re.search(r"parameters per modality: audio [\d,.]+M?, visual [\d,.]+M?", out)
    # PDMP with visual performance-dominant, audio optimization-dominant: Eq. 10-12 with gamma_p 10
    assert "γ per modality audio 0.1, visual 10 (first step: audio 0.1, visual 10)" in out
    assert "lr schedule step: x0.1 every 1 epochs" in out
    assert re.search(r"estimated time per epoch: \d+(m\d+)?s \(\d+ steps \+ \d+ evaluation batches\); 2 epochs", out)


def test_analyze_dry_run_writes_nothing(cwd):
    before = tree(cwd)
    r = invoke("analyze", "--dataset", "tiny.toml", "--dry-run")
    assert r.exit_code == 0, r.output
    assert tree(cwd) == before
    assert re.search(r"profiles would go to profiles/tiny-[0-9a-f]{8}\.json", r.output)  # name + data identity
    assert re.search(r"subset 1 · audio: [\d,.]+M? parameters \(small\).*for 2 epochs", r.output)
    assert "estimated total:" in r.output


BAD = [
    (["--profile", "missing.json"], "profile missing.json does not exist"),
    (["--profile", "other.json"], "is for dataset 'other'"),
    (["--run-dir", "taken"], "already holds a run"),
    (["--precision", "fp16"], "fp16"),
    (["--devices", "3"], "3"),
    (["--gamma-p", "-1"], "gamma_p must be > 0"),
]


@pytest.mark.parametrize("extra, says", BAD, ids=[b[0][0] for b in BAD])
def test_dry_run_refuses_what_the_real_run_refuses(cwd, extra, says):
    before = tree(cwd)
    real = invoke(*TRAIN, *extra)
    dry = invoke(*TRAIN, *extra, "--dry-run")
    assert tree(cwd) == before
    assert real.exit_code == dry.exit_code == 2
    assert len(dry.output.strip().splitlines()) == 1 and dry.output.startswith("error: ")
    assert dry.output == real.output and says in dry.output


def test_dry_run_without_tensorboard_and_analyze_bad_out(cwd, monkeypatch):
    before = tree(cwd)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    r = invoke(*TRAIN, "--tensorboard", "--dry-run")
    assert r.exit_code == 2 and "pip install 'pdmp[tensorboard]'" in r.output
    r = invoke("analyze", "--dataset", "tiny.toml", "--out", "outdir", "--dry-run")
    assert r.exit_code == 2 and r.output.startswith("error: --out outdir is a directory")
    assert tree(cwd) == before
