"""pdmp datasets (the manifests and whether their data is there) and pdmp datasets check."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from data import miniature as M
from pdmp_cli.cli.app import app
from pdmp_cli.data import list_manifests
from pdmp_cli.data.check import list_datasets

runner = CliRunner()


def _rows(output: str) -> dict[str, str]:
    """name -> the rest of its first table line."""
    rows = {}
    for line in output.splitlines():
        m = re.match(r"│ (\S+)\s+│(.*)", line)
        if m and m.group(1) != "name":
            rows[m.group(1)] = m.group(2)
    return rows


def test_datasets_lists_every_manifest_and_its_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PDMP_DATA_ROOT", str(tmp_path))
    monkeypatch.delenv("PDMP_DATA_ROOT_AVE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    from pdmp_cli.cli import _app

    monkeypatch.setattr(_app.console, "width", 250)  # the console read COLUMNS when first imported
    M.make_cremad(tmp_path / "CREMA-D")
    (tmp_path / "AVE").mkdir()  # a root without its lists
    (tmp_path / "AVE" / "trainSet.txt").write_text("Bark&v1&good&0&2\n")
    res = runner.invoke(app, ["datasets"])
    assert res.exit_code == 0, res.output
    rows = _rows(res.output)
    assert sorted(rows) == list_manifests()
    assert "present" in rows["cremad"] and str(tmp_path / "CREMA-D") in rows["cremad"]
    assert "incomplete (missing testSet.txt, valSet.txt)" in rows["ave"]
    assert "missing" in rows["ucf101"] and "classInd.txt" in rows["ucf101"]
    assert "built-in" in rows["synthetic"]
    mods = {d.name: d.modalities for d in list_datasets()}
    assert (mods["synthetic"], mods["synthetic-3"]) == ("audio, visual", "audio, visual, depth")  # was: no depth
    assert "audio, visual, depth" in rows["synthetic-3"]
    status = {d.name: d.status for d in list_datasets()}
    built_in = {n: "built-in" for n in list_manifests() if n.startswith("synthetic")}
    assert status == {"ave": "incomplete", "cefa": "missing", "cremad": "present", "ks": "missing",
                      "ucf101": "missing", "vggsound": "missing", **built_in}


def test_per_dataset_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("PDMP_DATA_ROOT", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("PDMP_DATA_ROOT_CEFA", str(M.make_cefa(tmp_path / "elsewhere")))
    [cefa] = [d for d in list_datasets() if d.name == "cefa"]
    assert (cefa.status, cefa.root, cefa.source) == ("present", str(tmp_path / "elsewhere"), "$PDMP_DATA_ROOT_CEFA")


def test_check_ok_and_broken(tmp_path):
    root = M.make_cefa(tmp_path / "CeFA")
    res = runner.invoke(app, ["datasets", "check", "cefa", "--data-root", str(root)])
    assert res.exit_code == 0, res.output
    assert "ok cefa: 12 samples (train 4, val 5, test 3), no problems" in res.output
    train_video = root / "phase1" / "train" / "1_000_1_1_1"
    (train_video / "ir" / "0001.jpg").unlink()
    (root / "phase2" / "test" / "000001" / "depth" / "0001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with open(root / "phase1" / "4@1_train.txt", "a") as f:
        f.write("train/9_999_1_1_1/profile/0001.jpg 3\n")
    res = runner.invoke(app, ["datasets", "check", "cefa", "--data-root", str(root)], env={"COLUMNS": "250"})
    assert res.exit_code == 1
    out = res.output
    assert "problems cefa: 3 problems (1 unknown label, 1 missing file, 1 unreadable file) in 12 samples" in out
    assert re.search(r"unknown label\s+│\s+1", out) and re.search(r"missing file\s+│\s+1", out)
    assert ("missing file [train] " + str(train_video / "ir" / "0001.jpg")
            + " (sample phase1/train/1_000_1_1_1/profile/0001.jpg)") in out
    assert "unreadable file [test] " + str(root / "phase2" / "test" / "000001" / "depth" / "0001.jpg") in out
    assert "4@1_train.txt:5 (sample phase1/train/9_999_1_1_1/profile/0001.jpg): label '3' is not one of the 2 classes" in out
    assert "--skip-bad" in out


def test_check_unknown_dataset_and_missing_root(tmp_path):
    res = runner.invoke(app, ["datasets", "check", "mnist"])
    assert res.exit_code == 2 and res.output.startswith("error: unknown dataset 'mnist'; choose one of: ave, cefa")
    res = runner.invoke(app, ["datasets", "check", "ks", "--data-root", str(tmp_path / "none")])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "data root" in res.output and "PDMP_DATA_ROOT_KS" in res.output
