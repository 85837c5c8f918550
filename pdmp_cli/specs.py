"""Run specs: pydantic models for each command's options, and how they are resolved.

Precedence, lowest first: the model's defaults (the paper's settings) < the dataset
manifest's ``[defaults]`` < a spec file (TOML or JSON, ``--spec``) < command-line flags.
The resolved spec is saved beside every output.
"""

from __future__ import annotations

from pydantic import ValidationError

_OPS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _one(err) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "spec"
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind in _OPS:
        bound = next(iter(ctx.values()))
        return f"{loc} must be {_OPS[kind]} {bound}, got {value!r}"
    if kind == "extra_forbidden":
        return f"{loc} is not a known option; remove it or check its spelling"
    if kind == "missing":
        return f"{loc} is required"
    if kind == "literal_error":
        return f"{loc} must be one of {ctx.get('expected')}, got {value!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{loc}: {msg}, got {value!r}"


def format_validation_error(e: ValidationError) -> str:
    """All of a ValidationError's problems on one line: ``gamma_p must be > 0, got -1``."""
    return "; ".join(_one(err) for err in e.errors())
