"""pdmp report / sweep / demo from the command line: outputs that parse, one-line errors with
exit codes, plots written and listed, the sweep and demo flags reaching their library calls."""

from __future__ import annotations

import csv
import io
import json

import pytest
from conftest import FakeTrain, make_run
from conftest import profile_file as _profile
from typer.testing import CliRunner

import pdmp_cli.demo
import pdmp_cli.train
from pdmp_cli.cli.app import app

runner = CliRunner()


def _one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed, final in enumerate([0.80, 0.90]):
        make_run(root, f"pdmp-s{seed}", accs=[0.5, final], vals=[0.4, 0.7], seed=seed)
    make_run(root, "vanilla-s0", method="vanilla", accs=[0.5, 0.6], vals=[0.4, 0.5])
    make_run(root, "killed", accs=[0.4], vals=[0.3], seed=7, status="running", epochs_planned=2)
    return root


@pytest.fixture
def width(monkeypatch):
    """Set the width of the CLI's console (not a terminal under CliRunner: 80 columns)."""
    import pdmp_cli.cli._app as _app

    return lambda n: monkeypatch.setattr(_app.console, "width", n)


def test_report_table_in_the_terminal(runs, width):
    width(200)
    r = runner.invoke(app, ["report", str(runs)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    pdmp = next(line for line in lines if line.split()[:2] == ["pdmp", "10"] and "2" == line.split()[2])
    assert pdmp.split()[3:6] == ["85.0", "±", "7.1"]  # mean ± std
    assert "dataset synthetic · concat fusion · pdmp's γ: audio ×1/γp, visual ×γp" in r.output
    assert any(line.split()[:1] == ["vanilla"] and "60.0" in line for line in lines)
    assert any(line.rstrip().endswith("1/2 running") for line in lines)
    assert "note: " in r.output and "killed is marked running (1 of 2 epochs)" in r.output


def test_report_table_fits_a_narrow_terminal(runs, width):
    width(80)
    r = runner.invoke(app, ["report", str(runs)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    i = next(i for i, line in enumerate(lines) if line.split()[:3] == ["pdmp", "10", "2"])
    assert lines[i].split()[3] == "85.0" and lines[i + 1].split()[:2] == ["±", "7.1"]  # std on the next line
    assert "±63.5" in lines[i].split()  # the 95% CI's half-width: t(0.975, 1) x 7.07 / sqrt(2)
    k = next(k for k, line in enumerate(lines) if line.rstrip().endswith("1/2"))
    assert lines[k + 1].strip() == "running"  # the status under the epochs
    assert "wall s" not in r.output  # the narrowest layout leaves out w and wall time


def test_report_json_csv_markdown_parse(runs):
    r = runner.invoke(app, ["report", str(runs), "--format", "json", "--method", "pdmp"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    complete = next(x for x in data["rows"] if x["status"] == "complete")
    assert complete["metrics"]["accuracy"]["mean"] == pytest.approx(0.85) and complete["n"] == 2
    assert {x["method"] for x in data["rows"]} == {"pdmp"}

    r = runner.invoke(app, ["report", str(runs), "-f", "csv", "--method", "vanilla"])
    assert r.exit_code == 0, r.output
    (row,) = list(csv.DictReader(io.StringIO(r.stdout)))
    assert (row["method"], float(row["accuracy_mean"]), row["n"]) == ("vanilla", 0.6, "1")

    r = runner.invoke(app, ["report", str(runs), "--format", "markdown", "--fusion", "concat"])
    assert r.exit_code == 0, r.output
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3  # header, rule, pdmp, vanilla, the killed run
    assert len({line.count("|") for line in table}) == 1


def test_report_plot_writes_and_lists_pngs(runs, tmp_path, width):
    width(200)
    out = tmp_path / "plots"
    r = runner.invoke(app, ["report", str(runs), "--plot", str(out)])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in out.glob("*.png"))
    assert "compare-synthetic-concat.png" in written and len(written) == 5  # 4 runs + 1 comparison
    for name in written:
        assert f"wrote {out / name}" in r.output
    # machine-readable output keeps stdout clean: the paths go to stderr
    r = runner.invoke(app, ["report", str(runs), "--format", "json", "--method", "vanilla", "--plot", str(tmp_path / "p2")])
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"]
    assert "wrote " in r.stderr and "wrote " not in r.stdout


def test_report_errors_are_one_line(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    line = _one_error_line(runner.invoke(app, ["report", str(tmp_path / "empty")]), 1)
    assert "no runs found under" in line and "pdmp demo" in line
    line = _one_error_line(runner.invoke(app, ["report", str(tmp_path / "missing")]), 2)
    assert "does not exist" in line
    line = _one_error_line(runner.invoke(app, ["report", str(runs), "--method", "mla"]), 2)
    assert line.endswith("methods present: pdmp, vanilla")
    line = _one_error_line(runner.invoke(app, ["report", str(runs), "--format", "html"]), 2)
    assert "--format must be one of table, markdown, csv, json, got 'html'" in line


def test_report_default_runs_dir_and_profiles(tmp_path, monkeypatch, runs):
    monkeypatch.chdir(tmp_path)  # runs/ is the default
    r = runner.invoke(app, ["report", "--format", "json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["rows"]) == 3
    prof = _profile(tmp_path / "p.json")
    r = runner.invoke(app, ["report", "--profile", prof, "--format", "json"])  # profiles only: runs/ not read
    data = json.loads(r.stdout)
    assert data["rows"] == [] and data["profiles"][0]["performance_dominant"] == "visual"


@pytest.mark.parametrize("cols", [200, 60])  # the wide layout, and the narrow ones tried first
def test_report_runs_and_profile_in_the_terminal(tmp_path, runs, width, cols):
    width(cols)
    prof = _profile(tmp_path / "p.json")
    r = runner.invoke(app, ["report", str(runs), "--profile", prof])
    assert r.exit_code == 0, r.output  # was: ValueError (the runs table read the profiles' cells)
    assert "Dominance profiles" in r.output and "vanilla" in r.output


def test_sweep_cli_runs_the_grid_and_prints_the_table(tmp_path, tiny_manifest, monkeypatch, width):
    width(200)
    fake = FakeTrain()
    monkeypatch.setattr(pdmp_cli.train, "run", fake)
    prof = _profile(tmp_path / "p.json")
    args = ["sweep", "--profile", prof, "--dataset", str(tiny_manifest), "--gamma-p", "1,5", "--seeds", "0,1",
            "--method", "pdmp,vanilla", "--runs-dir", str(tmp_path / "runs"), "--epochs", "3"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(fake.calls) == 6 and all(s.epochs == 3 for s, _ in fake.calls)
    assert "sweep: 6 trained, 0 resumed, 0 skipped" in r.output
    assert "γp 1" in r.output and "γp 5" in r.output and "no γp" in r.output
    assert "55.0 ± 0.1 (2)" in r.output  # γp 5: 0.5 + 0.05 + seed/1000 over seeds 0, 1
    r = runner.invoke(app, [*args, "--format", "json"])
    assert r.exit_code == 0 and len(fake.calls) == 6  # all skipped
    assert len(json.loads(r.stdout)["rows"]) == 3 and "sweep: 0 trained, 0 resumed, 6 skipped" in r.stderr
    small = [*args[:5], "--gamma-p", "1,5", "--method", "pdmp", "--runs-dir", str(tmp_path / "runs"), "--epochs", "3"]
    r = runner.invoke(app, [*small, "--plot", str(tmp_path / "plots")])
    assert r.exit_code == 0 and len(fake.calls) == 6
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "plots").iterdir()) == ["compare", "run", "run", "sweep"]
    assert f"wrote {tmp_path / 'plots' / 'sweep-tiny.png'}" in r.output


def test_sweep_cli_prints_the_notes_of_skipped_plots(tmp_path, tiny_manifest, monkeypatch):
    from pdmp_cli import plots

    monkeypatch.setattr(pdmp_cli.train, "run", FakeTrain())

    def skipped_all(rep, out, notes=None):
        notes.append("sweep-tiny.png not drawn: no line has a test accuracy")
        return []

    monkeypatch.setattr(plots, "write_plots", skipped_all)
    args = ["sweep", "--profile", _profile(tmp_path / "p.json"), "--dataset", str(tiny_manifest), "--gamma-p", "1,5",
            "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", "--plot", str(tmp_path / "plots")]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "note: sweep-tiny.png not drawn: no line has a test accuracy" in r.stderr


def test_sweep_cli_errors(tmp_path, tiny_manifest):
    prof = _profile(tmp_path / "p.json")
    line = _one_error_line(runner.invoke(app, ["sweep", "--gamma-p", "1,5"]), 2)
    assert "--profile is required" in line
    line = _one_error_line(
        runner.invoke(app, ["sweep", "--profile", prof, "--dataset", str(tiny_manifest), "--gamma-p", "1,x"]), 2
    )
    assert "--gamma-p must be comma-separated numbers, got '1,x'" in line


def test_demo_cli_passes_its_flags(monkeypatch):
    calls = []
    monkeypatch.setattr(pdmp_cli.demo, "run", lambda out, **kw: calls.append((out, kw)))
    r = runner.invoke(app, ["demo", "--out", "somewhere", "--epochs", "2", "--seed", "3", "--gamma-p", "5"])
    assert r.exit_code == 0, r.output
    ((out, kw),) = calls
    assert (out, kw["epochs"], kw["seed"], kw["gamma_p"]) == ("somewhere", 2, 3, 5.0)
    r = runner.invoke(app, ["demo"])
    assert calls[1][0] == "demo-output" and (calls[1][1]["epochs"], calls[1][1]["seed"], calls[1][1]["gamma_p"]) == (None, 0, None)
    r = runner.invoke(app, ["demo", "--jobs", "2", "--threads", "1"])  # γp None above: the preset's
    assert r.exit_code == 0 and (calls[2][1]["jobs"], calls[2][1]["threads"]) == (2, 1)
    line = _one_error_line(runner.invoke(app, ["demo", "--epochs", "0"]), 2)
    assert "--epochs must be >= 1, got 0" in line
    line = _one_error_line(runner.invoke(app, ["demo", "--gamma-p", "-1"]), 2)
    assert "--gamma-p must be > 0, got -1" in line
