"""The process's two rich consoles: ``console`` (stdout: results) and ``err_console`` (stderr:
progress, warnings, errors).

The CLI prints through them (``pdmp_cli.cli._app`` re-exports both), and library code that draws a
progress bar for a command (``pdmp datasets check``, ``pdmp prepare``) uses the same ``err_console``
without importing the CLI.
"""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
