"""``vanilla``: plain joint training, no modulation (the paper's "concat" baseline rows)."""

from pdmp_cli.methods import Method, register_method


@register_method("vanilla")
class Vanilla(Method):
    pass
