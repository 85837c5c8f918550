"""Entry point: ``pdmp`` and ``python -m pdmp_cli``. Importing a command module registers it."""

import importlib
import pkgutil

import pdmp_cli.cli as _pkg
from pdmp_cli.cli._app import app

for _m in pkgutil.iter_modules(_pkg.__path__):
    if not _m.name.startswith("_") and _m.name != "app":
        importlib.import_module(f"{_pkg.__name__}.{_m.name}")


def main() -> None:
    app()
