"""The CLI shell: help everywhere, fast start, python -m, one-line errors."""

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pdmp_cli.cli.app import app

runner = CliRunner()


def _command_paths(group: typer.Typer, prefix=()):
    for c in group.registered_commands:
        yield prefix + (c.name or c.callback.__name__.replace("_", "-"),)
    for g in group.registered_groups:
        yield prefix + (g.name,)
        yield from _command_paths(g.typer_instance, prefix + (g.name,))


def test_root_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "performance-dominant" in result.output.lower()


@pytest.mark.parametrize("path", list(_command_paths(app)), ids=" ".join)
def test_every_command_explains_itself(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_does_not_import_torch():
    code = "import sys; from pdmp_cli.cli.app import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_runs_the_app():
    out = subprocess.run([sys.executable, "-m", "pdmp_cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Usage" in out.stdout
