"""The one Typer app, and the error handling every command shares.

Commands live in their own modules (``analyze.py``, ``train.py``...) and register on ``app``.
Library code raises :class:`~pdmp_cli.errors.PdmpError`; :func:`command` turns it into one
red line on stderr and a non-zero exit, never a traceback (``pdmp --verbose`` keeps it).
"""

from __future__ import annotations

import errno
import functools

import typer

from pdmp_cli.console import console, err_console

app = typer.Typer(
    name="pdmp",
    help="PDMP: find the performance-dominant modality, then let it dominate multimodal training "
    "(arXiv 2604.05773).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
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


# OSErrors that mean "this place cannot be written/read by you", never a bug of pdmp's
_PLACE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


def command(fn):
    """Wrap a command body: PdmpError -> one line + exit code; Ctrl-C -> exit 130 and SIGTERM
    (schedulers, ``kill``) -> exit 143, both after the command's Ctrl-C handling (a run saves a
    resumable checkpoint); an unwritable or unreadable place -> one line, exit 1."""
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.signals import interrupt_exit_code, sigterm_as_interrupt

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except PdmpError as e:
            if _state["verbose"]:
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", interrupt_exit_code())
        except OSError as e:
            if _state["verbose"] or e.errno not in _PLACE_ERRNOS:
                raise
            fail(f"{e.filename or 'a file'}: {e.strerror}; choose a location you can write (or read)", 1)

    return wrapper


def overrides(**kwargs) -> dict:
    """CLI flags as a spec layer: options the user did not give are None and drop out."""
    return {k: v for k, v in kwargs.items() if v is not None}
