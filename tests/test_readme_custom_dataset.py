"""The "Your own dataset" example of docs/datasets.md (moved there from the README), as written: its
manifest and its commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch
from typer.testing import CliRunner

from data import miniature as M
from pdmp_cli.cli.app import app
from pdmp_cli.data import load_dataset

README = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"



def _section() -> str:
    text = README.read_text()
    start = text.index("## Your own dataset")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), re.S)


def test_manifest_is_short_and_complete():
    [toml] = _blocks("toml")
    lines = [ln for ln in toml.splitlines() if ln.strip()]
    assert len(lines) <= 18


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    M.make_custom(tmp_path / "my-data")
    [toml] = _blocks("toml")
    (tmp_path / "my-data" / "manifest.toml").write_text(toml)

    bundle = load_dataset("my-data/manifest.toml")
    # named by its folder (not "manifest", which every custom dataset laid out this way would share)
    assert (bundle.name, bundle.class_names, bundle.modalities) == ("my-data", ["cat", "dog"], ["audio", "visual"])
    x, y = bundle.train[1]
    assert tuple(x["audio"].shape) == (1, 257, 188) and tuple(x["visual"].shape) == (3, 112, 112) and y == 1

    # the commands, as written (plus one epoch, to keep the test fast)
    [bash] = _blocks("bash")
    commands = [shlex.split(c)[1:] for c in bash.strip().splitlines()]
    assert [c[:2] for c in commands] == [["datasets", "check"], ["analyze", "--dataset"], ["train", "--profile"]]
    runner = CliRunner()
    res = runner.invoke(app, commands[0])
    assert res.exit_code == 0 and "ok my-data: 8 samples (train 4, val 2, test 2), no problems" in res.output
    res = runner.invoke(app, commands[1] + ["--epochs", "1", "--early-epochs", "1", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    profile = tmp_path / "my-data" / "profile.json"
    assert profile.is_file() and '"my-data"' in profile.read_text()
    res = runner.invoke(app, commands[2] + ["--epochs", "1", "--batch-size", "4", "--run-dir", "run", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run").is_dir()


def test_frame_folders_variant(tmp_path):
    """The comment's alternative: kind = "frames" with path = "visual/{id}"."""
    M.make_custom(tmp_path / "my-data", visual="frames")
    [toml] = _blocks("toml")
    toml = toml.replace('kind = "image"', 'kind = "frames"').replace('path = "visual/{id}.png"', 'path = "visual/{id}"')
    (tmp_path / "my-data" / "manifest.toml").write_text(toml)
    bundle = load_dataset(tmp_path / "my-data" / "manifest.toml")
    x, _ = bundle.test[0]
    assert tuple(x["visual"].shape) == (3, 112, 112)
    assert torch.isfinite(x["visual"]).all()
