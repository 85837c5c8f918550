"""The one Typer app, and the error handling every command shares.

Commands live in their own modules (``analyze.py``, ``train.py``...) and register on ``app``.
Library code raises :class:`~pdmp_cli.errors.PdmpError`; :func:`command` turns it into one
red line on stderr and a non-zero exit, never a traceback (``pdmp --verbose`` keeps it).
"""

from __future__ import annotations

import functools

import typer
from rich.console import Console

app = typer.Typer(
    name="pdmp",
    help="PDMP: find the performance-dominant modality, then let it dominate multimodal training "
    "(arXiv 2604.05773).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
_state = {"verbose": False}


def _version(value: bool):
    if value:
        from pdmp_cli import __version__

        console.print(f"pdmp {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    _state["verbose"] = verbose


def fail(message: str, code: int = 1):
    from rich.markup import escape  # a message may hold "[...]" (file names, TOML tables)

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def command(fn):
    """Wrap a command body: PdmpError -> one line + exit code, Ctrl-C -> exit 130."""
    from pdmp_cli.errors import PdmpError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PdmpError as e:
            if _state["verbose"]:
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def overrides(**kwargs) -> dict:
    """CLI flags as a spec layer: options the user did not give are None and drop out."""
    return {k: v for k, v in kwargs.items() if v is not None}
