"""``pdmp tune``: choose γp (or a baseline's hyperparameter) on the validation split by successive halving."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pdmp_cli.cli._app import app, command, console, err_console, fail, overrides


@app.command("tune")
@command
def tune_cli(
    profile: str = typer.Option(None, "--profile", help="Dominance profile JSON (from `pdmp analyze` or by hand)."),
    method: str = typer.Option(None, "--method", help="Method(s) to tune, e.g. pdmp or pdmp,ogm-ge (same budget each; default pdmp); paper or all: the tuned Table I (each method's choice then trained on --seeds)."),
    gamma_p: Optional[str] = typer.Option(None, "--gamma-p", help="γp candidates (default 1,2,5,10,15,20)."),
    values: list[str] = typer.Option(None, "--values", help="Candidates of another hyperparameter, METHOD.FIELD=v1,v2 (e.g. ogm-ge.alpha=0.1,0.8); repeatable."),
    branches: Optional[bool] = typer.Option(None, "--branches/--no-branches", help="Try both branches of Eq. 12 (default: when the profile cannot settle m_o)."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Epochs a candidate that is never stopped reaches (default: the spec's epochs)."),
    min_epochs: Optional[int] = typer.Option(None, "--min-epochs", help="First rung: epochs before the first comparison (default budget // eta^2)."),
    eta: int = typer.Option(2, "--eta", help="Reduction factor: 1/eta of the candidates go on at each rung (2: the better half)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name or manifest path; default: the profile's."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of every candidate's run (default 0)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Several seeds, e.g. 0,1,2: every candidate trains on each and is judged on the mean."),
    asynchronous: bool = typer.Option(False, "--asynchronous", help="Several workers share the study (Optuna's asynchronous pruner; implied by --storage/--study)."),
    final: Optional[bool] = typer.Option(None, "--final/--no-final", help="Train each method's choice to the end on the seeds (reads the test split; default: with --method paper/all)."),
    force: bool = typer.Option(False, "--force", help="Write over a tune folder that holds another dataset's or setting's result."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs of the final run the chosen spec asks for."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="resnet18 (paper) or small."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="concat (default), sum, film, gated..."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Validation split carved from train when the dataset has none (default 0.1)."),
    set_: list[str] = typer.Option(None, "--set", help="A fixed method hyperparameter, METHOD.FIELD=VALUE; repeatable."),
    tune_dir: str = typer.Option("tune", "--tune-dir", help="Where the candidates' runs, the study and chosen.json go: <dir>/<dataset>-<hash>-<method>-s<seeds>/."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage shared by several workers: a journal file path (default <tune dir>/study.journal) or a database URL (e.g. postgresql://host/db)."),
    study: Optional[str] = typer.Option(None, "--study", help="Optuna study name (default: derived from the settings, so workers agree)."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Spec file (YAML, TOML or JSON) with any `pdmp train` option; flags win."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="DataLoader worker processes."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Override the manifest's data root."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines; only the result."),
):
    """Choose γp (or a baseline's knob) on the validation split by successive halving, reusing every partial run.

    All candidates train to a rung; the better 1/eta (on validation accuracy) go on to the next,
    whatever order they were given in (synchronous successive halving). Candidates that train
    identically (γp 1 under both branches of Eq. 12) train once. Runs are continued, never
    repeated: after Ctrl-C the same command goes on where it stopped. The test split is never read.
    Prints each candidate's validation curve with its standard error, the choice and why (and
    when it is within noise, or switches PDMP off), the compute spent against a full sweep, and
    writes chosen.json: train it with `pdmp train --spec <tune dir>/chosen.json`. --seeds 0,1,2
    judges on the mean over seeds. --method paper: the tuned Table I (every method's knob with the
    same budget, then each choice trained on the seeds; read it with pdmp report).

    Several workers: start the same command on each with --asynchronous (Optuna's journal file in
    the tune dir, or --storage with a database URL on a cluster).

    Example: pdmp tune --profile profiles/synthetic.json --gamma-p 1,2,5,10,15,20
    """
    import shlex
    import sys

    from pdmp_cli import sweep, tune
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.methods import check_set_for, parse_set
    from pdmp_cli.specs import read_spec_file

    file_layer = read_spec_file(spec) if spec else {}
    profile = profile or file_layer.get("profile")
    if not profile:
        raise PdmpError("--profile is required: make one with `pdmp analyze --dataset NAME` or write it by hand", 2)
    flags = overrides(
        seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, encoder=encoder, fusion=fusion,
        val_fraction=val_fraction, method_args=parse_set(set_), device=device, num_workers=num_workers,
        data_root=data_root,
    )  # fmt: skip
    names = sweep.parse_list(method, str, "--method") or [file_layer.get("method") or "pdmp"]
    is_set = any(n in ("paper", "all") for n in names)
    methods = sweep.expand_methods(names) if is_set else names
    check_set_for(parse_set(set_), methods)  # a --set for a method not tuned would be ignored (issue 27)
    seed_list = sweep.parse_list(seeds, int, "--seeds")
    if seed_list and seed is not None:
        raise PdmpError("give --seed or --seeds, not both", 2)
    given = tune.parse_values(values, sweep.parse_list(gamma_p, float, "--gamma-p"))
    if len(methods) > 1 and (storage or study):
        raise PdmpError("--storage/--study name one study; tune one --method at a time with them", 2)
    asynchronous = asynchronous or bool(storage or study)
    final = is_set if final is None else final
    command = shlex.join(["pdmp", *sys.argv[1:]])
    entries = []
    for m in methods:  # every plan is checked before anything trains
        base = sweep.base_spec(profile, dataset=dataset, file_layer=file_layer, flags={**flags, "method": m})
        grid = tune.values_for(m, given)
        if is_set and not grid:
            entries.append(tune.TableEntry(m, None, base=base))
            continue
        where = Path(tune_dir) / tune.dir_name(base, seed_list)
        plan = tune.make_plan(
            base, where, values=grid, budget=budget, min_epochs=min_epochs, eta=eta, storage=storage,
            study_name=study, branches=branches, seeds=seed_list, asynchronous=asynchronous,
        )  # fmt: skip
        entries.append(tune.TableEntry(m, plan, base=plan.base))
    for e in entries:
        if e.plan is not None:
            tune.check_tune_dir(e.plan, force=force)
    stopped = None
    for e in entries:
        if e.plan is None:
            console.print(f"{e.method}: no tunable hyperparameter; trained at its defaults", highlight=False)
            continue
        e.result = _tune_one(e.plan, command, quiet)
        stopped = stopped or e.result.stopped
        if stopped:
            break
        if e.result.choice is None:
            fail(f"{e.method}: {e.result.why}", 1)
    if stopped is None and final:
        seeds_final = seed_list or [entries[0].base.seed]
        log = (lambda s: None) if quiet else (lambda s: err_console.print(s, highlight=False, soft_wrap=True))
        for e in entries:
            stopped = tune.train_final(e, Path(tune_dir), seeds_final, command, log)
            if stopped:
                break
        if stopped is None:
            where = tune.table_dir(tune_dir, entries[0].base)
            console.print(tune.table_summary(entries), highlight=False, soft_wrap=True)
            console.print(
                f"final runs in {where}; the tuned Table I: pdmp report {where} --compare vanilla",
                highlight=False, soft_wrap=True,
            )  # fmt: skip
    if stopped:
        from pdmp_cli.signals import interrupt_exit_code

        fail(stopped, interrupt_exit_code())  # 130 after Ctrl-C, 143 after SIGTERM


def _tune_one(plan, command: str, quiet: bool):
    from pdmp_cli import tune

    base = plan.base
    log = (lambda s: None) if quiet else (lambda s: err_console.print(s, highlight=False, soft_wrap=True))
    log(
        f"tuning {base.method} on {base.dataset} (seed{'s' if len(plan.seeds) > 1 else ''} {', '.join(map(str, plan.seeds))}): {len(plan.candidates)} candidates, "
        f"budget {plan.budget} epochs, rungs at epochs {', '.join(map(str, plan.rungs())) or '-'} (eta {plan.eta}); "
        + (f"asynchronous, study {plan.study_name} in {plan.storage}" if plan.asynchronous else "synchronous, one worker")
    )
    for n in plan.notes:
        log(f"note: {n}")
    result = tune.run(plan, command=command, log=log)
    console.print(tune.table(result))
    for r in result.candidates:
        if r.note:
            console.print(f"{r.candidate.label}: {r.note}", highlight=False, soft_wrap=True)
    if result.pending and not result.stopped:
        console.print(
            f"{len(result.pending)} candidates not settled ({', '.join(r.state for r in result.pending)}); "
            "the choice is written when the last one finishes (here or in another worker)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    elif not result.pending:
        console.print(f"choice: {result.why}", highlight=False, soft_wrap=True)
        if result.branch_note:
            console.print(result.branch_note, highlight=False, soft_wrap=True)
        if result.vanilla_note:
            console.print(f"note: {result.vanilla_note}", highlight=False, soft_wrap=True)
        for line in result.noise:
            console.print(f"note: the choice is {line}", highlight=False, soft_wrap=True)
    console.print(tune.compute_line(result), highlight=False, soft_wrap=True)
    if result.spec_path is not None:
        console.print(
            f"wrote {result.spec_path}; train it to the end: pdmp train --spec {result.spec_path}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    elif not result.pending and result.choice is None:
        fail(result.why, 1)
    return result
