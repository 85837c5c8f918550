"""Figure: peak memory of ``pdmp train`` (RSS high-water mark of the training process).

``pdmp train`` runs in a child process as a user runs it; its peak resident set comes from
``os.wait4`` (the kernel's ``ru_maxrss``). ``--num-workers 0`` keeps all the work in that one
process, so the figure is the whole footprint (with DataLoader workers each worker is a
process of its own, mostly sharing the parent's pages). Two datasets:

* the ``synthetic`` preset (its defaults: ``small`` encoders, batch 64), ``--epochs 1``;
* the generated CREMA-D-layout dataset through the ``cremad`` manifest at batch 64 with the
  paper's ``resnet18`` encoders, ``--epochs 1`` (every batch of the small training split,
  then evaluation): the high-water mark is reached by the first full batch's backward pass.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import ROOT, child_env, pdmp_command, run_child


def _epochs_done(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        return None


def train_peak(workdir: Path, name: str, args: list[str], threads: int | None, method: str = "pdmp") -> dict:
    run_dir = workdir / f"run-{name}"
    cmd = pdmp_command() + ["train", *args, "--method", method, "--epochs", "1", "--num-workers", "0",
                            "--device", "cpu", "--run-dir", str(run_dir), "--quiet"]
    res = run_child(cmd, child_env(workdir / "cache", threads), memory=True)
    spec = json.loads((run_dir / "spec.json").read_text())
    return {
        "peak_rss_mb": res.peak_rss_mb,
        "seconds": res.seconds,
        "epochs_done": _epochs_done(run_dir),
        "config": {
            "command": " ".join(["pdmp", *cmd[len(pdmp_command()):]]).replace(str(workdir), "<tmp>"),
            "encoder": spec["encoder"],
            "batch_size": spec["batch_size"],
            "fusion": spec["fusion"],
        },
    }


def measure(workdir: Path, cremad_root: Path, threads: int | None, *, cremad_manifest: str = "cremad", synthetic: str = "synthetic",
            cremad_encoder: str = "resnet18", cremad_batch: int = 64, synthetic_batch: int | None = None,
            cremad_select_on_test: bool = False) -> dict:
    """``cremad_select_on_test``: the --tiny dataset (8 clips, 6 classes) cannot hold a stratified
    validation split, so its child selects on test; the full-size figure carves one as a run does."""
    from pdmp_cli.analysis import manual_profile

    # hand-written profiles (`pdmp profile new`): which modality is dominant does not change memory
    syn_profile = workdir / "synthetic-profile.json"
    manual_profile(synthetic, "visual", "audio", modalities=["audio", "visual"]).save(syn_profile)
    syn_args = ["--profile", str(syn_profile), "--dataset", synthetic]
    if synthetic_batch:
        syn_args += ["--batch-size", str(synthetic_batch)]
    cremad_args = ["--profile", str(ROOT / "profiles" / "cremad.paper.json"), "--dataset", cremad_manifest,
                   "--data-root", str(cremad_root), "--encoder", cremad_encoder, "--batch-size", str(cremad_batch)]
    if cremad_select_on_test:
        cremad_args += ["--select-on-test"]
    return {
        "synthetic": train_peak(workdir, "synthetic", syn_args, threads),
        "cremad_layout": train_peak(workdir, "cremad", cremad_args, threads),
    }
