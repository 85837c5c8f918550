"""Honest numbers in pdmp report: the headline is the test accuracy at the best validation
epoch, confidence intervals and paired tests equal scipy's (and hand-worked values), and the
headline's "best" mark needs a significant paired test."""

from __future__ import annotations

import math

import pytest
from scipy import stats
from conftest import make_run
from typer.testing import CliRunner

from pdmp_cli import report
from pdmp_cli.cli.app import app
from pdmp_cli.errors import PdmpError

runner = CliRunner()
from pdmp_cli.report.stats import Stat, paired


def _row(rep, method):
    (row,) = [w for w in rep.rows if w.method == method and w.status == "complete"]
    return row


def test_headline_is_the_test_accuracy_at_the_best_validation_epoch(tmp_path):
    # validation peaks at epoch 2 (test 0.70); test peaks at epoch 3 (0.80); the last epoch is 4 (0.75)
    make_run(tmp_path, "r", accs=[0.5, 0.7, 0.8, 0.75], vals=[0.4, 0.9, 0.6, 0.9])  # 0.9 twice: the first counts
    w = _row(report.build([tmp_path]), "pdmp")
    assert w.selection == "validation" and w.runs[0].summary.selection == "validation"
    assert w.stats["selected_accuracy"].mean == pytest.approx(0.7)
    assert w.stats["accuracy"].mean == pytest.approx(0.75)  # final epoch stays
    assert w.stats["best_accuracy"].mean == pytest.approx(0.8)  # the paper's convention, labelled so
    header, body, _ = report.table_cells(report.build([tmp_path]).rows)
    cells = dict(zip(header, (c for c, _ in body[0])))
    assert cells["acc % (best val epoch)"] == "70.0" and cells["best-test acc % (paper's convention)"] == "80.0"
    assert "chosen on" not in header  # every row chose on validation


def test_a_summary_without_the_headline_is_read_from_its_epochs(tmp_path):
    d = make_run(tmp_path, "r", accs=[0.5, 0.7, 0.8], vals=[0.4, 0.9, 0.6], summary=False)
    (w,) = report.build([tmp_path]).rows
    assert w.runs[0].path == d and w.stats["selected_accuracy"].mean == pytest.approx(0.7)


def test_confidence_interval_is_scipys_student_t():
    xs = [0.80, 0.85, 0.90]
    s = Stat.of(xs)
    lo, hi = stats.t.interval(0.95, 2, loc=0.85, scale=0.05 / math.sqrt(3))
    assert s.ci == (pytest.approx(lo), pytest.approx(hi))
    # by hand: t(0.975, df=2) = 4.302653; half-width 4.302653 x 0.05 / sqrt(3) = 0.124207
    assert s.ci == (pytest.approx(0.725793, abs=1e-6), pytest.approx(0.974207, abs=1e-6))
    assert Stat.of([0.7]).ci is None and Stat.of([0.7, 0.7]).ci == (0.7, 0.7)


def _pair(tmp_path, a: list[float], b: list[float]):
    for seed, (x, y) in enumerate(zip(a, b)):
        make_run(tmp_path, f"p{seed}", accs=[x], vals=[0.5], seed=seed)
        make_run(tmp_path, f"v{seed}", method="vanilla", accs=[y], vals=[0.5], seed=seed)
    return report.build([tmp_path], compare="vanilla")


def test_paired_difference_and_test_are_scipys(tmp_path):
    a, b = [0.80, 0.85, 0.90, 0.82], [0.70, 0.80, 0.84, 0.80]
    rep = _pair(tmp_path, a, b)
    p, v = _row(rep, "pdmp"), _row(rep, "vanilla")
    c = p.compare
    d = [x - y for x, y in zip(a, b)]  # 0.10, 0.05, 0.06, 0.02
    sd = math.sqrt(sum((x - 0.0575) ** 2 for x in d) / 3)  # 0.033040...
    assert (c.n, c.against) == (4, "vanilla (concat)") and c.mean == pytest.approx(0.0575)
    assert c.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert c.p == pytest.approx(2 * stats.t.sf(0.0575 / (sd / 2), 3))  # t = 3.4805 on 3 df
    assert c.ci == tuple(pytest.approx(x) for x in stats.t.interval(0.95, 3, loc=0.0575, scale=sd / 2))
    assert c.significant and v.is_reference and v.compare is None
    assert "selected_accuracy" in p.best  # significantly better than the only other row


def test_best_is_not_marked_without_a_significant_difference(tmp_path):
    rep = _pair(tmp_path, [0.80, 0.70, 0.90], [0.75, 0.78, 0.80])  # higher mean, differences +5, -8, +10
    p = _row(rep, "pdmp")
    assert p.stats["selected_accuracy"].mean > _row(rep, "vanilla").stats["selected_accuracy"].mean
    assert not p.compare.significant and "selected_accuracy" not in p.best
    assert "accuracy" in p.best  # other columns keep the highest-mean mark


def test_rows_without_shared_seeds_cannot_be_compared(tmp_path):
    make_run(tmp_path, "p", accs=[0.9], vals=[0.5], seed=1)
    make_run(tmp_path, "v", method="vanilla", accs=[0.5], vals=[0.5], seed=2)
    p = _row(report.build([tmp_path], compare="vanilla"), "pdmp")
    assert (p.compare.n, p.compare.mean, p.compare.p) == (0, None, None)
    assert paired(p, p).n == 1 and paired(p, p).p is None


def test_compare_in_every_format_and_its_errors(tmp_path):
    _pair(tmp_path, [0.80, 0.85, 0.90, 0.82], [0.70, 0.80, 0.84, 0.80])
    r = runner.invoke(app, ["report", str(tmp_path), "--compare", "vanilla", "--format", "markdown"])
    assert r.exit_code == 0, r.output
    head, *lines = [[c.strip() for c in line.strip("|").split("|")] for line in r.stdout.splitlines() if line.startswith("|")]
    pd = next(x for x in lines if x[1] == "pdmp")
    assert pd[head.index("Δ vs vanilla")] == "+5.8 [0.5, 11.0]" and pd[head.index("p")] == "0.040"
    assert next(x for x in lines if x[1] == "vanilla")[head.index("Δ vs vanilla")] == "ref"
    r = runner.invoke(app, ["report", str(tmp_path), "--compare", "vanilla", "--format", "csv"])
    assert "diff_p" in r.stdout.splitlines()[0]
    with pytest.raises(PdmpError, match="--compare mla: no complete run of that method here; methods present: pdmp, vanilla"):
        report.build([tmp_path], compare="mla")
    r = runner.invoke(app, ["report", str(tmp_path), "--compare", "mla"])
    assert r.exit_code == 2 and r.output.startswith("error: --compare mla")
