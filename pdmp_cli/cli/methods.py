"""``pdmp methods``: every registered method, what it does, its hyperparameters and defaults."""

from __future__ import annotations

from pdmp_cli.cli._app import app, command, console


@app.command("methods")
@command
def methods_cli():
    """List the training methods (--method) with their hyperparameters and defaults.

    Set a hyperparameter with `pdmp train --set METHOD.FIELD=VALUE` or in a spec file's
    [method_args.METHOD] table.
    """
    from rich.markup import escape

    from pdmp_cli.methods import describe_methods, uses_gamma_p
    from pdmp_cli.specs import TrainSpec

    gamma_p = TrainSpec.model_fields["gamma_p"]
    for name, summary, fields in describe_methods():
        console.print(f"[bold]{escape(name)}[/bold]  {escape(summary)}", highlight=False)
        if uses_gamma_p(name):  # a spec field of its own (--gamma-p), not in the method's table
            console.print(
                f"    --gamma-p VALUE  (default {gamma_p.default:g}, or the dataset preset's)  {escape(gamma_p.description or '')}",
                highlight=False,
            )
        for field, default, desc in fields:
            console.print(f"    --set {escape(name)}.{escape(field)}=VALUE  (default {escape(default)})  {escape(desc)}", highlight=False)
        if not fields and not uses_gamma_p(name):
            console.print("    no hyperparameters", highlight=False)
    console.print(escape("\nSpec files: a [method_args.METHOD] table with FIELD = VALUE lines; gamma_p = VALUE at the top level."), highlight=False)
