"""Dataset loaders, one file each, registered by name (the manifest's ``loader`` key)."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
