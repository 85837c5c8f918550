"""``g-blending``: Gradient-Blending (Wang, Tran and Feiszli, CVPR 2020), online, as the
implementations the field uses compute it (no official code: timeseriesAI/tsai
``tsai/callback/gblend.py`` and BalanceBenchmark's ``GBlending_trainer.py``; docs/baselines.md).

The model gets one linear head per modality on its encoder features (method-owned), beside
the fused head. The loss is a weighted sum over the M unimodal heads and the fused one::

    L = sum_k w_k CE(logits_k, y),     sum_k w_k = 1

The weights are re-estimated at the start of every super-epoch (epochs 0, n, 2n, ...). For each
head k, a copy of the current model trains that head alone (its encoder and head; the fused
head: the whole model) with the run's SGD settings until the next super-epoch boundary; with
T and V its mean training and validation losses before (1) and after (2) that training::

    dG_k = max(0, V1_k - V2_k)                     generalisation gained
    dO_k = (V2_k - T2_k) - (V1_k - T1_k)           overfitting gained
    w_k  = max(1e-8, dG_k / max(1e-8, dO_k^2)),    then normalised to sum 1

T1, V1: the current model's losses on the training and validation splits (evaluation mode, both
read without augmentation); T2: the mean training loss of the copy's last epoch, trained on
augmented batches as the loop trains (as fastai's recorder reports it, unsmoothed here); V2: the
copy's validation loss after training. The copies are thrown away.

Choices (docs/training.md, "G-Blending"):

* **V is the validation split, never test.** BalanceBenchmark measures V on the test set when
  a dataset has no validation split (by reading); pdmp uses its validation split (the
  manifest's, else the stratified tenth carved from train: tsai's 10 % hold-out).
* Online with super-epoch 10 (BalanceBenchmark's setting); the first estimate happens at epoch 0.
  The estimation costs (M+1) x n extra epochs per super-epoch of n epochs.
* Evaluation predicts with the fused head (the paper's test-time model).
* Under DDP every rank trains the copies on the whole training split (identical results, no
  collectives); the weights are buffers, so ``--resume`` keeps them.
* Any N >= 2 modalities; needs a late fusion (one feature vector per modality for its head).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pdmp_cli.methods import Method, register_method
from pdmp_cli.methods._heads import late_fusion_shape, require_validation

FUSED = "fused"


def blend_weights(t1, v1, t2, v2) -> torch.Tensor:
    """w_k = max(1e-8, dG / max(1e-8, dO^2)), normalised; the four inputs are (K,) losses."""
    t1, v1, t2, v2 = (torch.as_tensor(x, dtype=torch.float64) for x in (t1, v1, t2, v2))
    d_g = torch.clamp(v1 - v2, min=0)
    d_o = (v2 - t2) - (v1 - t1)
    w = torch.clamp(torch.nan_to_num(d_g / torch.clamp(d_o**2, min=1e-8)), min=1e-8)
    return w / w.sum()


def branch_logits(model, heads: nn.ModuleDict, inputs: dict, branch: str, out=None) -> torch.Tensor:
    """The logits of head ``branch`` (a modality or ``"fused"``)."""
    if branch == FUSED:
        return (out or model(inputs, with_branches=False)).logits
    feats = out.features[branch] if out is not None else model.encoders[branch](inputs[branch])
    return heads[branch](feats)


@torch.no_grad()
def mean_losses(model, heads, batches, branches: list[str]) -> list[float]:
    """Each head's mean CE over ``batches`` (evaluation mode)."""
    was = model.training
    model.eval()
    total, n = torch.zeros(len(branches), dtype=torch.float64), 0
    for inputs, labels in batches:
        out = model(inputs, with_branches=False)
        for i, b in enumerate(branches):
            total[i] += F.cross_entropy(branch_logits(model, heads, inputs, b, out).float(), labels, reduction="sum").item()
        n += len(labels)
    model.train(was)
    return (total / max(n, 1)).tolist()


class GBlendingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    super_epoch: int = Field(10, ge=1, description="epochs between weight estimates (online G-Blending); BalanceBenchmark: 10",
                             json_schema_extra={"tune": [2, 5, 10, 20]})  # pdmp tune: BalanceBenchmark's 10; 20+ of 20 epochs: one estimate (offline-like)


@register_method("g-blending")
class GBlending(Method):
    Args = GBlendingArgs
    table_order = 10  # Table I: after the concat baseline
    in_paper_table = True

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        require_validation(spec, self.name, "its weights come from validation losses, never test")
        dims, num_classes = late_fusion_shape(model, self.name)
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})
        self.branches = [*self.modalities, FUSED]
        self.register_buffer("w", torch.full((len(self.branches),), 1.0 / len(self.branches)))

    def describe(self) -> str:
        return (f"G-Blending: CE of {len(self.modalities)} unimodal heads and the fused head, weights re-estimated "
                f"every {self.args.super_epoch} epochs from train/validation losses")  # fmt: skip

    def on_epoch_start(self, ctx) -> None:
        n = self.args.super_epoch
        if ctx.epoch % n:
            return
        epochs = min(n, ctx.spec.epochs - ctx.epoch)
        t1 = mean_losses(ctx.model, self.heads, ctx.batches("train"), self.branches)
        v1 = mean_losses(ctx.model, self.heads, ctx.batches("val"), self.branches)
        t2, v2 = [], []
        for k, branch in enumerate(self.branches):
            model, heads = copy.deepcopy(ctx.model), copy.deepcopy(self.heads)
            params = list(model.parameters()) if branch == FUSED else [*model.encoders[branch].parameters(), *heads[branch].parameters()]
            opt = torch.optim.SGD(params, lr=ctx.spec.lr, momentum=ctx.spec.momentum, weight_decay=ctx.spec.weight_decay)
            model.train()
            for e in range(epochs):
                total, steps = 0.0, 0
                # training the copy: the training split as the loop trains on it (augmented)
                for inputs, labels in ctx.batches("train", shuffle_seed=(ctx.spec.seed, ctx.epoch, k, e), view="augmented"):
                    loss = F.cross_entropy(branch_logits(model, heads, inputs, branch), labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, steps = total + loss.item(), steps + 1
            t2.append(total / max(steps, 1))
            v2.append(mean_losses(model, heads, ctx.batches("val"), [branch])[0])
        self.w.copy_(blend_weights(t1, v1, t2, v2).to(self.w))

    def forward_loss(self, model, inputs, labels, epoch, part):
        out = model(inputs, with_branches=False)
        w = self.w.to(out.logits.dtype)
        loss = sum(w[i] * F.cross_entropy(branch_logits(model, self.heads, inputs, b, out), labels)
                   for i, b in enumerate(self.branches))  # fmt: skip
        return out, loss
