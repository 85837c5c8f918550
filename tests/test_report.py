"""pdmp report as a library: run directories with known numbers -> exact aggregates, every
output format parses, partial and broken runs are shown as such, and user mistakes are clear."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from conftest import make_run, measured_profile

from pdmp_cli import report, rundir
from pdmp_cli.errors import PdmpError
from pdmp_cli.fsutil import write_json

MODS = ("audio", "visual")


@pytest.fixture
def runs(tmp_path) -> Path:
    """pdmp γp 10 on seeds 0,1,2 (final 0.80, 0.85, 0.90); vanilla on seeds 0,1 (0.60, 0.70);
    ogm-ge on one seed (0.75); all 3 epochs, concat, synthetic."""
    root = tmp_path / "runs"
    for seed, final in enumerate([0.80, 0.85, 0.90]):
        make_run(root, f"pdmp-s{seed}", accs=[0.3, 0.95 - seed * 0.1, final], seed=seed,
                 branch={"audio": 0.40 + seed / 100, "visual": 0.70 + seed / 100}, w=0.4 + seed / 10)  # fmt: skip
    for seed, final in enumerate([0.60, 0.70]):
        make_run(root, f"vanilla-s{seed}", method="vanilla", accs=[0.2, 0.5, final], seed=seed,
                 branch={"audio": 0.55, "visual": 0.30}, w=2.0 + seed)  # fmt: skip
    make_run(root, "nested/ogm-s0", method="ogm-ge", accs=[0.2, 0.4, 0.75], branch={"audio": 0.5, "visual": 0.5}, w=1.5)
    return root


def _row(rep, method, status="complete", dataset="synthetic"):
    (row,) = [w for w in rep.rows if w.method == method and w.status == status and w.dataset == dataset]
    return row


def test_aggregates_mean_std_n_exactly(runs):
    rep = report.build([runs])
    assert [w.method for w in rep.rows] == ["vanilla", "ogm-ge", "pdmp"]  # baselines first (paper order)
    pdmp, van, ogm = _row(rep, "pdmp"), _row(rep, "vanilla"), _row(rep, "ogm-ge")
    assert (pdmp.n, pdmp.seeds, van.n, van.seeds, ogm.n) == (3, [0, 1, 2], 2, [0, 1], 1)
    acc = pdmp.stats["accuracy"]
    assert acc.mean == pytest.approx(0.85) and acc.std == pytest.approx(0.05) and acc.n == 3
    # best epoch per seed: 0.95, 0.85, 0.90 (seed 2's best is its final epoch)
    assert pdmp.stats["best_accuracy"].mean == pytest.approx((0.95 + 0.85 + 0.90) / 3)
    assert pdmp.stats["best_accuracy"].std == pytest.approx(0.05)
    assert pdmp.stats["macro_f1"].mean == pytest.approx(0.84)
    assert pdmp.stats["branch/visual"].mean == pytest.approx(0.71)
    assert pdmp.stats["w"].mean == pytest.approx(0.5) and pdmp.stats["w"].std == pytest.approx(0.1)
    assert pdmp.stats["wall_seconds"].mean == pytest.approx(31.0)
    assert van.stats["accuracy"].mean == pytest.approx(0.65)
    assert van.stats["accuracy"].std == pytest.approx(math.sqrt(0.005))
    assert ogm.stats["accuracy"].mean == pytest.approx(0.75) and ogm.stats["accuracy"].std is None
    # gamma_p only where the method uses it; gamma per modality from the summary
    assert (pdmp.gamma_p, van.gamma_p, ogm.gamma_p) == (10.0, None, None)
    assert pdmp.gamma == {"audio": 0.1, "visual": 10.0} and van.gamma == {}


def test_best_per_column_within_a_dataset(runs):
    make_run(runs, "other-dataset", dataset="ave", accs=[0.99], branch={"audio": 0.99, "visual": 0.99})
    rep = report.build([runs])
    pdmp, van, ogm = _row(rep, "pdmp"), _row(rep, "vanilla"), _row(rep, "ogm-ge")
    assert pdmp.best == {"accuracy", "best_accuracy", "macro_f1", "branch/visual"}
    # the headline's mark needs a significant paired test: vanilla shares 2 seeds (p = 0.24), ogm-ge 1
    assert "selected_accuracy" not in pdmp.best
    assert van.best == {"branch/audio"}  # 0.55 beats pdmp's 0.41 and ogm's 0.50
    assert ogm.best == set()
    # a dataset with one row highlights nothing; ave's 0.99 does not beat synthetic's rows
    (ave,) = [w for w in rep.rows if w.dataset == "ave"]
    assert ave.best == set()


def test_table_cells_show_mean_std_and_single_seed_without_std(runs):
    rep = report.build([runs])
    header, body, _ = report.table_cells(rep.rows)
    cells = {row[1][0]: dict(zip(header, (c for c, _ in row))) for row in body}
    assert cells["pdmp"]["final acc %"] == "85.0 ± 5.0"
    assert cells["vanilla"]["final acc %"] == "65.0 ± 7.1"
    assert cells["ogm-ge"]["final acc %"] == "75.0"  # one seed: no ± part
    # runs written before the validation split chose their epoch on test: the headline says so
    assert cells["pdmp"]["chosen on"] == "TEST" and cells["pdmp"]["acc % (best val epoch)"] == "90.0 ± 5.0"
    assert cells["pdmp"]["95% CI"] == "[77.6, 102.4]" and cells["ogm-ge"]["95% CI"] == "-"  # t(0.975, 2) = 4.303
    assert cells["pdmp"]["w"] == "0.50 ± 0.10"
    assert cells["pdmp"]["γp"] == "10" and cells["vanilla"]["γp"] == "-"
    assert cells["pdmp"]["γ"] == "audio 0.1, visual 10"
    assert cells["pdmp"]["n"] == "3" and cells["pdmp"]["epochs"] == "3" and cells["pdmp"]["status"] == "complete"


def test_filters_and_comma_lists(runs):
    rep = report.build([runs], method="pdmp,vanilla")
    assert sorted(w.method for w in rep.rows) == ["pdmp", "vanilla"]
    rep = report.build([runs], fusion="concat", dataset="synthetic", method=["ogm-ge"])
    assert [w.method for w in rep.rows] == ["ogm-ge"]


def test_unknown_filter_value_lists_the_values_present(runs):
    with pytest.raises(PdmpError) as e:
        report.build([runs], method="pdmp,mla")
    assert e.value.exit_code == 2
    assert str(e.value).startswith("no run has --method mla under ")
    assert str(e.value).endswith("methods present: ogm-ge, pdmp, vanilla")
    with pytest.raises(PdmpError, match="fusions present: concat$"):
        report.build([runs], fusion="film")
    with pytest.raises(PdmpError, match="datasets present: synthetic$"):
        report.build([runs], dataset="cremad")


def test_empty_and_missing_runs_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PdmpError, match=r"no runs found under .*empty; train one with `pdmp train") as e:
        report.build([tmp_path / "empty"])
    assert e.value.exit_code == 1
    with pytest.raises(PdmpError, match="does not exist") as e:
        report.build([tmp_path / "nope"])
    assert e.value.exit_code == 2


def test_partial_runs_get_their_own_rows_and_notes(runs):
    make_run(runs, "pdmp-s3-interrupted", accs=[0.3, 0.4, 0.5], seed=3, status="interrupted", epochs_planned=10)
    make_run(runs, "pdmp-s4-killed", accs=[0.3], seed=4, status="running", epochs_planned=3)
    rep = report.build([runs], method="pdmp")
    assert _row(rep, "pdmp").n == 3  # the partial runs are not averaged in
    inter, killed = _row(rep, "pdmp", "interrupted"), _row(rep, "pdmp", "running")
    assert (inter.n, inter.epochs_done, inter.epochs_planned) == (1, 3, 10)
    assert inter.stats["accuracy"].mean == pytest.approx(0.5)
    assert report.fmt_status(inter) == "interrupted (3/10 epochs)"
    assert report.fmt_status(killed) == "running (1/3 epochs)"
    assert inter.best == set() and killed.best == set()
    notes = "\n".join(rep.notes)
    assert "pdmp-s3-interrupted was interrupted after 3 of 10 epochs; continue it with `pdmp train --resume" in notes
    assert "pdmp-s4-killed is marked running (1 of 3 epochs)" in notes


def test_cut_off_metrics_line_is_skipped_with_a_note(runs):
    d = make_run(runs, "pdmp-s5-cut", accs=[0.3, 0.6], seed=5, status="running", epochs_planned=5, summary=True)
    with open(d / rundir.METRICS, "a") as f:
        f.write('{"epoch": 3, "train_loss": 0.2, "eval_accur')  # a kill in the middle of a write
    rep = report.build([runs], method="pdmp")
    row = _row(rep, "pdmp", "running")
    assert [m.epoch for m in row.runs[0].metrics] == [1, 2]
    assert any(n.startswith(f"{d}: 1 line of metrics.jsonl could not be read") for n in rep.notes)
    assert report.render(rep, "json")  # renders


def test_missing_or_broken_summary_falls_back_to_spec_and_metrics(runs):
    d = make_run(runs, "pdmp-s6-nosummary", accs=[0.2, 0.7, 0.65], seed=6, summary=False, epochs_planned=8)
    e = make_run(runs, "pdmp-s7-badsummary", accs=[0.1, 0.3], seed=7)
    (e / rundir.SUMMARY).write_text('{"dataset": "synthetic", "meth')
    rep = report.build([runs], method="pdmp")
    rows = {w.runs[0].path.name: w for w in rep.rows if w.status == "unknown"}
    assert set(rows) == {"pdmp-s6-nosummary", "pdmp-s7-badsummary"}
    r = rows["pdmp-s6-nosummary"]
    assert r.stats["accuracy"].mean == pytest.approx(0.65) and r.stats["best_accuracy"].mean == pytest.approx(0.7)
    assert (r.epochs_done, r.epochs_planned) == (3, 8)
    assert report.fmt_status(r) == "no summary (3/8 epochs)"
    assert any(f"{d}: no readable summary.json" in n for n in rep.notes)
    assert any(f"{e / rundir.SUMMARY}: unreadable" in n for n in rep.notes)


def test_a_missing_summary_is_rebuilt_with_the_function_train_writes_it_with(tmp_path):
    # validation chooses epoch 2 (test 0.6), the best test epoch is 3 (0.7), the last is 4 (0.65)
    d = make_run(tmp_path, "r", accs=[0.2, 0.6, 0.7, 0.65], vals=[0.3, 0.8, 0.5, 0.8], seed=4, summary=False,
                 epochs_planned=8, w=0.25, branch={"audio": 0.4, "visual": 0.9})  # fmt: skip
    rec = report.read_run(d)
    s = rec.summary
    assert (s.status, rec.status, s.epochs_done, s.epochs_planned) == ("unknown", "unknown", 4, 8)
    assert (s.dataset, s.method, s.fusion, s.encoder, s.gamma_p, s.seed) == ("synthetic", "pdmp", "concat", "small", 10.0, 4)
    assert (s.selection, s.selected_epoch, s.val_accuracy) == ("validation", 2, 0.8)
    assert s.selected_accuracy == pytest.approx(0.6) and s.selected_macro_f1 == pytest.approx(0.59)
    assert (s.best_epoch, s.best_accuracy) == (3, 0.7) and s.best_macro_f1 == pytest.approx(0.69)
    assert s.final_accuracy == 0.65 and s.final_macro_f1 == pytest.approx(0.64) and s.final_w == 0.25
    assert s.final_branch_accuracy == {"audio": 0.4, "visual": 0.9} and s.gamma == {"audio": 1.0, "visual": 1.0}
    assert s.wall_seconds == 8.0 and rec.values["wall_seconds"] == 8.0  # 4 epochs of 2 s
    # what pdmp train's summarize() writes after those epochs, but for its status and its clock
    metrics, _ = rundir.read_metrics(d)
    written = rundir.summarize(
        metrics, dataset="synthetic", method="pdmp", fusion="concat", encoder="small", gamma_p=10.0,
        gamma=dict(metrics[-1].gamma), seed=4, profile_sha256=s.profile_sha256, status="running", epochs_planned=8,
        wall_seconds=123.0,
    )  # fmt: skip
    assert s.model_dump(exclude={"status", "wall_seconds"}) == written.model_dump(exclude={"status", "wall_seconds"})


def test_a_rebuilt_summary_equals_the_one_train_wrote(tmp_path):
    """A run directory pdmp train wrote (docs/results/demo), its summary.json removed: the summary
    read_run rebuilds is the written one, but for what only the training process knew."""
    demo = Path(__file__).resolve().parents[1] / "docs" / "results" / "demo" / "run-dirs"
    src = next(p for p in sorted(demo.iterdir()) if "-pdmp-" in p.name)
    d = tmp_path / src.name
    d.mkdir()
    for n in (rundir.SPEC, rundir.METRICS, rundir.PROFILE):
        (d / n).write_bytes((src / n).read_bytes())
    written = json.loads((src / rundir.SUMMARY).read_text())
    rebuilt = report.read_run(d).summary.model_dump(mode="json")
    only_train_knew = {"status", "wall_seconds", "val_split", "command", "pdmp_version", "message"}
    assert (written["status"], rebuilt["status"], rebuilt["selection"]) == ("complete", "unknown", "validation")
    assert {k: v for k, v in rebuilt.items() if k not in only_train_knew} == {
        k: v for k, v in written.items() if k not in only_train_knew
    }


def test_a_summary_less_run_trained_without_the_test_split_is_shown(tmp_path):
    d = make_run(tmp_path, "r", method="vanilla", accs=[0.5, 0.6, 0.7], vals=[0.4, 0.8, 0.6], summary=False)
    lines = [json.loads(x) for x in (d / rundir.METRICS).read_text().splitlines()]
    (d / rundir.METRICS).write_text("".join(json.dumps({**m, "test_accuracy": None, "test_macro_f1": None}) + "\n" for m in lines))
    (w,) = report.build([tmp_path]).rows
    s = w.runs[0].summary
    assert (w.status, s.selected_epoch, s.val_accuracy, s.best_epoch, s.final_accuracy) == ("unknown", 2, 0.8, None, None)
    assert report.fmt_status(w) == "no summary (3/3 epochs)"


def test_the_terminal_caption_says_when_branches_and_w_were_measured_on_validation(tmp_path):
    from rich.console import Console

    from pdmp_cli.report.render import rich_tables

    def caption(root) -> str:
        console = Console(width=400, record=True)
        console.print(rich_tables(report.build([root])))
        return " ".join(console.export_text().split())

    make_run(tmp_path / "tested", "r", method="vanilla", accs=[0.5, 0.6], vals=[0.4, 0.8])
    assert "measured on validation" not in caption(tmp_path / "tested")
    d = make_run(tmp_path / "tuned", "r", method="vanilla", accs=[0.5, 0.6], vals=[0.4, 0.8])
    lines = [json.loads(x) for x in (d / rundir.METRICS).read_text().splitlines()]  # as pdmp tune writes them
    (d / rundir.METRICS).write_text("".join(json.dumps({**m, "test_accuracy": None, "test_macro_f1": None}) + "\n" for m in lines))
    (d / rundir.SUMMARY).unlink()
    assert ("Rows without a test accuracy (trained without the test split, as pdmp tune's runs are): branches and w "
            "measured on validation") in caption(tmp_path / "tuned")


def test_a_directory_with_nothing_readable_is_noted_not_fatal(runs):
    junk = runs / "junk"
    junk.mkdir()
    (junk / rundir.METRICS).write_text("not json\n")
    rep = report.build([runs])
    assert any(f"{junk}: neither a readable summary.json nor spec.json" in n for n in rep.notes)
    assert len(rep.records) == 6


def test_settings_that_differ_split_rows_and_are_named(runs):
    make_run(runs, "pdmp-lr", accs=[0.5, 0.55], spec_extra={"lr": 0.001}, epochs_planned=3)
    rep = report.build([runs], method="pdmp")
    rows = [w for w in rep.rows if w.status == "complete"]
    assert sorted(w.variant["lr"] for w in rows) == [0.001, 0.01]
    header, body, _ = report.table_cells(rows)
    assert "settings" in header
    assert sorted(row[header.index("settings")][0] for row in body) == ["lr=0.001", "lr=0.01"]


def test_a_field_added_since_a_run_was_written_takes_its_default(tmp_path):
    old = make_run(tmp_path, "old", accs=[0.5])
    spec = json.loads((old / rundir.SPEC).read_text())
    del spec["skip_bad"]  # as if written before the field existed (its default: False)
    write_json(old / rundir.SPEC, spec)
    make_run(tmp_path, "new", accs=[0.7], seed=1)
    (row,) = report.build([tmp_path]).rows
    assert row.n == 2 and row.variant == {}


def test_vanilla_runs_with_different_gamma_p_are_one_configuration(tmp_path):
    for seed, g in enumerate([1.0, 5.0]):
        make_run(tmp_path, f"v{seed}", method="vanilla", accs=[0.5], seed=seed, gamma_p=g)
    (row,) = report.build([tmp_path]).rows
    assert (row.n, row.gamma_p) == (2, None)


def test_every_format_parses(runs):
    make_run(runs, "pdmp-s3-interrupted", accs=[0.5], seed=3, status="interrupted", epochs_planned=10)
    rep = report.build([runs])

    data = json.loads(report.render(rep, "json"))
    by = {(r["method"], r["status"]): r for r in data["rows"]}
    pd = by[("pdmp", "complete")]
    assert pd["metrics"]["accuracy"] == {
        "mean": pytest.approx(0.85), "std": pytest.approx(0.05), "n": 3, "ci": [pytest.approx(0.72579, abs=1e-5), pytest.approx(0.97421, abs=1e-5)],
    }  # fmt: skip
    assert pd["selection"] == "test" and pd["compare"] is None
    assert pd["seeds"] == [0, 1, 2] and pd["gamma_p"] == 10.0 and "accuracy" in pd["best"]
    assert by[("pdmp", "interrupted")]["n"] == 1 and data["notes"]

    rows = list(csv.DictReader(io.StringIO(report.render(rep, "csv"))))
    assert len(rows) == 4
    c = {(r["method"], r["status"]): r for r in rows}
    assert float(c[("pdmp", "complete")]["accuracy_mean"]) == pytest.approx(0.85)
    assert float(c[("vanilla", "complete")]["accuracy_std"]) == pytest.approx(math.sqrt(0.005))
    assert c[("ogm-ge", "complete")]["accuracy_std"] == ""  # n = 1
    assert c[("pdmp", "complete")]["seeds"] == "0;1;2"
    assert float(c[("pdmp", "complete")]["branch_visual_mean"]) == pytest.approx(0.71)

    md = report.render(rep, "markdown").strip().splitlines()
    assert md[1] == "|" + "|".join(["---"] * (md[0].count("|") - 1)) + "|"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md]
    assert all(len(r) == len(cells[0]) for r in cells)
    head = cells[0]
    pdmp_line = next(r for r in cells if r[1] == "pdmp" and r[-1] == "complete")
    assert pdmp_line[head.index("final acc %")] == "**85.0 ± 5.0**"
    inter = next(r for r in cells if r[-1] == "interrupted (1/10 epochs)")
    assert inter[head.index("final acc %")] == "50.0"

    with pytest.raises(PdmpError, match="--format must be one of table, markdown, csv, json"):
        report.render(rep, "html")


def test_profiles_are_reported_from_files_and_folders(tmp_path):
    folder = tmp_path / "profiles"
    measured_profile(folder / "synthetic.json")
    measured_profile(folder / "other.json", dataset="ave", late=(0.62, 0.31), early=(0.5, 0.2), uncertain=True)
    write_json(folder / "synthetic.spec.json", {"dataset": "synthetic"})  # beside every profile: skipped
    write_json(folder / "unrelated.json", {"hello": 1})  # not a profile: passed over
    (folder / "broken.json").write_text('{"performance_dominant": "visual", "schema_version": 1}')
    rep = report.build(profiles=[folder])
    assert rep.rows == [] and [p.path.name for p in rep.profiles] == ["other.json", "synthetic.json"]
    assert any("broken.json is invalid" in n for n in rep.notes)
    d = {p.path.name: p.as_dict() for p in rep.profiles}["synthetic.json"]
    assert d["late_accuracy"] == {"audio": 0.54, "visual": 0.85} and d["early_accuracy"]["audio"] == 0.59
    assert (d["performance_dominant"], d["optimization_dominant"]) == ("visual", "audio")
    assert d["late_ranking"] == ["visual", "audio"]
    header, body, _ = report.profile_cells(rep.profiles)
    syn = dict(zip(header, body[1]))
    assert (syn["visual late %"], syn["audio early %"], syn["uncertain"]) == ("85.0", "59.0", "no")
    assert dict(zip(header, body[0]))["uncertain"] == "late"
    rows = list(csv.DictReader(io.StringIO(report.render(rep, "csv"))))
    assert [r["m_p"] for r in rows] == ["audio", "visual"]
    assert json.loads(report.render(rep, "json"))["profiles"][1]["late_accuracy"]["visual"] == 0.85
    # --dataset filters profiles too; a named file must be a profile
    assert [p.path.name for p in report.build(profiles=[folder], dataset="ave").profiles] == ["other.json"]
    with pytest.raises(PdmpError, match="broken.json is invalid"):
        report.build(profiles=[folder / "broken.json"])
    with pytest.raises(PdmpError, match="does not exist"):
        report.build(profiles=[folder / "missing.json"])


def test_csv_refuses_runs_and_profiles_together(runs, tmp_path):
    measured_profile(tmp_path / "p.json")
    rep = report.build([runs], profiles=[tmp_path / "p.json"])
    with pytest.raises(PdmpError, match="--format csv holds one table"):
        report.render(rep, "csv")


def test_sweep_grid_puts_gamma_p_in_columns(tmp_path):
    for g, finals in ((1.0, [0.6, 0.62]), (5.0, [0.8, 0.84]), (10.0, [0.7, 0.7])):
        for seed, a in enumerate(finals):
            make_run(tmp_path, f"p-g{g:g}-s{seed}", accs=[a], gamma_p=g, seed=seed)
    make_run(tmp_path, "v", method="vanilla", accs=[0.58])
    rep = report.build([tmp_path])
    gps, lines = report.sweep_grid(rep.rows)
    assert gps == [1.0, 5.0, 10.0]
    by = {w0.method: cells for w0, cells in lines}
    assert set(by["pdmp"]) == {1.0, 5.0, 10.0} and set(by["vanilla"]) == {None}
    assert by["pdmp"][5.0].stats["accuracy"].mean == pytest.approx(0.82)
    from rich.console import Console

    con = Console(width=200, record=True)
    con.print(report.sweep_table(rep.rows))
    text = con.export_text()
    assert "γp 1" in text and "γp 10" in text and "no γp" in text
    assert "82.0 ± 2.8 (2)" in text and "58.0 (1)" in text


def test_the_sweep_table_shows_the_reports_headline_not_the_last_epoch(tmp_path):
    from rich.console import Console

    root = tmp_path / "runs"
    make_run(root, "g1", accs=[0.50, 0.80], vals=[0.70, 0.40], gamma_p=1.0)  # best validation epoch: 1
    make_run(root, "g5", accs=[0.60, 0.90], vals=[0.30, 0.60], gamma_p=5.0)  # best validation epoch: 2
    rep = report.build([root])
    console = Console(width=200, record=True)
    console.print(report.sweep_table(rep.rows))
    text = console.export_text()
    assert "50.0 (1)" in text and "90.0 (1)" in text and "80.0" not in text
    assert "acc % (best val epoch) against γp" in text


def test_a_rerun_of_a_seed_counts_once_and_the_note_names_it(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a-s0", accs=[0.5, 0.80], vals=[0.4, 0.7], seed=0)
    make_run(root, "b-s0-again", accs=[0.5, 0.20], vals=[0.4, 0.7], seed=0)  # the same seed, rerun
    make_run(root, "c-s1", accs=[0.5, 0.90], vals=[0.4, 0.7], seed=1)
    rep = report.build([root])
    [row] = rep.rows
    assert (row.n, row.seeds) == (2, [0, 1])  # was n = 3 with seed 0 twice
    assert row.stats["selected_accuracy"].mean == pytest.approx(0.85)  # a-s0 (first by name) and c-s1
    [note] = [n for n in rep.notes if "rerun" in n]
    assert note.endswith(str(root / "b-s0-again")) and "the first run directory by name is used" in note


def test_logging_only_and_inert_settings_do_not_split_rows(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "plain", accs=[0.5, 0.80], vals=[0.4, 0.7], seed=0)
    make_run(root, "tb", accs=[0.5, 0.90], vals=[0.4, 0.7], seed=1, spec_extra={"tensorboard": True})
    make_run(root, "inert", accs=[0.5, 0.70], vals=[0.4, 0.7], seed=2,
             spec_extra={"lr_schedule": "none", "lr_step_size": 30, "lr_min": 0.001, "threads": 2})
    make_run(root, "step", accs=[0.5, 0.60], vals=[0.4, 0.7], seed=3, spec_extra={"lr_schedule": "step", "lr_step_size": 30})
    rep = report.build([root])
    assert sorted(w.n for w in rep.rows) == [1, 3]  # the step schedule does change the run: its own row
    step = next(w for w in rep.rows if w.n == 1)
    assert step.variant["lr_schedule"] == "step" and "tensorboard" not in step.variant and "lr_min" not in step.variant
