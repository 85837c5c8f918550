"""``pdmp report``: run directories (and profiles) -> a table; ``--plot DIR`` adds PNG plots."""

from __future__ import annotations

from typing import List, Optional

import typer

from pdmp_cli.cli._app import app, command, console, err_console


@app.command("report")
@command
def report_cli(
    runs: Optional[List[str]] = typer.Argument(
        None, help="Runs directories or run directories (default runs/; searched recursively)."
    ),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only these datasets (comma-separated)."),
    method: Optional[str] = typer.Option(None, "--method", help="Only these methods, e.g. pdmp,vanilla."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="Only these fusions, e.g. concat."),
    fmt: str = typer.Option("table", "--format", "-f", help="table (terminal), markdown, csv or json."),
    plot: Optional[str] = typer.Option(
        None, "--plot", help="Also write PNG plots into this folder: per run, comparison, sweep, profile."
    ),
    profile: Optional[List[str]] = typer.Option(
        None, "--profile", help="Also report this profile JSON, or every profile in a folder (repeatable)."
    ),
    compare: Optional[str] = typer.Option(
        None, "--compare", help="Paired difference of every row against this method over shared seeds (95% CI, paired t-test)."
    ),
):
    """Tabulate runs like the paper's tables: one row per configuration, mean ± std over seeds.

    Columns: dataset, method, fusion, γp, γ per modality, n; the headline (test accuracy at the
    epoch with the best validation accuracy) with its 95% confidence interval; final accuracy,
    the best test epoch's (the paper's convention), macro-F1, each branch's accuracy, final w
    (Eq. 5), epochs, wall time. The best mean of each accuracy column is highlighted; the
    headline's only when a paired t-test says it beats every other row. Unfinished runs
    (running, interrupted, diverged) get their own rows.

    Example: pdmp report runs/ --method pdmp,vanilla --compare vanilla --format markdown --plot plots/
    """
    from pdmp_cli import report
    from pdmp_cli.errors import PdmpError

    if fmt not in report.FORMATS:
        raise PdmpError(f"--format must be one of {', '.join(report.FORMATS)}, got {fmt!r}", 2)
    rep = report.build(runs or None, dataset=dataset, method=method, fusion=fusion, profiles=profile, compare=compare)
    out = report.render(rep, fmt)
    if fmt == "table":
        console.print(out)
    else:
        typer.echo(out, nl=not out.endswith("\n"))
        for n in rep.notes:  # stdout stays machine-readable
            err_console.print(f"note: {n}", highlight=False, soft_wrap=True, markup=False)
    if plot:
        from pdmp_cli.plots import write_plots

        plot_notes: list[str] = []  # plots skipped, or lines left out of one: nothing to draw
        paths = write_plots(rep, plot, notes=plot_notes)
        where = console if fmt == "table" else err_console
        if not paths:
            why = "none had anything to draw (notes below)" if plot_notes else "nothing in this report has epochs to draw"
            where.print(f"no plots: {why} (wrote nothing to {plot})", highlight=False)
        for p in paths:
            where.print(f"wrote {p}", highlight=False, soft_wrap=True)
        for n in plot_notes:
            where.print(f"note: {n}", highlight=False, soft_wrap=True, markup=False)
