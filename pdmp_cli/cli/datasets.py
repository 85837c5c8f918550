"""``pdmp datasets``: the dataset manifests, where each one's data is expected, and checks."""

from __future__ import annotations

from pathlib import Path

import typer

from pdmp_cli.cli._app import app, command, console

datasets_app = typer.Typer(help="List the dataset manifests, or check a dataset on disk.", no_args_is_help=False)
app.add_typer(datasets_app, name="datasets")

_STYLE = {"present": "green", "built-in": "cyan", "incomplete": "yellow", "missing": "red", "invalid": "red"}


@datasets_app.callback(invoke_without_command=True)
@command
def datasets_cli(
    ctx: typer.Context,
    data_root: Path = typer.Option(None, "--data-root", help="Look for every dataset here instead (rarely useful)."),
):
    """List the dataset manifests and whether each one's data root is present.

    Data roots: --data-root, else $PDMP_DATA_ROOT_<NAME>, else the manifest's data_root under
    $PDMP_DATA_ROOT (default ./data).
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.markup import escape
    from rich.table import Table

    from pdmp_cli.data.check import list_datasets

    table = Table(title="datasets (data_manifests/)", title_justify="left")
    for col in ("name", "classes", "modalities", "data root", "status"):
        table.add_column(col, overflow="fold")
    for d in list_datasets(data_root):
        status = f"[{_STYLE.get(d.status, 'white')}]{d.status}[/]" + (f" ({escape(d.detail)})" if d.detail else "")
        root = escape(d.root) + (f"\n[dim]from {escape(d.source)}[/]" if d.source else "")
        table.add_row(escape(d.name), escape(d.classes), escape(d.modalities), root, status)
    console.print(table)


@datasets_app.command("check")
@command
def check_cli(
    name: str = typer.Argument(..., help="Dataset name or path to a manifest .toml."),
    data_root: Path = typer.Option(None, "--data-root", help="Where the dataset's files are (overrides the manifest)."),
    quick: bool = typer.Option(False, "--quick", help="Only check that files exist; do not decode them."),
    show: int = typer.Option(20, "--show", min=0, help="How many problems to list."),
    workers: int = typer.Option(None, "--workers", min=0, help="Decoding processes (default: the manifest's num_workers)."),
):
    """Validate a dataset on disk: missing, unreadable or truncated files, empty splits, unknown labels.

    Decodes every file through the features cache, so a clean check also warms the cache for
    training. Exits 1 if anything is wrong.
    """
    from rich.markup import escape
    from rich.table import Table

    from pdmp_cli.data.check import check_dataset

    report = check_dataset(name, data_root, deep=not quick, progress=True, workers=workers)

    def left_out() -> None:  # list rows the manifest's rules (duplicates, empty segments) left out
        for p in report.dropped[:show]:
            console.print(f"  {p.describe()}", markup=False, highlight=False, soft_wrap=True)
        if len(report.dropped) > show:
            console.print(f"  ... and {len(report.dropped) - show} more rows left out (--show N lists more)")

    if report.ok:
        console.print(f"[green]ok[/] {escape(report.summary())} (root {escape(str(report.root))})", highlight=False)
        left_out()
        return
    console.print(f"[red]problems[/] {escape(report.summary())} (root {escape(str(report.root))})",
                  highlight=False, soft_wrap=True)
    counts = Table("problem", "count")
    for kind, n in report.counts.items():
        counts.add_row(kind, str(n))
    console.print(counts)
    for p in report.problems[:show]:
        console.print(f"  {p.describe()}", markup=False, highlight=False, soft_wrap=True)
    if len(report.problems) > show:
        console.print(f"  ... and {len(report.problems) - show} more (--show N lists more)")
    left_out()
    if report.fatal:  # a missing list or an empty split: leaving samples out cannot fix it
        console.print("fix these lists; --skip-bad cannot help with a missing list or an empty split")
    else:
        console.print("fix these files, or pass --skip-bad to pdmp analyze and pdmp train to leave the affected samples out")
    raise typer.Exit(1)


@datasets_app.command("pack")
@command
def pack_cli(
    name: str = typer.Argument(..., help="Dataset name or path to a manifest .toml."),
    data_root: Path = typer.Option(None, "--data-root", help="Where the dataset's files are (overrides the manifest)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print where each split's store goes and its size; write nothing."),
    force: bool = typer.Option(False, "--force", help="Repack even when a store for this data exists."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad samples out (as pdmp train --skip-bad)."),
):
    """Check a dataset and write its packed store (what pdmp train reads): frames as uint8 at the
    stored size, spectrograms as float16, in memory-mapped chunks under $PDMP_PACKED_DIR (default
    <cache dir>/packed). pdmp train packs by itself after its data check; PDMP_PACKED=0 turns that off.
    """
    from pdmp_cli.data.packed import pack_dataset

    for line in pack_dataset(name, data_root, dry_run=dry_run, force=force, skip_bad=skip_bad, progress=True):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
