"""``se``: squeeze-and-excitation fusion between encoder stages (MMTM, Joze et al., CVPR 2020), the
"SE-Fusion" row of the paper's Table IV.

One encoder per modality (``--encoder``: ``small`` or ``resnet18``), run stage by stage. After a
stage, an MMTM block (one per position) couples the streams:

    S_m = mean over (T, H, W) of stream m              (B, C_m)    squeeze each stream
    Z   = ReLU(W_s [S_1; ...; S_M] + b_s)              (B, H)      shared squeeze layer, H = 2 sum C_m / 4
    E_m = sigmoid(W_m Z + b_m)                         (B, C_m)    one excitation layer per modality
    stream m <- stream m * E_m                                     channel-wise gating

then each stream's own head (pool, and for ``small`` its linear layer) gives z_m, and one shared
linear classifier reads [z_1; ...; z_M].

Follows the MMTM code of nyukat/greedy_multimodal_learning (``src/balanced_mmtm.py``,
``src/model.py``): blocks after stages 2..L, none after the first (ResNet-18: after layer2,
layer3, layer4; ``small``: after its 2nd and 3rd conv blocks), squeeze ratio 4, hidden size
``int(2 * sum C / ratio)``. Generalised from two streams to any M >= 2 (one excitation layer per
modality). Deliberate change: that code gives each stream its own fc head and averages the two
logits; here one shared linear head reads the concatenated features, as in the ``concat`` fusion,
so the head is shared (never scaled by PDMP) exactly as in the late-fusion models. The paper's
reference [49] (CASIA-SURF) describes an SE block per modality before concatenation, with no
shared squeeze; we follow MMTM, whose squeeze is what makes the fusion happen inside the encoders.

Modality-owned parameters (scaled by PDMP, OGM-GE): encoder m and every MMTM block's excitation
layer W_m, b_m (it gates stream m only). Shared: the squeeze layers W_s, b_s and the classifier.

Branch logits (masking): ``masked(inputs, keep)`` computes only the kept streams; a dropped
stream is zeros everywhere: its squeeze S_m is 0 and its features z_m are 0. So s_m =
``masked(inputs, [m])`` reads input m only, and the M branch passes together cost about one
full forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from pdmp_cli.errors import PdmpError
from pdmp_cli.models.encoders import build_encoder
from pdmp_cli.models.encoders._frames import fold_frames
from pdmp_cli.models.fusions import register_model_fusion
from pdmp_cli.models.base import MaskedFusionModel


class MMTM(nn.Module):
    """One multimodal transfer module: shared squeeze, one excitation per modality."""

    def __init__(self, channels: dict[str, int], ratio: int = 4):
        super().__init__()
        hidden = int(2 * sum(channels.values()) / ratio)
        self.channels = dict(channels)
        self.squeeze = nn.Linear(sum(channels.values()), hidden)
        self.excite = nn.ModuleDict({m: nn.Linear(hidden, c) for m, c in channels.items()})

    def forward(self, pooled: dict[str, torch.Tensor | None], batch: int, ref: torch.Tensor) -> dict[str, torch.Tensor]:
        """{m: (B, C_m) squeezed stream, or None when m is masked} -> {m: (B, C_m) gate} for the present m.

        ``ref``: any tensor on the model's device (the zeros of masked streams are made like it)."""
        s = [pooled[m] if pooled[m] is not None else ref.new_zeros(batch, c) for m, c in self.channels.items()]
        z = torch.relu(self.squeeze(torch.cat(s, dim=1)))
        return {m: torch.sigmoid(self.excite[m](z)) for m, v in pooled.items() if v is not None}


class SEFusionModel(MaskedFusionModel):
    def __init__(self, encoder: str, in_channels: dict[str, int], num_classes: int, ratio: int = 4):
        super().__init__()
        self.modalities = list(in_channels)
        self.encoders = nn.ModuleDict({m: build_encoder(encoder, c) for m, c in in_channels.items()})
        stages = {m: enc.stages() if hasattr(enc, "stages") else None for m, enc in self.encoders.items()}
        if any(s is None for s in stages.values()):
            raise PdmpError(
                f"--fusion se gates the encoders between their stages, and encoder {encoder!r} exposes none; "
                "use --encoder small or resnet18",
                exit_code=2,
            )
        self._stages = stages  # views onto the encoders' own modules (not registered twice)
        n_blocks = len(next(iter(stages.values())).blocks)
        self.positions = list(range(1, n_blocks))  # after stages 2..L (MMTM's reference code)
        self.mmtm = nn.ModuleList(
            MMTM({m: s.channels[i] for m, s in stages.items()}, ratio) for i in self.positions
        )
        self.head = nn.Linear(sum(e.out_dim for e in self.encoders.values()), num_classes)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {
            m: [*self.encoders[m].parameters(), *(p for b in self.mmtm for p in b.excite[m].parameters())]
            for m in self.modalities
        }

    def masked(self, inputs, keep):
        kept = [m for m in self.modalities if m in keep]
        h, frames = {}, {}
        for m in kept:
            h[m], frames[m] = fold_frames(inputs[m])  # (B*T, C, H, W), T
            h[m] = self._stages[m].stem(h[m])
        ref = next(iter(inputs.values()))  # batch size and device only (keep may be empty: f of no modality)
        batch = ref.shape[0]
        gates = iter(self.mmtm)
        for i in range(len(self.positions) + 1):
            h = {m: self._stages[m].blocks[i](x) for m, x in h.items()}
            if i not in self.positions:
                continue
            pooled = {m: (h[m].reshape(batch, frames[m], h[m].shape[1], -1).mean(dim=(1, 3)) if m in h else None)
                      for m in self.modalities}
            for m, e in next(gates)(pooled, batch, ref).items():  # (B, C_m) -> every frame of clip b gets gate b
                e = e if frames[m] == 1 else e.repeat_interleave(frames[m], dim=0)
                h[m] = h[m] * e[:, :, None, None]
        feats = {}
        for m, x in h.items():
            z = self._stages[m].head(x)  # (B*T, D)
            feats[m] = z if frames[m] == 1 else z.view(batch, frames[m], -1).mean(dim=1)  # (B, D)
        cat = [feats[m] if m in feats else ref.new_zeros(batch, self.encoders[m].out_dim) for m in self.modalities]
        return self.head(torch.cat(cat, dim=1)), feats


@register_model_fusion("se")
def build_se(encoder: str, in_channels: dict[str, int], num_classes: int) -> SEFusionModel:
    return SEFusionModel(encoder, in_channels, num_classes)
