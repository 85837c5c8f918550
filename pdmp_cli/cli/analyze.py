"""``pdmp analyze``: stage 1 of Alg. 1, a thin layer over :func:`pdmp_cli.analysis.run`."""

from __future__ import annotations

import shlex
import sys
from typing import Optional

import typer

from pdmp_cli.cli._app import app, command, console, err_console, overrides


@app.command("analyze")
@command
def analyze_cli(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset name or manifest path."),
    subset: Optional[str] = typer.Option(
        None, "--subset", help="Fraction of the training split in (0, 1], or a list such as 0.2,0.4,0.6,0.8,1.0."
    ),
    epochs: Optional[str] = typer.Option(
        None, "--epochs", help="Epochs of each unimodal model, or auto: until validation accuracy stops improving."
    ),
    patience: Optional[int] = typer.Option(None, "--patience", help="--epochs auto: epochs without a new best before stopping (default 5)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="--epochs auto: the cap (default 100)."),
    seeds: Optional[str] = typer.Option(
        None, "--seeds", help="Repeat with each seed, e.g. 0,1,2: mean accuracies, how often each ranking came out."
    ),
    val_fraction: Optional[float] = typer.Option(
        None, "--val-fraction", help="Validation split carved from train when the dataset has none (default 0.1); the rankings use it."
    ),
    select_on_test: bool = typer.Option(
        None, "--select-on-test", help="No validation split: rank on the test split (labelled so in the profile)."
    ),
    early_epochs: Optional[int] = typer.Option(
        None, "--early-epochs", help="Epoch whose accuracy ranks the optimization-dominant modality."
    ),
    seed: Optional[int] = typer.Option(None, "--seed"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder registry name (resnet18, small)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate."),
    probe_epochs: Optional[int] = typer.Option(
        None, "--probe-epochs", help="Epochs of the vanilla multimodal probe whose branch ranking decides m_o (Alg. 1; default: --early-epochs; 0: off, early unimodal accuracy decides)."
    ),
    scaling: bool = typer.Option(
        None, "--scaling/--no-scaling",
        help="With one --subset s < 1, also train on its nested half and warn when the ranking may flip with more data (default on).",
    ),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Profile path (default profiles/<dataset>.json; profiles/<dataset>-<8 hex of its data identity>.json for a manifest of your own)."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Spec file (YAML, TOML or JSON) with any of these options."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Override the manifest's data root."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even if the analysis is cached."),
    skip_bad: bool = typer.Option(
        None, "--skip-bad", help="Leave out unreadable samples (then train with --skip-bad too: the same samples)."
    ),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j",
        help="Unimodal models trained at once, each in its own process (default: free cores ÷ --threads; one per GPU). Same curves as --jobs 1.",
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="Intra-op CPU threads of each model (default: 1 for small, see docs/scaling.md for resnet18)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check spec, data and --out, try one batch per modality, estimate the time; write nothing."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing profile of another dataset or other settings at the output path."
    ),
):
    """Rank the modalities: train one unimodal model per modality on a class-stratified subset.

    Final accuracy gives the performance-dominant modality, early accuracy the
    optimization-dominant one. Writes a reusable profile for `pdmp train`; results are cached.
    """
    from pdmp_cli import analysis
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.specs import AnalyzeSpec, dataset_defaults, read_spec_file, refuse_ignored_flags, resolve_spec

    file_layer = read_spec_file(spec) if spec else None
    name = dataset or (file_layer or {}).get("dataset")
    if not name:
        raise PdmpError("no dataset given; pass --dataset NAME (or a --spec file that sets dataset)", 2)
    flags = overrides(
        dataset=dataset, subset=subset, epochs=epochs, early_epochs=early_epochs, seed=seed, encoder=encoder,
        batch_size=batch_size, lr=lr, probe_epochs=probe_epochs, scaling=scaling, out=out, device=device, data_root=data_root,
        cache=False if no_cache else None, jobs=jobs, threads=threads, skip_bad=skip_bad, patience=patience,
        max_epochs=max_epochs, seeds=seeds, val_fraction=val_fraction, select_on_test=select_on_test,
    )  # fmt: skip
    resolved = resolve_spec(AnalyzeSpec, dataset_defaults(name, AnalyzeSpec), file_layer, flags)
    refuse_ignored_flags(resolved, flags)  # --patience without --epochs auto would be ignored
    if dry_run:
        from pdmp_cli.dryrun import dry_run_analyze

        dry_run_analyze(resolved, console, force=force)
        return

    outcomes = analysis.run(resolved, command=shlex.join(["pdmp", *sys.argv[1:]]), console=err_console, force=force)

    for o in outcomes:
        p = o.profile
        how = "served from the analysis cache, no training" if o.cached else "measured"
        console.print(
            f"subset {o.subset:g}: performance-dominant [bold]{p.performance_dominant}[/], "
            f"optimization-dominant [bold]{p.optimization_dominant}[/] ({p.optimization_criterion}); {how}",
            highlight=False,
            soft_wrap=True,
        )
        if p.ranking_frequency:
            counts = ", ".join(f"{r} {n}/{len(p.seeds)}" for r, n in p.ranking_frequency["late"].items())
            console.print(f"  seeds {','.join(map(str, p.seeds))}: late ranking {counts}", highlight=False, soft_wrap=True)
        if p.data_scaling:
            sc = p.data_scaling
            gains = ", ".join(f"{m} {sc['gain_per_doubling'][m]:+.3f}" for m in p.modalities)
            console.print(f"  gain per doubling of the data (subset {sc['half_subset']:g} -> {o.subset:g}): {gains}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        if p.validation and p.validation["selection"] == "test":
            err_console.print("[yellow]warning:[/] ranked on the test split (--select-on-test)", highlight=False)
        for w in o.warnings:
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        console.print(f"  profile {o.path}  spec {o.spec_path}", highlight=False, soft_wrap=True)
    if len(outcomes) > 1:
        console.print(_subset_table(outcomes))


def _subset_table(outcomes):
    """The subset-scale study in the layout of the paper's Table VI."""
    from rich.table import Table

    from pdmp_cli.analysis import subset_study_rows

    rows = subset_study_rows(outcomes)
    mods = outcomes[0].profile.modalities
    largest = max(o.subset for o in outcomes)
    table = Table(title="Subset-scale study (validation accuracy at the final epoch, cf. paper Table VI)")
    table.add_column("subset", justify="right")
    for m in mods:
        table.add_column(m, justify="right")
    table.add_column("difference", justify="right")
    table.add_column("ranking")
    table.add_column("uncertain")
    table.add_column("still rising")
    table.add_column(f"agrees with {largest:.0%}")
    for r in rows:
        table.add_row(
            f"{r['subset']:.0%}",
            *(f"{r['late_accuracy'][m]:.3f}" for m in mods),
            f"{r['difference']:.3f}",
            " > ".join(r["ranking"]),
            "yes" if r["uncertain"] else "no",
            ", ".join(r["rising"]) or "-",
            "yes" if r["agrees"] else "NO",
        )
    return table
