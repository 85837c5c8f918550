"""Only the package list, which pyproject.toml cannot express: every code package under
``pdmp_cli/`` (found, so a new one is never forgotten) plus the two resource packages that
``[tool.setuptools] package-dir`` maps onto ``data_manifests/`` and ``profiles/``. Everything
else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["pdmp_cli", "pdmp_cli.*"]) + ["pdmp_cli._manifests", "pdmp_cli._profiles"])
