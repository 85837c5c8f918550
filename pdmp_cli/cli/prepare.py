"""``pdmp prepare``: raw videos -> the frame folders and audio files a dataset manifest expects."""

from __future__ import annotations

from pathlib import Path

import typer

from pdmp_cli.cli._app import app, command, console, err_console


@app.command("prepare")
@command
def prepare_cli(
    name: str = typer.Argument(..., help="Dataset name (cremad, ave, ks, vggsound, ucf101) or manifest path."),
    videos: Path = typer.Option(..., "--videos", help="Folder of the raw videos."),
    data_root: Path = typer.Option(None, "--data-root", help="Where the lists are and the outputs go (overrides the manifest)."),
    force: bool = typer.Option(False, "--force", help="Redo samples that are already prepared."),
):
    """Extract frames and audio from raw videos, as the dataset's manifest lays them out.

    Resumable: finished samples are skipped, so an interrupted run can simply be started again.
    """
    from pdmp_cli.data.prepare import prepare_dataset

    result = prepare_dataset(name, videos, data_root, force=force, progress=True)
    console.print(result.summary(), markup=False, highlight=False, soft_wrap=True)
    for sid, why in result.failed[:10]:
        err_console.print(f"  failed {sid}: {why}", markup=False, highlight=False, soft_wrap=True)
    if result.missing:
        head = ", ".join(result.missing[:5]) + (" ..." if len(result.missing) > 5 else "")
        err_console.print(f"  no video for {len(result.missing)} samples: {head}", markup=False, highlight=False,
                          soft_wrap=True)
    if result.failed:
        raise typer.Exit(1)
