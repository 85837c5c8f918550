"""``vanilla``: plain joint training, no modulation (the paper's "concat" baseline rows)."""

from pdmp_cli.methods import Method, register_method


@register_method("vanilla")
class Vanilla(Method):
    table_order = 0  # the paper's "Concatenation" row: first
    in_paper_table = True

    @classmethod
    def training_settings(cls, spec, profile):
        return None  # plain joint training itself
