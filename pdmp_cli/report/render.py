"""Renderers of a :class:`~pdmp_cli.report.build.Report`: terminal (rich), Markdown, CSV, JSON."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from pdmp_cli.errors import PdmpError
from pdmp_cli.report.build import Report
from pdmp_cli.report.read import ProfileRow
from pdmp_cli.report.stats import HEADLINE, Row, Stat, metric_columns

FORMATS = ("table", "markdown", "csv", "json")


COLUMN_TITLES = {
    "selected_accuracy": "acc % (best val epoch)",
    "accuracy": "final acc %",
    "best_accuracy": "best-test acc % (paper's convention)",
    "macro_f1": "final macro-F1 %",
    "w": "w",
    "wall_seconds": "wall s",
}


SHORT_TITLES = {
    "selected_accuracy": "acc", "accuracy": "final", "best_accuracy": "best test", "macro_f1": "F1", "w": "w",
    "wall_seconds": "wall s",
}  # fmt: skip
CI_TITLE = "95% CI"


def column_title(col: str, short: bool = False) -> str:
    """``acc %``, ``audio acc %``...; ``short``: ``acc``, ``audio`` (the table's caption says %)."""
    if col.startswith("branch/"):
        m = col.split("/", 1)[1]
        return m if short else f"{m} acc %"
    return (SHORT_TITLES if short else COLUMN_TITLES)[col]


def fmt_stat(s: Stat | None, col: str) -> str:
    """``85.2 ± 1.6`` (accuracies in %), ``0.41`` (w), ``31`` (seconds); ``-`` when missing."""
    if s is None or s.mean is None:
        return "-"
    if col == "w":
        f = lambda x: f"{x:.2f}"  # noqa: E731
    elif col == "wall_seconds":
        f = lambda x: f"{x:.0f}"  # noqa: E731
    else:
        f = lambda x: f"{100 * x:.1f}"  # noqa: E731
    return f(s.mean) + (f" ± {f(s.std)}" if s.std is not None else "")


def fmt_ci(ci: tuple[float, float] | None, short: bool = False) -> str:
    """``[80.1, 89.9]`` (accuracies in %; ``short``: the half-width of the symmetric t-interval,
    ``±4.9``); ``-`` for n < 2."""
    if not ci:
        return "-"
    return f"±{50 * (ci[1] - ci[0]):.1f}" if short else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def fmt_paired(w: Row) -> tuple[str, str]:
    """The ``Δ vs METHOD`` and ``p`` cells: ``+2.1 [-0.5, 4.7]`` (points of %), ``0.081``; ``ref`` for the method itself."""
    if w.is_reference:
        return "ref", "-"
    c = w.compare
    if c is None or c.mean is None:
        return "-", "-"
    diff = f"{100 * c.mean:+.1f}" + (f" {fmt_ci(c.ci)}" if c.ci else f" (n={c.n})")  # n: the shared seeds
    p = "-" if c.p is None else "<0.001" if c.p < 0.001 else f"{c.p:.3f}"
    return diff, p


def fmt_gamma(g: dict[str, float]) -> str:
    return ", ".join(f"{m} {v:.3g}" for m, v in g.items()) if g else "-"


def gamma_pattern(w: Row) -> str | None:
    """pdmp's γ per modality in terms of γp (``visual ×γp, audio ×1/γp``); None if not so."""
    if not w.gamma or w.gamma_p is None:
        return None
    parts = []
    for m, v in w.gamma.items():
        if math.isclose(v, w.gamma_p):
            parts.append(f"{m} ×γp")
        elif math.isclose(v, 1 / w.gamma_p):
            parts.append(f"{m} ×1/γp")
        else:
            return None
    return ", ".join(parts)


def fmt_status(w: Row, short: bool = False) -> str:
    """``complete``; ``interrupted (3/10 epochs)`` (``short``: ``interrupted``, the epochs column says the rest)."""
    if w.status == "complete" or (short and w.status != "unknown"):
        return w.status
    if short:
        return "no summary"
    planned = f"/{w.epochs_planned}" if w.epochs_planned else ""
    name = "no summary" if w.status == "unknown" else w.status
    return f"{name} ({w.epochs_done}{planned} epochs)"


def method_label(name: str) -> str:
    """The method's name, with "(approximation)" for a method without reference code (``Method.approximation``)."""
    from pdmp_cli.methods import METHODS

    return f"{name} (approximation)" if name in METHODS and METHODS.get(name).approximation else name


def fmt_tuned(w: Row) -> str:
    """The tuned Table I's column: the setting validation chose and the budget it had (``tuned.json``)."""
    t = next((r.tuned for r in w.runs if r.tuned), None)
    if not t:
        return "-"
    if not t.get("tuned"):
        return "no knob: defaults"
    seeds = len(t.get("seeds") or [0])
    out = (
        f"{t.get('setting')} of {t.get('candidates')} (budget {t.get('budget')} ep x {seeds} seed{'s' if seeds > 1 else ''}; "
        f"{t.get('spent_epochs')}/{t.get('full_epochs')} ep)"
    )
    if t.get("as_vanilla"):
        out += ", = vanilla"
    if t.get("within_noise_of"):
        out += f", within noise of {', '.join(t['within_noise_of'])}"
    return out


def _show_settings(rows: list[Row]) -> bool:
    return any(w.variant for w in rows)


def table_cells(rows: list[Row], compact: bool = False) -> tuple[list[str], list[list[tuple[str, bool]]], list[str]]:
    """Header, cells (text, is_best) and context, shared by the terminal and Markdown tables.

    ``compact`` (the terminal) moves a column whose value is the same in every row into the
    context (``dataset synthetic``, ``concat fusion``...) and drops empty γp / γ columns, so the
    table fits a terminal; the Markdown table keeps every column.
    """
    cols = metric_columns(rows)

    def epochs(w):
        return str(w.epochs_done) if w.status == "complete" else f"{w.epochs_done}/{w.epochs_planned or '?'}"

    fields = [
        ("dataset", lambda w: w.dataset),
        ("method", lambda w: method_label(w.method)),
        ("fusion", lambda w: w.fusion),
        ("γp", lambda w: f"{w.gamma_p:g}" if w.gamma_p is not None else "-"),
        ("γ", lambda w: fmt_gamma(w.gamma)),
    ]
    if _show_settings(rows):
        fields.append(("settings", lambda w: ", ".join(f"{k}={v}" for k, v in w.variant.items()) or "-"))
    if any(r.tuned for w in rows for r in w.runs):
        fields.append(("tuned on validation", fmt_tuned))
    fields.append(("n", lambda w: str(w.n)))
    if compact:  # the status of an unfinished run goes beside its epochs: one column fewer
        tail = [("epochs", lambda w: epochs(w) + ("" if w.status == "complete" else f" {fmt_status(w, short=True)}"))]
    else:
        tail = [("epochs", epochs), ("status", fmt_status)]
    context = []
    if compact:
        words = {"dataset": "dataset {}", "fusion": "{} fusion", "n": "n = {} run(s) per row", "epochs": "{} epochs"}
        kept = []
        patterns = {gamma_pattern(w) for w in rows if w.gamma and w.gamma_p != 1}
        for name, get in [*fields, *tail]:
            vals = {get(w) for w in rows}
            if name in words and len(vals) == 1 and len(rows) > 1:
                context.append(words[name].format(vals.pop()))
            elif name in ("γp", "γ") and vals == {"-"}:
                continue
            elif name == "γ" and len(patterns) == 1 and None not in patterns:
                context.append(f"pdmp's γ: {patterns.pop()}")
            else:
                kept.append((name, get))
        fields, tail = [f for f in kept if f[0] != "epochs"], [f for f in kept if f[0] == "epochs"]
    metrics = []  # (title, w -> (text, is_best))
    for c in cols:
        metrics.append((column_title(c, compact), lambda w, c=c: (fmt_stat(w.stats.get(c), c), c in w.best)))
        if c == HEADLINE:
            ci = lambda w: w.stats[HEADLINE].ci if HEADLINE in w.stats else None  # noqa: E731
            metrics.append((CI_TITLE, lambda w: (fmt_ci(ci(w), short=compact), False)))
            if any(w.compare is not None or w.is_reference for w in rows):
                vs = next(w.method for w in rows if w.is_reference)
                metrics.append((f"Δ vs {vs}", lambda w: (fmt_paired(w)[0], False)))
                metrics.append(("p", lambda w: (fmt_paired(w)[1], False)))
    if any(w.selection != "validation" for w in rows):  # say which rows chose their epoch on test
        metrics.insert(0, ("chosen on", lambda w: ("val" if w.selection == "validation" else "TEST", False)))
    elif compact:
        context.append("epoch chosen on validation")
    header = [name for name, _ in fields] + [title for title, _ in metrics] + [name for name, _ in tail]
    body = [
        [(get(w), False) for _, get in fields] + [get(w) for _, get in metrics] + [(get(w), False) for _, get in tail]
        for w in rows
    ]
    return header, body, context


def profile_cells(prows: list[ProfileRow], compact: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, cells and context of the profiles table.

    ``compact`` (the terminal): early and late accuracy in one column per modality, a column
    with the same value in every row moved to the context, and the rankings left out when
    every profile has two modalities (m_p and m_o then say the same).
    """
    mods: list[str] = []
    for pr in prows:
        for m in pr.profile.modalities:
            if m not in mods:
                mods.append(m)
    ds = [pr.as_dict() for pr in prows]

    def pct(x):
        return f"{100 * x:.1f}" if x is not None else "-"

    def unc(d):
        words = {"late_trend": "late (still rising)", "late_seeds": "late (seeds differ)"}
        names = [words.get(k, k.replace("_ranking", "")) for k, v in d["uncertain"].items() if v]
        return ", ".join(names) if names else ("no" if d["uncertain"] else "-")

    def crit(d):
        short = {"unimodal-early": "early", "multimodal-probe": "probe"}.get(d["optimization_criterion"], d["optimization_criterion"])
        return f"{d['optimization_dominant'] or 'unknown'} ({short if compact else d['optimization_criterion']})"

    fields = [
        ("profile", lambda pr, d: pr.path.name if compact else str(pr.path)),
        ("dataset", lambda pr, d: d["dataset"]),
        ("source", lambda pr, d: d["source"]),
        ("subset", lambda pr, d: f"{d['subset']:g}" if d["subset"] is not None else "-"),
    ]
    if compact:
        fields += [
            (f"{m} early → late %", lambda pr, d, m=m: f"{pct(d['early_accuracy'].get(m))} → {pct(d['late_accuracy'].get(m))}")
            for m in mods
        ]
    else:
        fields += [(f"{m} early %", lambda pr, d, m=m: pct(d["early_accuracy"].get(m))) for m in mods]
        fields += [(f"{m} late %", lambda pr, d, m=m: pct(d["late_accuracy"].get(m))) for m in mods]
    rankings = [
        ("late ranking", lambda pr, d: " > ".join(d["late_ranking"]) or "-"),
        ("early ranking", lambda pr, d: " > ".join(d["early_ranking"]) or "-"),
    ]
    if not compact or any(len(d["modalities"]) > 2 for d in ds):
        fields += rankings
    fields += [
        ("m_p", lambda pr, d: d["performance_dominant"]),
        ("m_o", lambda pr, d: crit(d)),
        ("uncertain", lambda pr, d: unc(d)),
    ]
    context = []
    if compact:
        folders = {str(pr.path.parent) for pr in prows}
        if len(folders) == 1:
            context.append(f"in {folders.pop()}/")
        else:
            fields[0] = ("profile", lambda pr, d: _short(pr.path))
    if compact and len(prows) > 1:
        kept = []
        for name, get in fields:
            vals = {get(pr, d) for pr, d in zip(prows, ds)}
            if name in ("dataset", "source") and len(vals) == 1:
                context.append(f"{name} {vals.pop()}")
            else:
                kept.append((name, get))
        fields = kept
    header = [name for name, _ in fields]
    body = [[get(pr, d) for _, get in fields] for pr, d in zip(prows, ds)]
    return header, body, context


def _no_test(w) -> bool:
    """A row whose runs never read the test split: its branch accuracies and w are validation's."""
    return all(r.metrics and all(m.test_accuracy is None for m in r.metrics) for r in w.runs)


def rich_tables(rep: Report, title: str = "Runs (mean ± std over seeds)", profiles: bool = True):
    """The terminal rendering: a rich Group of the runs table, the profiles table and the notes."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    parts = []
    if rep.rows:
        header, body, context = table_cells(rep.rows, compact=True)
        caption = (
            "% of the test split. acc: test accuracy at the epoch with the best validation accuracy (the "
            "headline), mean ± std over seeds; 95% CI: half-width of its Student-t interval; final: last epoch; "
            "best test: the best test epoch (the paper's convention, optimistic: chosen on test); F1: final "
            "macro-F1; branches: final; w: final Eq. 5. Bold green: best mean of a column in a dataset; for acc "
            "only when significantly better than every other row (paired t-test over shared seeds, p < 0.05)"
            + (f". Δ vs {rep.compare}: mean paired difference over shared seeds, points of %, [95% CI]; "
               "p: two-sided paired t-test" if rep.compare else "")
            + (". Rows without a test accuracy (trained without the test split, as pdmp tune's runs are): "
               "branches and w measured on validation" if any(_no_test(w) for w in rep.rows) else "")
        )  # fmt: skip
        numeric = {"γp", "n", "epochs", CI_TITLE, "p"} | {column_title(c, True) for c in metric_columns(rep.rows)}
        numeric |= {f"Δ vs {rep.compare}"} if rep.compare else set()

        def make(narrow: bool, drop: tuple[str, ...] = ()):
            t = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold underline")
            keep = [i for i, h in enumerate(header) if h not in drop]
            for i in keep:
                h = header[i]
                t.add_column(h, justify="right" if h in numeric else "left", min_width=_word(h, *(r[i][0] for r in body)))
            for w, cells in zip(rep.rows, body):
                cells = [cells[i] for i in keep]
                texts = [c.replace(" ± ", "\n± ") if narrow else c for c, _ in cells]
                t.add_row(
                    *(f"[bold green]{escape(c)}[/]" if best else escape(c) for c, (_, best) in zip(texts, cells)),
                    style=None if w.status == "complete" else "yellow",
                )
            return t

        parts.append(f"[bold]{escape(title)}[/]")
        if context:
            parts.append(escape(" · ".join(context)))
        # narrower terminals: std under the mean, then without w and wall time (--format markdown has them)
        parts.append(_FitToWidth(lambda: make(False), lambda: make(True), lambda: make(True, ("w", "wall s"))))
        parts.append(f"[dim]{escape(caption)}[/]")
    if rep.profiles and profiles:
        # its own names: the runs table's layouts above are rendered later and still read theirs
        pheader, pbody, pcontext = profile_cells(rep.profiles, compact=True)
        parts.append("[bold]Dominance profiles (unimodal accuracy on the evaluation split)[/]")
        if pcontext:
            parts.append(escape(" · ".join(pcontext)))
        t = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold underline")
        for i, h in enumerate(pheader):
            t.add_column(h, justify="right" if "%" in h else "left", min_width=_word(h, *(row[i] for row in pbody)))
        for cells in pbody:
            t.add_row(*(escape(c) for c in cells))
        parts.append(t)
    parts.extend(f"[yellow]note:[/] {escape(n)}" for n in rep.notes)
    return Group(*parts)


class _FitToWidth:
    """Renders the first layout whose natural width fits the console (the last one otherwise):
    a narrow terminal gets ``mean`` and ``± std`` on two lines instead of a cropped table."""

    def __init__(self, *layouts):
        self.layouts = layouts

    def __rich_console__(self, console, options):
        for make in self.layouts[:-1]:
            t = make()
            if t.__rich_measure__(console, options).maximum <= options.max_width:
                yield t
                return
        yield self.layouts[-1]()


def _short(p: Path) -> str:
    """A path relative to the working directory when it is below it, else as given."""
    try:
        rel = os.path.relpath(p)
    except ValueError:  # another drive (Windows)
        return str(p)
    return str(p) if rel.startswith("..") else rel


def _word(*texts: str) -> int:
    """The longest word in a column: narrower, the column would break a word (or a number)."""
    return max((len(w) for t in texts for w in t.split()), default=1)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown(rep: Report) -> str:
    out = []
    for header, body in (_md_runs(rep), _md_profiles(rep)):
        if not body:
            continue
        if out:
            out.append("")
        out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        out.extend("| " + " | ".join(body_row) + " |" for body_row in body)
    return "\n".join(out) + "\n"


def _md_runs(rep: Report):
    if not rep.rows:
        return [], []
    header, body, _ = table_cells(rep.rows)
    return header, [[f"**{_md_escape(c)}**" if best else _md_escape(c) for c, best in cells] for cells in body]


def _md_profiles(rep: Report):
    if not rep.profiles:
        return [], []
    header, body, _ = profile_cells(rep.profiles)
    return header, [[_md_escape(c) for c in cells] for cells in body]


def row_dict(w: Row) -> dict:
    cols = [c for c in metric_columns([w])]
    return {
        "dataset": w.dataset,
        "method": w.method,
        "fusion": w.fusion,
        "gamma_p": w.gamma_p,
        "gamma": w.gamma,
        "status": w.status,
        "n": w.n,
        "seeds": w.seeds,
        "epochs_done": w.epochs_done,
        "epochs_planned": w.epochs_planned,
        "settings": w.settings,
        "variant": w.variant,
        "metrics": {c: vars(w.stats[c]) for c in cols if c in w.stats},
        "selection": w.selection,
        "compare": vars(w.compare) if w.compare is not None else ("reference" if w.is_reference else None),
        "best": sorted(w.best),
        "runs": [str(r.path) for r in w.runs],
        "tuned": next((r.tuned for r in w.runs if r.tuned), None),
    }


def to_json(rep: Report) -> str:
    from pdmp_cli.fsutil import finite_json  # standard JSON: nan/inf (an old run's γ) as null

    return json.dumps(
        finite_json({
            "rows": [row_dict(w) for w in rep.rows],
            "profiles": [p.as_dict() for p in rep.profiles],
            "notes": rep.notes,
        }),
        indent=2,
        default=str,
    )


def to_csv(rep: Report) -> str:
    """The runs table, numbers unformatted (fractions, seconds); std empty for n = 1.

    With only profiles, the profiles table. Both at once do not fit one CSV table.
    """
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    if rep.rows and rep.profiles:
        raise PdmpError("--format csv holds one table: report runs or --profile, not both at once", 2)
    if rep.profiles:
        header, body, _ = profile_cells(rep.profiles)
        wr.writerow(header)
        wr.writerows(body)
        return buf.getvalue()
    cols = metric_columns(rep.rows)
    names = [c.replace("/", "_") for c in cols]
    wr.writerow(
        ["dataset", "method", "fusion", "gamma_p", "gamma", "settings", "status", "n", "seeds", "epochs_done",
         "epochs_planned", "selection", *(f"{n}_{k}" for n in names for k in ("mean", "std")),
         f"{HEADLINE}_ci_low", f"{HEADLINE}_ci_high", "diff_mean", "diff_ci_low", "diff_ci_high", "diff_p", "diff_n",
         "best", "runs"]
    )  # fmt: skip
    for w in rep.rows:
        nums = []
        for c in cols:
            s = w.stats.get(c)
            nums += [_num(s.mean if s else None), _num(s.std if s else None)]
        ci = w.stats[HEADLINE].ci if HEADLINE in w.stats else None
        nums += [_num(ci[0] if ci else None), _num(ci[1] if ci else None)]
        c = w.compare
        nums += [_num(c.mean if c else None), _num(c.ci[0] if c and c.ci else None),
                 _num(c.ci[1] if c and c.ci else None), _num(c.p if c else None), _num(c.n if c else None)]  # fmt: skip
        wr.writerow(
            [w.dataset, w.method, w.fusion, _num(w.gamma_p), ";".join(f"{m}={v:g}" for m, v in w.gamma.items()),
             ";".join(f"{k}={v}" for k, v in w.variant.items()), w.status, w.n, ";".join(map(str, w.seeds)),
             w.epochs_done, _num(w.epochs_planned), w.selection, *nums, ";".join(sorted(w.best)),
             ";".join(str(r.path) for r in w.runs)]
        )  # fmt: skip
    return buf.getvalue()


def _num(x) -> str:
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)


def render(rep: Report, fmt: str = "table"):
    """``table`` -> a rich renderable; ``markdown``, ``csv``, ``json`` -> a string."""
    if fmt not in FORMATS:
        raise PdmpError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}", 2)
    if fmt == "table":
        return rich_tables(rep)
    if fmt == "markdown":
        return markdown(rep)
    if fmt == "csv":
        return to_csv(rep)
    return to_json(rep)
