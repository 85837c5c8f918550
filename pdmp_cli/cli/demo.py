"""``pdmp demo``: the whole method on built-in data, a thin layer over :func:`pdmp_cli.demo.run`."""

from __future__ import annotations

from typing import Optional

import typer

from pdmp_cli.cli._app import app, command, console


@app.command("demo")
@command
def demo_cli(
    out: str = typer.Option("demo-output", "--out", "-o", help="Folder for the profile, runs, plots and table."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs of the analysis and of each run (preset: 20)."),
    seed: int = typer.Option(0, "--seed", help="Training seed of the three runs."),
    gamma_p: Optional[float] = typer.Option(None, "--gamma-p", help="γp of the PDMP run (Eq. 10; default: the preset's, chosen on validation)."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j",
        help="Runs (and unimodal models) at once, each in its own process (default: free cores ÷ --threads); same numbers as --jobs 1.",
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op CPU threads of each run (default 1 for the preset's small encoder)."),
):
    """Run the whole method on the built-in `synthetic` preset in a few minutes on a CPU.

    Analyses the modalities (cached), trains vanilla, OGM-GE and PDMP (concat fusion; OGM-GE's α
    and PDMP's γp as `pdmp tune` chose them on validation for the preset),
    prints the comparison table, writes plots, and lists where every file went. A second demo
    reuses the cached analysis and the finished runs.
    """
    from pdmp_cli.demo import run
    from pdmp_cli.errors import PdmpError

    if epochs is not None and epochs < 1:
        raise PdmpError(f"--epochs must be >= 1, got {epochs}", 2)
    for flag, n in (("--jobs", jobs), ("--threads", threads)):
        if n is not None and n < 1:
            raise PdmpError(f"{flag} must be >= 1, got {n}", 2)
    if gamma_p is not None and gamma_p <= 0:
        raise PdmpError(f"--gamma-p must be > 0, got {gamma_p:g}", 2)
    run(out, epochs=epochs, seed=seed, gamma_p=gamma_p, console=console, jobs=jobs, threads=threads)
