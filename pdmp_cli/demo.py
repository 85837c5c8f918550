"""``pdmp demo``: the whole method in one call, on the built-in ``synthetic`` preset.

    from pdmp_cli.demo import run
    result = run("demo-output")      # result.profile_path, result.run_dirs, result.plots, result.report

1. Modality analysis (Alg. 1, stage 1) with the preset's defaults: a profile in
   ``<out>/profiles/``. Its curves are cached (``$PDMP_CACHE_DIR``), so a second demo trains no
   unimodal model.
2. Three multimodal runs in ``<out>/runs/``: vanilla, OGM-GE and PDMP, concat fusion, the
   preset's defaults (OGM-GE's α and PDMP's γp: the ones ``pdmp tune`` chose on validation for
   the preset, with the same budget; the manifest's ``[defaults]`` name the command); a run
   already there with the same settings is reused (see :mod:`pdmp_cli.sweep`), so a second demo
   only prints. ``jobs`` of them train at once (:mod:`pdmp_cli.pool`).
3. The comparison table (also written as ``<out>/report.md``) and the plots in ``<out>/plots/``:
   the three runs' accuracy and w over epochs (paper Fig. 4), each run alone, and the
   profile's unimodal curves (Fig. 3 b).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from pdmp_cli.fsutil import write_text
from pdmp_cli.methods import DEMO_METHODS as METHODS  # vanilla, OGM-GE, PDMP: named in methods/
from pdmp_cli.report import Report
from pdmp_cli.sweep import SweepResult

DEFAULT_OUT = "demo-output"


@dataclass
class DemoResult:
    out: Path
    profile_path: Path
    analysis_cached: bool
    sweep: SweepResult
    report: Report
    report_md: Path
    plots: list[Path]
    comparison_plot: Path | None
    seconds: float

    @property
    def run_dirs(self) -> list[Path]:
        return [o.run_dir for o in self.sweep.outcomes]


def run(
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    dataset: str = "synthetic",
    epochs: int | None = None,
    seed: int = 0,
    gamma_p: float | None = None,
    console=None,
    quiet: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
) -> DemoResult:
    """Analyse ``dataset``, train vanilla, OGM-GE and PDMP on it, report and plot; see the module doc.

    ``epochs`` (default: the preset's) applies to the analysis and to each run; ``seed`` is the
    training seed (the analysis keeps the preset's, so its cache serves every demo seed).
    ``gamma_p`` (default: the preset's, chosen on validation) is PDMP's. ``jobs`` runs (and
    unimodal models) train at once, each in its own process (default: free cores ÷ ``threads``;
    :mod:`pdmp_cli.pool`); ``threads`` per run (default: the encoder's, 1 for ``small``). The
    numbers do not depend on ``jobs``.

    Raises PdmpError: an unknown dataset, an output folder that cannot be written, or a stop
    with Ctrl-C (exit code 130; the same command continues where it stopped).
    """
    from rich.console import Console

    from pdmp_cli import analysis, plots, report, sweep
    from pdmp_cli.specs import AnalyzeSpec, dataset_defaults, resolve_spec

    t0 = time.monotonic()
    if console is None or quiet:
        console = Console(quiet=quiet)
    out = Path(out)
    name = Path(dataset).stem if dataset.endswith(".toml") else dataset
    profile_path = out / "profiles" / f"{name}.json"

    # 1. modality analysis (cached) ---------------------------------------------------------------
    defaults = dataset_defaults(dataset, AnalyzeSpec)
    flags = {"dataset": dataset, "out": str(profile_path), "jobs": jobs, "threads": threads}
    if epochs is not None:
        early = defaults.get("early_epochs", AnalyzeSpec.model_fields["early_epochs"].default)
        flags.update(epochs=epochs, early_epochs=min(early, epochs))
    aspec = resolve_spec(AnalyzeSpec, defaults, flags)
    console.rule(f"1/3 modality analysis: one unimodal model per modality on {name}")
    # the demo's own folder: a rerun with other --epochs replaces its profile
    [outcome] = analysis.run(aspec, command="pdmp demo", progress=not quiet, console=console, force=True)
    p = outcome.profile
    how = "served from the analysis cache, nothing trained" if outcome.cached else "measured"
    early, late = aspec.early_epochs, aspec.epochs

    def accs(which):
        return ", ".join(f"{m} {100 * getattr(r, which):.1f} %" for m, r in p.results.items())

    split = "test" if (p.validation or {}).get("source", "test") == "test" else "validation"  # v1 profiles: test
    console.print(
        f"unimodal {split} accuracy after epoch {early}: {accs('early_accuracy')}; after epoch {late}: {accs('late_accuracy')}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"performance-dominant [bold]{p.performance_dominant}[/], optimization-dominant "
        f"[bold]{p.optimization_dominant}[/] ({how}); profile {outcome.path}",
        highlight=False,
        soft_wrap=True,
    )

    # 2. vanilla, OGM-GE, PDMP --------------------------------------------------------------------
    flags = {"runs_root": str(out / "runs"), "seed": seed, "gamma_p": gamma_p, "fusion": "concat", "epochs": epochs,
             "threads": threads}
    base = sweep.base_spec(str(outcome.path), dataset=dataset, flags=flags)
    console.rule(f"2/3 multimodal training: {', '.join(METHODS)} (γp {base.gamma_p:g}), concat fusion, seed {seed}")
    result = sweep.run(base, methods=list(METHODS), console=console, quiet=quiet, command="pdmp demo", jobs=jobs)
    if result.stopped:
        from pdmp_cli.errors import PdmpError

        from pdmp_cli.signals import interrupt_exit_code

        raise PdmpError(f"demo stopped: {result.stopped.replace('the sweep', 'the demo')}", interrupt_exit_code())

    # 3. table and plots ----------------------------------------------------------------------------
    console.rule("3/3 results")
    rep = report.build([o.run_dir for o in result.outcomes], profiles=[outcome.path])
    console.print(report.rich_tables(rep, title=f"{name}: vanilla vs OGM-GE vs PDMP", profiles=False))
    report_md = out / "report.md"
    write_text(report_md, report.markdown(rep), fix="choose another --out folder")
    written = plots.write_plots(rep, out / "plots")
    comparison = next((w for w in written if w.name.startswith("compare-")), None)

    seconds = time.monotonic() - t0
    console.print("\n[bold]artifacts[/]")
    rows = [("profile", outcome.path), ("profile spec", outcome.spec_path)]
    rows += [(f"run: {describe}", o.run_dir) for describe, o in ((sweep.describe(o.spec), o) for o in result.outcomes)]
    rows += [("table (Markdown)", report_md)]
    rows += [("plot", w) for w in written]
    for what, path in rows:
        console.print(f"  {what:<34} {path}", highlight=False, soft_wrap=True)
    console.print(
        f"done in {seconds:.0f} s. Next: `pdmp report {out / 'runs'}`, "
        f"`pdmp sweep --profile {outcome.path} --gamma-p 1,5,10,15 --runs-dir {out / 'runs'}`",
        highlight=False,
        soft_wrap=True,
    )
    return DemoResult(out, outcome.path, outcome.cached, result, rep, report_md, written, comparison, seconds)
