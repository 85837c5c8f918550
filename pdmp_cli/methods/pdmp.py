"""``pdmp``: Eq. 10-12 on the encoders' gradients, via the plug-in :class:`PDMPModulator`.

The performance-dominant modality's encoder gradients are multiplied by gamma_p; every other
encoder's by gamma_r = 1/gamma_p when m_p != m_o, else gamma_p. The fusion and head are left
alone (that is what separates PDMP from a larger learning rate: Table VII).

With three or more modalities, ``pdmp.others`` chooses the reading of Eq. 12 for a modality that
is neither m_p nor m_o (:mod:`pdmp_cli.modulation`): ``gamma_r`` (default: every remaining
modality x gamma_r), ``one`` (only m_o is slowed, the others x1) or ``gamma_p``.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import Method, register_method
from pdmp_cli.modulation import PDMPModulator


class PDMPArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    others: Literal["gamma_r", "one", "gamma_p"] = Field(
        "gamma_r",
        description="3+ modalities, m_p != m_o: the factor of a modality that is neither m_p nor m_o "
        "(gamma_r = 1/gamma_p, the default reading of Eq. 12; one: only m_o is slowed; gamma_p)",
    )


@register_method("pdmp")
class PDMP(Method):
    Args = PDMPArgs
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
        self.modulator = PDMPModulator(model.modality_parameters(), spec.gamma_p, profile=profile, others=self.args.others)
        self.gamma = dict(self.modulator.gammas)

    def describe(self) -> str:
        return "gradient factors " + self.modulator.describe()

    @classmethod
    def training_settings(cls, spec, profile):
        """The factor per modality (Eq. 12), not gamma_p and m_o: with gamma_p 1 every factor is 1
        whichever modality is m_o, which trains as vanilla (None)."""
        from pdmp_cli.modulation import resolve_gammas

        if profile.optimization_dominant is None:
            return {"method": cls.name, "gamma_p": float(spec.gamma_p), "m_o": None}
        others = cls.Args.model_validate(((getattr(spec, "method_args", None) or {}).get(cls.name)) or {}).others
        gammas = resolve_gammas(
            list(profile.modalities), profile.performance_dominant, profile.optimization_dominant, spec.gamma_p, others
        )
        return None if all(g == 1.0 for g in gammas.values()) else {"method": cls.name, "gamma": gammas}

    def after_backward(self, out, labels, epoch):
        self.modulator.apply()  # Eq. 10-11, in place on every encoder parameter's .grad
        return self.gamma
