"""``pdmp sweep``: a grid of ``pdmp train`` runs (γp × seeds × fusion × method), then its table."""

from __future__ import annotations

from typing import Optional

import typer

from pdmp_cli.cli._app import app, command, console, err_console, fail, overrides


@app.command("sweep")
@command
def sweep_cli(
    profile: str = typer.Option(None, "--profile", help="Dominance profile JSON (from `pdmp analyze` or by hand)."),
    gamma_p: Optional[str] = typer.Option(None, "--gamma-p", help="γp values, e.g. 1,5,10,15,20,25 (paper Table V)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2 (default: the spec's seed, 0)."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="Fusions, e.g. concat,sum,film,gated,se,mmformer (default concat)."),
    method: Optional[str] = typer.Option(
        None, "--method", help="Methods, e.g. pdmp,vanilla,mla (default pdmp); all: every method, paper: the paper's Table I methods; methods without γp run once per fusion and seed."
    ),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name or manifest path; default: the profile's."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs of every run."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="resnet18 (paper) or small."),
    runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="Where the runs go and are looked for (default runs/)."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Spec file (YAML, TOML or JSON) with any `pdmp train` option; flags win."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="DataLoader worker processes."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j",
        help="Runs at once, each in its own process (default: free cores ÷ --threads on a CPU, one per GPU); same numbers as --jobs 1.",
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="Intra-op CPU threads of each run (default: 1 for small; see docs/scaling.md for resnet18)."
    ),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Override the manifest's data root."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Also write the sweep's plots (accuracy against γp, ...) here."),
    fmt: str = typer.Option("table", "--format", "-f", help="Table of the sweep's runs: table, markdown, csv or json."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines; only the table."),
):
    """Train every combination of γp, seed, fusion and method, skipping runs already done.

    A combination whose run (same settings, same dominant modalities) is already complete under
    --runs-dir is skipped, an interrupted one is resumed: after Ctrl-C the same command goes on
    where it stopped. Prints the accuracy against γp (paper Table V); `pdmp report` shows the rest.

    Example: pdmp sweep --profile profiles/synthetic.json --gamma-p 1,5,10,15,20,25 --seeds 0,1,2

    The paper's Table I: pdmp sweep --profile P --method paper --seeds 0,1,2, then pdmp report on
    --runs-dir (every method: --method all).
    """
    from pdmp_cli import report, sweep
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.specs import read_spec_file

    if jobs is not None and jobs < 1:
        raise PdmpError(f"--jobs must be >= 1, got {jobs}", 2)
    if fmt not in report.FORMATS:
        raise PdmpError(f"--format must be one of {', '.join(report.FORMATS)}, got {fmt!r}", 2)
    file_layer = read_spec_file(spec) if spec else {}
    profile = profile or file_layer.get("profile")
    if not profile:
        raise PdmpError("--profile is required: make one with `pdmp analyze --dataset NAME` or write it by hand", 2)
    flags = overrides(
        epochs=epochs, batch_size=batch_size, lr=lr, encoder=encoder, runs_root=runs_dir,
        device=device, num_workers=num_workers, data_root=data_root, threads=threads,
    )  # fmt: skip
    base = sweep.base_spec(profile, dataset=dataset, file_layer=file_layer, flags=flags)
    result = sweep.run(
        base,
        gamma_p=sweep.parse_list(gamma_p, float, "--gamma-p"),
        seeds=sweep.parse_list(seeds, int, "--seeds"),
        fusions=sweep.parse_list(fusion, str, "--fusion"),
        methods=sweep.parse_list(method, str, "--method"),
        console=err_console,
        quiet=quiet,
        jobs=jobs,
    )
    rep = result.report
    summary = f"sweep: {result.trained} trained, {result.resumed} resumed, {result.skipped} skipped (already in {base.runs_root})"
    if rep is not None:
        if fmt == "table":
            console.print(report.sweep_table(rep.rows))
            console.print(summary, highlight=False)
            for n in rep.notes:
                console.print(f"[yellow]note:[/] {n}", highlight=False, soft_wrap=True)
        else:
            out = report.render(rep, fmt)
            typer.echo(out, nl=not out.endswith("\n"))
            err_console.print(summary, highlight=False)
        if plot:
            from pdmp_cli.plots import write_plots

            plot_notes: list[str] = []  # plots skipped, or lines left out of one: nothing to draw
            for p in write_plots(rep, plot, notes=plot_notes):
                (console if fmt == "table" else err_console).print(f"wrote {p}", highlight=False, soft_wrap=True)
            for n in plot_notes:
                err_console.print(f"note: {n}", highlight=False, soft_wrap=True, markup=False)
    if result.stopped:
        from pdmp_cli.signals import interrupt_exit_code

        fail(result.stopped, interrupt_exit_code())  # 130 after Ctrl-C, 143 after SIGTERM
