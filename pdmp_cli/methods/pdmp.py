"""``pdmp``: Eq. 10-12 on the encoders' gradients, via the plug-in :class:`PDMPModulator`.

The performance-dominant modality's encoder gradients are multiplied by gamma_p; every other
encoder's by gamma_r = 1/gamma_p when m_p != m_o, else gamma_p. The fusion and head are left
alone (that is what separates PDMP from a larger learning rate: Table VII).
"""

from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import Method, register_method
from pdmp_cli.modulation import PDMPModulator


@register_method("pdmp")
class PDMP(Method):
    uses_gamma_p = True
    uses_optimization_dominant = True  # gamma_r by Eq. 12
    table_order = 100  # last, as in the paper's tables
    in_paper_table = True

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        if profile.optimization_dominant is None:
            raise PdmpError(
                f"profile {spec.profile} leaves optimization_dominant null (the paper does not state it "
                f"for {profile.dataset}), and PDMP's gamma_r (Eq. 12) depends on it: set it in the profile "
                "by hand or measure it with `pdmp analyze`; --method vanilla, ogm-ge and lr-scale do not need it",
                exit_code=2,
            )
        self.modulator = PDMPModulator(model.modality_parameters(), spec.gamma_p, profile=profile)
        self.gamma = dict(self.modulator.gammas)

    def describe(self) -> str:
        return "gradient factors " + self.modulator.describe()

    def after_backward(self, out, labels, epoch):
        self.modulator.apply()  # Eq. 10-11, in place on every encoder parameter's .grad
        return self.gamma
