"""The one exception library code raises for a user mistake.

The CLI turns it into a single line and a non-zero exit; Python callers can catch it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class PdmpError(Exception):
    """A user-facing error: the message names the cause and the fix.

    ``exit_code`` is 2 for a bad value or option (as for a usage error), 1 otherwise.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


_OPS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def format_error(err) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as a phrase: ``gamma_p must be > 0, got -1``."""
    loc = ".".join(str(p) for p in err["loc"])
    if not loc:  # a check across fields: its message names them
        return err["msg"].removeprefix("Value error, ")
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind in _OPS:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{loc} must be {_OPS[kind]} {bound}, got {value!r}"
    if kind == "extra_forbidden":
        return f"{loc} is not a known option; remove it or check its spelling"
    if kind == "missing":
        return f"{loc} is required"
    if kind == "finite_number":
        return f"{loc} must be a finite number, got {value!r}"
    if kind == "literal_error":
        return f"{loc} must be one of {ctx.get('expected')}, got {value!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "got " in msg:
        return f"{loc}: {msg}"
    return f"{loc}: {msg}, got {value!r}"


def format_validation_error(e: "ValidationError") -> str:
    """All of a ValidationError's problems on one line: ``gamma_p must be > 0, got -1``."""
    return "; ".join(format_error(err) for err in e.errors())
