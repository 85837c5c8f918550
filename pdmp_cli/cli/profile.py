"""``pdmp profile show`` / ``pdmp profile new``: read and hand-write dominance profiles."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from pdmp_cli.cli._app import app, command, console

profile_app = typer.Typer(
    help="Dominance profiles: show one, or write one by hand when the ranking is known.",
    no_args_is_help=True,
)
app.add_typer(profile_app, name="profile")


@profile_app.command("show")
@command
def show_cli(file: str = typer.Argument(..., help="Profile JSON (from pdmp analyze, pdmp profile new or profiles/).")):
    """Print a profile as a table: accuracies, rankings, dominant modalities, provenance."""
    from pdmp_cli.profile import Profile

    console.print(profile_table(Profile.load(file)))


@profile_app.command("new")
@command
def new_cli(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name or manifest path."),
    performance_dominant: str = typer.Option(..., "--performance-dominant", help="Modality best on its own (m_p)."),
    optimization_dominant: Optional[str] = typer.Option(
        None, "--optimization-dominant", help="Modality that learns fastest (m_o); omit if unknown."
    ),
    modalities: Optional[str] = typer.Option(
        None, "--modalities", help="Comma-separated modalities; default: read from the dataset's manifest."
    ),
    note: Optional[List[str]] = typer.Option(None, "--note", help="A note to keep in the profile (repeatable)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Default profiles/<dataset>.json."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
):
    """Write a profile by hand, for a dataset whose dominant modalities are already known."""
    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.errors import PdmpError

    mods = [m.strip() for m in modalities.split(",") if m.strip()] if modalities is not None else None
    profile = manual_profile(
        dataset, performance_dominant, optimization_dominant, modalities=mods, notes=note,
        command=shlex.join(["pdmp", *sys.argv[1:]]),
    )  # fmt: skip
    path = Path(out) if out else Path("profiles") / f"{profile.dataset}.json"
    if path.exists() and not force:
        raise PdmpError(f"{path} already exists; pass --force to overwrite it or --out to write elsewhere", 2)
    try:
        profile.save(path)
    except OSError as e:
        raise PdmpError(f"cannot write {path}: {e.strerror}; choose another --out", 1) from None
    console.print(f"wrote {path}", highlight=False)


def _criteria_words(p) -> str:
    """A disagreement of the two m_o criteria (probe branch ranking, early unimodal accuracy), said in yellow."""
    probe = ((p.probe or {}).get("ranking") or [None])[0]
    early = (p.early_ranking or [None])[0]
    if not (probe and early) or probe == early:
        return ""
    return (f"  [yellow]the m_o criteria disagree: the multimodal probe ranks {probe} first, early unimodal "
            f"accuracy {early}; `pdmp tune` tries both[/]")  # fmt: skip


def profile_table(p):
    """A rich rendering of a :class:`~pdmp_cli.profile.Profile`."""
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    src = p.provenance.source + (f" ({p.provenance.reference})" if p.provenance.reference else "")
    rows = [
        ("dataset", p.dataset + (f"  [dim]identity {p.dataset_identity}[/]" if p.dataset_identity else "")),
        ("modalities", ", ".join(p.modalities)),
        ("performance-dominant", p.performance_dominant),
        ("optimization-dominant", (p.optimization_dominant or "unknown") + f"  [dim]({p.optimization_criterion})[/]"
         + _criteria_words(p)),
        ("source", src),
    ]
    if p.subset is not None:
        rows.append(("subset / seed", f"{p.subset:g} / {p.seed}"))
    if p.settings:
        keys = ("encoder", "epochs", "early_epochs", "batch_size", "lr", "train_samples", "device")
        rows.append(("settings", ", ".join(f"{k}={p.settings[k]}" for k in keys if k in p.settings)))
    if p.validation:
        v = p.validation
        how = {"carved": f"carved {v['fraction']:g} of train, seed {v['seed']}", "manifest": "the dataset's own"}
        rows.append(("ranked on", "[yellow]the TEST split (--select-on-test)[/]" if v["selection"] == "test"
                     else f"validation: {v['val_size']} samples ({how.get(v['source'], v['source'])})"))  # fmt: skip
    if p.ranking_frequency:
        n = len(p.seeds or [])
        rows.append(("seeds", ", ".join(map(str, p.seeds or [])) + "  [dim]late rankings: " + ", ".join(
            f"{r} {c}/{n}" for r, c in p.ranking_frequency["late"].items()) + "[/]"))  # fmt: skip
    rows.append(("created", f"{p.provenance.created} by pdmp {p.provenance.tool_version}"))
    if p.provenance.command:
        rows.append(("command", p.provenance.command))
    for k, v in rows:
        head.add_row(k, v)
    parts = [head]

    if p.results:
        t = Table(title="Unimodal accuracy on the evaluation split")
        for col in ("modality", "early", "late", "eval n", "end of curve", "curve (every epoch)"):
            t.add_column(col, justify="left" if col in ("modality", "end of curve", "curve (every epoch)") else "right")
        for m in p.modalities:
            r = p.results[m]
            trend = "-" if r.still_rising is None else (
                f"{'[yellow]still rising[/]' if r.still_rising else 'flat'} ({r.rise:+.3f})" if r.rise is not None else "flat")
            if r.stopped_epoch:
                trend += f", stopped at {r.stopped_epoch}"
            t.add_row(m, f"{r.early_accuracy:.3f}", f"{r.late_accuracy:.3f}", str(r.eval_size), trend,
                      " ".join(f"{a:.2f}" for a in r.curve))  # fmt: skip
        parts.append(t)

    if p.data_scaling:
        sc = p.data_scaling
        t = Table(title=f"Data scaling: nested half (subset {sc['half_subset']:g}) -> subset {p.subset:g}, "
                        f"extrapolated {sc['doublings_to_full']:.2f} doublings to the full training set")  # fmt: skip
        for col in ("modality", "half", "late", "gain per doubling", "projected full", "may overtake"):
            t.add_column(col, justify="left" if col in ("modality", "may overtake") else "right")
        for m in p.modalities:
            flip = "[yellow]yes[/]" if m in sc["may_flip"] else "-"
            t.add_row(m, f"{sc['half_late_accuracy'][m]:.3f}", f"{p.results[m].late_accuracy:.3f}",
                      f"{sc['gain_per_doubling'][m]:+.3f}", f"{sc['projected_full'][m]:.3f}", flip)  # fmt: skip
        parts.append(t)

    rk = Table(title="Rankings (best first)")
    rk.add_column("ranking")
    rk.add_column("order")
    rk.add_column("uncertain")
    probe_ranking = (p.probe or {}).get("ranking")
    for name, order in (("late_ranking", p.late_ranking), ("early_ranking", p.early_ranking), ("probe_ranking", probe_ranking)):
        if order:
            flag = p.uncertain.get(name)
            why = [w for k, w in (("late_trend", "still rising"), ("late_seeds", "seeds differ"), ("data_scaling", "may flip with more data"))
                   if name == "late_ranking" and p.uncertain.get(k)]  # fmt: skip
            text = "-" if flag is None and not why else ("[yellow]yes[/]" if flag or why else "no")
            rk.add_row(name, " > ".join(order), text + (f" ({', '.join(why)})" if why else ""))
    if rk.row_count:
        parts.append(rk)
    for n in p.notes:
        parts.append(f"[dim]note:[/] {n}")
    return Group(*parts)
