"""PNG plots of runs, profiles and sweeps (matplotlib, Agg; imported only when plotting).

- :func:`plot_run`: one run's test accuracy (fused and each branch) and w (Eq. 5) over epochs,
  the paper's Fig. 4; with more than two modalities, each modality's share of the logits instead of w.
  A run trained without the test split (``pdmp tune``) shows its validation accuracy, labelled so.
- :func:`plot_comparison`: several configurations on one figure (mean over seeds): accuracy and w.
- :func:`plot_profile`: a profile's unimodal accuracy curves, the paper's Fig. 3 (b).
- :func:`plot_sweep`: final accuracy against γp with ± std bars, the paper's Table V as a figure.
- :func:`write_plots`: all that apply to a :class:`~pdmp_cli.report.Report`, into one folder; a plot
  with nothing to draw (:class:`NothingToPlot`) is skipped and said so in its ``notes``.

Every figure has a fixed pixel size (``*_SIZE``: width, height at ``DPI``) and is written to a
temporary file and renamed, so a crash never leaves half a PNG.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import statistics
from collections import Counter
from pathlib import Path

from pdmp_cli.errors import PdmpError
from pdmp_cli.fsutil import atomic_write
from pdmp_cli.report import Report, Row, RunRecord

DPI = 100
RUN_SIZE = (1100, 420)  # pixels: accuracy | w
PROFILE_SIZE = (700, 450)
SWEEP_SIZE = (700, 450)
NO_TEST = "trained without the test split, as pdmp tune's runs are"


class NothingToPlot(PdmpError):
    """A plot with nothing to draw (e.g. test accuracy of runs that never read the test split);
    :func:`write_plots` skips it and says why in its notes."""


def _figure(size: tuple[int, int], ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, path: str | os.PathLike) -> Path:
    with atomic_write(path, "wb", fix="choose another --plot folder") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return Path(path)


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "plot"


def file_names(prefix: str, items: list[tuple[str, Path]]) -> list[str]:
    """``<prefix>-<safe name>.png`` for each (name, path). Where two names come out alike (run
    directories of the same name in two folders) or a name had to be changed (non-ASCII
    characters, spaces), 8 hex digits of the sha256 of the resolved path are appended, so no two
    runs or profiles share a file, within one report or across reports into one folder."""
    safe = [safe_name(name) for name, _ in items]
    counts = Counter(safe)
    out = []
    for (name, path), s in zip(items, safe):
        if counts[s] > 1 or s != name:
            s += "-" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
        out.append(f"{prefix}-{s}.png")
    return out


def _epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _minor_label(v: float, _pos=None) -> str:
    """Label 2, 3 and 5 times a power of ten on a log axis; leave the other minor ticks bare."""
    if v <= 0:
        return ""
    lead = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if round(lead) in (2, 3, 5) and abs(lead - round(lead)) < 1e-6 else ""


def _w_axis(ax, series: list[tuple[str, list[int], list[float]]], modalities: list[str], on: str = ""):
    """w over epochs on a log scale (w = 1: both modalities' logits equally large); ``on``: the
    split it was measured on where that is not test (e.g. " on validation"), put in the y label."""
    drawn = False
    for label, xs, ws in series:
        pts = [(x, w) for x, w in zip(xs, ws) if w is not None and w > 0]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
            drawn = True
    if drawn:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="w = 1 (balanced)")
    a, b = (modalities + ["s_0", "s_1"])[:2]
    ax.set_title(f"optimization dependency w = Σ|s_{a}| / Σ|s_{b}| (Eq. 5)", fontsize=10)
    _epochs(ax)
    ax.set_ylabel(f"w{on} (log scale)")
    ax.legend(fontsize=8)


def plot_run(rec: RunRecord, path: str | os.PathLike) -> Path:
    """Accuracy curves (fused and per branch, %) and w over epochs for one run (paper Fig. 4).

    Epochs without a test accuracy (trained with ``evaluate_test=False``, as ``pdmp tune`` does)
    draw the fused validation accuracy instead, as "fused (validation)"; their branch accuracies,
    w and shares were measured on validation too, and the y labels say so.

    Raises:
        NothingToPlot: no epoch has a test or a validation accuracy.
    """
    ms = rec.metrics
    xs = [m.epoch for m in ms]
    test = [(m.epoch, 100 * m.test_accuracy) for m in ms if m.test_accuracy is not None]
    val = [(m.epoch, 100 * m.val_accuracy) for m in ms if m.test_accuracy is None and m.val_accuracy is not None]
    if ms and not test and not val:
        raise NothingToPlot(f"{rec.path.name}: no epoch has a test or a validation accuracy")
    every_test = len(test) == len(ms)  # as pdmp train writes: the plot as it always was
    # where no epoch has test accuracy, every curve is on validation; where some have, on either
    on = "" if every_test else " on validation" if not test else " (validation where no test)"
    fig, (acc, right) = _figure(RUN_SIZE, 2)
    if every_test:
        acc.plot(xs, [100 * m.test_accuracy for m in ms], marker="o", linewidth=2, label="fused (test)")
    else:
        for pts, split, style in ((test, "test", "-"), (val, "validation", "--")):
            if pts:
                acc.plot(*zip(*pts), marker="o", linewidth=2, linestyle=style, label=f"fused ({split})")
    mods = list(ms[0].branch_accuracy) if ms else []
    for mod in mods:
        acc.plot(xs, [100 * m.branch_accuracy.get(mod, float("nan")) for m in ms], marker=".", label=f"{mod} branch")
    _epochs(acc)
    acc.set_ylabel("test accuracy %" if every_test else "validation accuracy %" if not test else f"accuracy %{on}")
    from pdmp_cli.methods import uses_gamma_p

    s = rec.summary
    g = f" γp {s.gamma_p:g}" if uses_gamma_p(s.method) else ""
    status = "" if rec.complete else f" [{rec.status}]"
    acc.set_title(f"{s.dataset} · {s.method}{g} · {s.fusion} · seed {s.seed}{status}", fontsize=10)
    acc.legend(fontsize=8)
    if len(mods) == 2:
        _w_axis(right, [("w", xs, [m.w for m in ms])], mods, on)
    else:
        for mod in mods:
            right.plot(xs, [m.shares.get(mod, float("nan")) for m in ms], marker=".", label=mod)
        right.set_title(f"share of Σ|s_m| per modality{on}", fontsize=10)
        _epochs(right)
        right.set_ylabel("share")
        right.legend(fontsize=8)
    return _save(fig, path)


def _mean_curve(runs: list[RunRecord], get) -> tuple[list[int], list[float | None]]:
    n = min(len(r.metrics) for r in runs)
    xs = [runs[0].metrics[i].epoch for i in range(n)]
    ys = []
    for i in range(n):
        vals = [get(r.metrics[i]) for r in runs]
        vals = [v for v in vals if v is not None]
        ys.append(statistics.fmean(vals) if vals else None)
    return xs, ys


def plot_comparison(rows: list[Row], path: str | os.PathLike, title: str = "", notes: list[str] | None = None) -> Path:
    """Test accuracy and w over epochs, one line per configuration (mean over its seeds).

    Where no run has a test accuracy (all trained without the test split, as ``pdmp tune`` does),
    validation accuracy and w on validation, labelled so; where some have, the rows whose runs
    have none are left out (one line each in ``notes``): test and validation never share an axis.

    Raises:
        NothingToPlot: no row has an accuracy to draw.
    """
    lines = [(w, runs) for w in rows if (runs := [r for r in w.runs if r.metrics])]
    has_test = any(m.test_accuracy is not None for _, runs in lines for r in runs for m in r.metrics)
    split = "test" if has_test else "validation"
    get = (lambda m: m.test_accuracy) if has_test else (lambda m: m.val_accuracy)
    kept = [(w, runs) for w, runs in lines if any(get(m) is not None for r in runs for m in r.metrics)]
    if not kept:
        raise NothingToPlot(f"none of its {len(lines)} configurations has a test or a validation accuracy")
    if notes is not None:
        why = f"no test accuracy ({NO_TEST})" if has_test else "no test or validation accuracy"
        shown = {id(w) for w, _ in kept}
        notes.extend(f"{Path(path).name}: {w.label} left out: {why}" for w, _ in lines if id(w) not in shown)
    fig, (acc, right) = _figure(RUN_SIZE, 2)
    series, mods = [], []
    for w, runs in kept:
        mods = mods or list(runs[0].metrics[0].branch_accuracy)
        label = w.label + (f" n={len(runs)}" if len(runs) > 1 else "")
        xs, ys = _mean_curve(runs, get)
        acc.plot(xs, [100 * y if y is not None else math.nan for y in ys], marker=".", label=label)
        series.append((label, *_mean_curve(runs, lambda m: m.w)))
    _epochs(acc)
    acc.set_ylabel(f"{split} accuracy %")
    acc.set_title(title or f"{split} accuracy (mean over seeds)", fontsize=10)
    acc.legend(fontsize=8)
    _w_axis(right, series, mods, "" if split == "test" else " on validation")
    return _save(fig, path)


def plot_profile(row, path: str | os.PathLike) -> Path:
    """A measured profile's unimodal accuracy curves (paper Fig. 3 b), early epoch marked; the
    y-axis names the split they were measured on (validation; test for v1 or --select-on-test profiles)."""
    p = row.profile
    fig, (ax,) = _figure(PROFILE_SIZE)
    for m in p.modalities:
        r = p.results.get(m)
        if r is None:
            continue
        xs = list(range(1, len(r.curve) + 1))
        ax.plot(xs, [100 * a for a in r.curve], marker=".", label=f"{m}-only")
    early = p.settings.get("early_epochs")
    if early:
        ax.axvline(early, color="grey", linestyle=":", linewidth=1, label=f"early epoch ({early})")
    _epochs(ax)
    ax.set_ylabel(f"{profile_split(p)} accuracy %")
    subset = f", subset {p.subset:g}" if p.subset is not None else ""
    ax.set_title(
        f"{p.dataset}{subset}: performance-dominant {p.performance_dominant}, "
        f"optimization-dominant {p.optimization_dominant or 'unknown'}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def profile_split(p) -> str:
    """The split a profile's curves were measured on: ``validation``, or ``test`` (profiles from
    before the validation split, and ``--select-on-test``)."""
    return "validation" if (p.validation or {}).get("selection", "test") != "test" else "test"


def plot_sweep(rows: list[Row], path: str | os.PathLike, col: str = "selected_accuracy", title: str = "",
               notes: list[str] | None = None) -> Path:  # fmt: skip
    """``col`` (%; default the report's headline: test accuracy at the best validation epoch) against γp, one line per (method, fusion) with ± std bars; methods without γp
    (vanilla, ogm-ge) as horizontal dashed lines (paper Table V). Lines with no value of ``col``
    (runs trained without the test split, as ``pdmp tune`` does) are left out, one line each in ``notes``.

    Raises:
        NothingToPlot: no line has a value of ``col``.
    """
    from pdmp_cli.report import sweep_grid

    gps, lines = sweep_grid(rows, col)
    labels = [
        f"{w0.method} ({w0.fusion})" + (" " + ", ".join(f"{k}={v}" for k, v in w0.variant.items()) if w0.variant else "")
        for w0, _ in lines
    ]  # fmt: skip
    empty = [lab for lab, (_, cells) in zip(labels, lines)
             if all(w.stats.get(col) is None or w.stats[col].mean is None for w in cells.values())]  # fmt: skip
    why = f"test accuracy ({NO_TEST})" if col in ("selected_accuracy", "accuracy", "best_accuracy") else col
    if len(empty) == len(lines):
        raise NothingToPlot(f"no line has a {why}")
    if notes is not None:
        notes.extend(f"{Path(path).name}: {label} left out: no {why}" for label in empty)
    fig, (ax,) = _figure(SWEEP_SIZE)
    for i, ((w0, cells), label) in enumerate(zip(lines, labels)):
        color = f"C{i % 10}"
        if None in cells:
            s = cells[None].stats.get(col)
            if s and s.mean is not None:
                ax.axhline(100 * s.mean, linestyle="--", linewidth=1, label=label, color=color)
            continue
        pts = sorted((g, w.stats[col]) for g, w in cells.items() if col in w.stats and w.stats[col].mean is not None)
        if pts:
            ax.errorbar(
                [g for g, _ in pts], [100 * s.mean for _, s in pts], yerr=[100 * (s.std or 0.0) for _, s in pts],
                marker="o", capsize=3, label=label, color=color,
            )  # fmt: skip
    ax.set_xlabel("γp")
    ax.set_xticks(gps)
    ax.set_ylabel({
        "selected_accuracy": "test accuracy % (best validation epoch)", "accuracy": "final test accuracy %",
        "best_accuracy": "best test accuracy %",
    }.get(col, col))  # fmt: skip
    ax.set_title(title or "accuracy against γp (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(rep: Report, out_dir: str | os.PathLike, notes: list[str] | None = None) -> list[Path]:
    """Every plot that applies: one per run with epochs, one comparison per (dataset, fusion)
    with two or more configurations, one sweep per dataset with two or more γp values, one per
    measured profile. Returns the paths written; a plot with nothing to draw (e.g. a sweep of
    runs that never read the test split) is skipped, and it and anything a plot left out are said
    in ``notes``."""
    out = Path(out_dir)
    notes = notes if notes is not None else []
    written: list[Path] = []

    def draw(name: str, plot) -> None:  # plot: out / name -> the path written
        try:
            written.append(plot(out / name))
        except NothingToPlot as e:
            notes.append(f"{name} not drawn: {e}")

    runs = [rec for rec in rep.records if rec.metrics]
    for rec, name in zip(runs, file_names("run", [(rec.path.name, rec.path) for rec in runs])):
        draw(name, lambda path, rec=rec: plot_run(rec, path))
    complete = [w for w in rep.rows if w.status == "complete"]
    for ds, fu in sorted({(w.dataset, w.fusion) for w in complete}):
        group = [w for w in complete if (w.dataset, w.fusion) == (ds, fu) and any(r.metrics for r in w.runs)]
        if len(group) >= 2:
            title = f"{ds} · {fu} fusion"
            draw(f"compare-{safe_name(ds)}-{safe_name(fu)}.png", lambda path: plot_comparison(group, path, title, notes))
    for ds in sorted({w.dataset for w in complete}):
        group = [w for w in complete if w.dataset == ds]
        if len({w.gamma_p for w in group if w.gamma_p is not None}) >= 2:
            title = f"{ds}: accuracy against γp"
            draw(f"sweep-{safe_name(ds)}.png", lambda path: plot_sweep(group, path, title=title, notes=notes))
    profiles = [pr for pr in rep.profiles if pr.profile.results]
    for pr, name in zip(profiles, file_names("profile", [(pr.path.stem, pr.path) for pr in profiles])):
        draw(name, lambda path, pr=pr: plot_profile(pr, path))
    return written
