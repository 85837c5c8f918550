"""Sum fusion: f(x) = sum_m fc_m(z_m); each s_m = fc_m(z_m) exactly."""

from torch import nn

from pdmp_cli.models.fusions import Fusion, register_fusion


class SumFusion(Fusion):
    def __init__(self, dims: dict[str, int], num_classes: int):
        super().__init__()
        self.modalities = list(dims)
        self.fcs = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})

    def forward(self, feats):
        return sum(self.fcs[m](feats[m]) for m in self.modalities)

    def branch_logits(self, feats):
        return {m: self.fcs[m](feats[m]) for m in self.modalities}


@register_fusion("sum")
def build_sum(dims, num_classes):
    return SumFusion(dims, num_classes)
