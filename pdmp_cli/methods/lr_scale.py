"""``lr-scale``: every learning rate x gamma_p, no gradient modulation.

The paper's Table VII control: it shows PDMP's gain is not just a larger step size, since PDMP
scales only the encoders (and the non-dominant ones down when m_p != m_o), never the head.
"""

from pdmp_cli.methods import Method, register_method


@register_method("lr-scale")
class LRScale(Method):
    uses_gamma_p = True
    table_order = 90  # Table VII's control, just before PDMP (not a Table I row)

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        self.factor = float(spec.gamma_p)

    @classmethod
    def training_settings(cls, spec, profile):
        """A factor of 1 changes no learning rate: plain joint training (None)."""
        return None if float(spec.gamma_p) == 1.0 else {"method": cls.name, "factor": float(spec.gamma_p)}

    def describe(self) -> str:
        return f"no gradient modulation; every learning rate x{self.factor:g} (Table VII control)"

    def configure_optimizer(self, optimizer):
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * self.factor
