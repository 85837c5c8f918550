"""The package's layers point one way (issue 26): the import-linter contracts in pyproject.toml.

``[tool.importlinter]`` lists the layers (cli -> commands -> train -> specs -> methods ->
data/models -> core) and forbids import circles inside any package; imports inside functions
count too. A new upward import or circle fails here, with lint-imports naming the import.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = None
    if pythonpath is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([*LINT, "--no-cache", "--no-logo"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_layer_contracts_are_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout


def test_an_upward_import_or_a_circle_breaks_a_contract(tmp_path):
    """The contracts bite: a copy of the package with a method importing the loop (upward),
    data/base.py importing data/check.py (a circle inside data/) and the hooks' objects
    (train/state.py) importing the recipe's set-up (upward inside train/) fails, naming all three."""
    shutil.copytree(ROOT / "pdmp_cli", tmp_path / "pdmp_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "pdmp_cli" / "methods" / "vanilla.py", "a") as f:
        f.write("\n\ndef _upward():\n    from pdmp_cli.train import loop  # noqa: F401\n")
    with open(tmp_path / "pdmp_cli" / "data" / "base.py", "a") as f:
        f.write("\n\ndef _circle():\n    from pdmp_cli.data import check  # noqa: F401\n")
    with open(tmp_path / "pdmp_cli" / "train" / "state.py", "a") as f:
        f.write("\n\ndef _up():\n    from pdmp_cli.train import setup  # noqa: F401\n")
    r = _lint(tmp_path, pythonpath=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "0 kept, 3 broken" in r.stdout
    assert "pdmp_cli.methods.vanilla -> pdmp_cli.train.loop" in r.stdout
    assert "No cycles are allowed in pdmp_cli.data." in r.stdout
    assert "pdmp_cli.train.state -> pdmp_cli.train.setup" in r.stdout
