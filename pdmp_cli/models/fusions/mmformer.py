"""``mmformer``: mmFormer-style transformer fusion (Zhang et al., MICCAI 2022), the "mmFormer" row
of the paper's Table IV, adapted from segmentation to classification.

Per modality m (modality-owned):
    tokenizer      the ``--encoder``'s convolutional stages (``small``: its three conv blocks;
                   ``resnet18``: stem + layer1..4), a 4x4 adaptive average pool, then a 1x1 conv
                   to the token width D (mmFormer's ``encode_conv``): 16 tokens per frame
    pos_m          a learned position embedding, zero-initialised (mmFormer's ``*_pos``)
    intra_m        an intra-modal transformer over m's tokens (mmFormer's IntraFormer)
Shared (never scaled):
    inter          the inter-modal transformer over all modalities' tokens, concatenated, with the
                   concatenated position embeddings (mmFormer's InterFormer)
    classifier     LayerNorm, mean over all tokens, linear layer

Kept from YaoZhang93/mmFormer (``mmformer/mmformer.py``): pre-norm blocks (attention with a bias-
free qkv projection, dropout 0.1 on the attention weights, its output and the residual branch, as
there; then a GELU MLP), the position embedding added before every block, depth 1 for both
transformers, the MLP 8x the token width, ``MaskModal`` (a missing
modality's intra-modal tokens are zeros; its position embedding is still added). Changed: 3-D
volumes -> 2-D images or frame stacks (a clip's frames give T x 16 tokens, the frame's
position embedding repeated over T); mmFormer's own 5-level residual conv encoder -> the
``--encoder`` chosen for every other model, so fusions compare on the same encoders; the
segmentation decoders (and their skip connections) -> a pooled linear classifier; width 512 ->
64 with 4 heads, so it trains on the CPU presets in minutes; no random modality dropout and no
auxiliary per-modality losses during training (both are imbalance remedies of their own and
would confound the comparison with PDMP): the model trains on the fused loss like every other.

Branch logits (masking): ``masked(inputs, [m])`` runs m's tokenizer and intra-modal transformer
only; every other modality's tokens are zeros (MaskModal), then the shared inter-modal
transformer and classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdmp_cli.errors import PdmpError
from pdmp_cli.models.encoders import build_encoder
from pdmp_cli.models.encoders._frames import fold_frames
from pdmp_cli.models.fusions import register_model_fusion
from pdmp_cli.models.base import MaskedFusionModel

GRID = 4  # tokens per frame = GRID * GRID


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, N, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # attn_drop on the attention weights
        return F.dropout(self.proj(y.transpose(1, 2).reshape(b, n, d)), p, self.training)  # proj_drop


class Transformer(nn.Module):
    """mmFormer's ``Transformer``: per block, x += pos; x += drop(attn(LN x)); x += mlp(LN x)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm1": nn.LayerNorm(dim),
                    "attn": SelfAttention(dim, heads, dropout),
                    "drop": nn.Dropout(dropout),
                    "norm2": nn.LayerNorm(dim),
                    "mlp": nn.Sequential(
                        nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
                    ),
                }
            )
            for _ in range(depth)
        )

    def forward(self, x, pos):
        for blk in self.blocks:
            x = x + pos
            x = x + blk["drop"](blk["attn"](blk["norm1"](x)))
            x = x + blk["mlp"](blk["norm2"](x))
        return x


class Tokenizer(nn.Module):
    """The encoder's conv stages -> 4x4 grid -> 1x1 conv to D: (B, C, [T,] H, W) -> (B, T*16, D)."""

    def __init__(self, encoder: str, in_channels: int, dim: int):
        super().__init__()
        enc = build_encoder(encoder, in_channels)
        st = enc.stages() if hasattr(enc, "stages") else None  # the encoder's head is not used
        if st is None:
            raise PdmpError(
                f"--fusion mmformer tokenizes the encoders' convolutional stages, and encoder {encoder!r} "
                "exposes none; use --encoder small or resnet18",
                exit_code=2,
            )
        self.convs = nn.Sequential(st.stem, *st.blocks)
        self.pool = nn.AdaptiveAvgPool2d(GRID)
        self.proj = nn.Conv2d(st.channels[-1], dim, kernel_size=1)

    def forward(self, x):
        frames, t = fold_frames(x)
        y = self.proj(self.pool(self.convs(frames)))  # (B*T, D, 4, 4)
        return y.flatten(2).transpose(1, 2).reshape(-1, t * GRID * GRID, y.shape[1]), t  # (B, T*16, D)


class MMFormerModel(MaskedFusionModel):
    def __init__(self, encoder: str, in_channels: dict[str, int], num_classes: int,
                 dim: int = 64, heads: int = 4, depth: int = 1, mlp_ratio: int = 8):
        super().__init__()
        self.modalities = list(in_channels)
        self.tokenizers = nn.ModuleDict({m: Tokenizer(encoder, c, dim) for m, c in in_channels.items()})
        self.pos = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, GRID * GRID, dim)) for m in self.modalities})
        self.intra = nn.ModuleDict({m: Transformer(dim, depth, heads, dim * mlp_ratio) for m in self.modalities})
        self.inter = Transformer(dim, depth, heads, dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {
            m: [*self.tokenizers[m].parameters(), self.pos[m], *self.intra[m].parameters()] for m in self.modalities
        }

    def masked(self, inputs, keep):
        tokens, feats, frames = {}, {}, {}
        for m in self.modalities:
            if m in keep:
                x, frames[m] = self.tokenizers[m](inputs[m])
                tokens[m] = self.intra[m](x, self.pos[m].repeat(1, frames[m], 1))
                feats[m] = tokens[m].mean(dim=1)  # (B, D)
        ref = self.pos[self.modalities[0]]
        batch = next(iter(inputs.values())).shape[0]  # keep may be empty: f of no modality
        for m in self.modalities:  # MaskModal: a missing modality's tokens are zeros (as many; values unread)
            if m not in tokens:
                frames[m] = inputs[m].shape[2] if inputs[m].dim() == 5 else 1
                tokens[m] = ref.new_zeros(batch, frames[m] * GRID * GRID, ref.shape[2])
        pos = torch.cat([self.pos[m].repeat(1, frames[m], 1) for m in self.modalities], dim=1)
        x = self.inter(torch.cat([tokens[m] for m in self.modalities], dim=1), pos)
        return self.classifier(self.norm(x).mean(dim=1)), feats


@register_model_fusion("mmformer")
def build_mmformer(encoder: str, in_channels: dict[str, int], num_classes: int) -> MMFormerModel:
    return MMFormerModel(encoder, in_channels, num_classes)
