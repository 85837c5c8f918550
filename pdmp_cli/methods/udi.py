"""``udi``: Unidirectional Dynamic Interaction (Wang et al., arXiv 2509.02281) -- an APPROXIMATION.

No code is released and the paper's exact formulas were not available to us, so this file
implements what its abstract and our notes (``docs/baselines.md``) establish, and marks every choice
it had to make with "CHOICE". ``pdmp report`` and docs/training.md label the method "approximation".

Established:

1. Stage 1: each modality is trained alone (no joint loss); the anchor is the modality with the
   best accuracy, ties broken by the lower predictive entropy ``H = -sum_c p_c log p_c``.
2. Stage 2: the anchor is frozen; each other modality (a follower) is trained without a joint
   loss, guided by the anchor's predictions through a consistency loss (Jensen-Shannon
   divergence), the interaction weighted by a dynamic mechanism.

CHOICES (not pinned down by what we could read):

* CHOICE unimodal classifiers: each modality has its own linear head on its encoder's features
  (the model's fusion head is not used), and the prediction is the sum of the unimodal logits:
  a late fusion with no extra parameters and no joint loss.
* CHOICE stage lengths: stage 1 takes ``anchor_epochs`` (default half the run), stage 2 the
  rest; "to convergence" is not measurable in a fixed budget.
* CHOICE all modalities train alone *at the same time* in stage 1: their losses are summed,
  which for disjoint parameters is the same gradient as separate runs.
* CHOICE anchor accuracy and entropy are measured on the held-out split (the dataset's
  validation split, else a stratified carve of the training data), never on the test split;
  "ties" are accuracies within ``tie_tolerance`` (default 0.01) of the best.
* CHOICE freezing: the anchor's parameters receive no gradient and no optimizer update (no
  weight decay, no momentum), and its BatchNorm statistics stop moving (evaluation mode).
* CHOICE follower loss: ``CE(s_f, y) + lambda_t * JS(softmax(s_f) || softmax(s_anchor))``, the
  supervised term kept so the follower still learns the labels; the paper's mutual-information
  "complementary" loss is left out (its formula was not available).
* CHOICE dynamic weight: ``lambda_t = relu(mean_i p_anchor(y_i) - mean_i p_f(y_i))`` per batch,
  the gap between the anchor's and the follower's confidence in the true class: the follower
  leans on the anchor while it lags behind and is left to its own supervised loss once it has
  caught up (the paper describes the mechanism as adapting to the modality gap).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pdmp_cli.errors import PdmpError
from pdmp_cli.methods import Method, register_method
from pdmp_cli.methods._heads import late_fusion_shape, require_validation

# --- the method's computations (pure functions, unit-tested by hand) ------------------------------


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``-sum_c p_c log p_c`` (nats)."""
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def choose_anchor(accuracy: dict[str, float], entropy: dict[str, float], tie_tolerance: float = 0.01) -> str:
    """The best-accuracy modality; among those within ``tie_tolerance`` of the best, the lowest
    entropy; a remaining tie goes to the first in the dataset's order."""
    best = max(accuracy.values())
    tied = [m for m in accuracy if accuracy[m] >= best - tie_tolerance]
    return min(tied, key=lambda m: entropy[m])  # min keeps the first of equal entropies


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Batch-mean Jensen-Shannon divergence between softmax(logits_p) and softmax(logits_q) (nats)."""
    logp, logq = torch.log_softmax(logits_p.float(), 1), torch.log_softmax(logits_q.float(), 1)
    logm = torch.logsumexp(torch.stack([logp, logq]), dim=0) - torch.log(torch.tensor(2.0))
    kl_pm = F.kl_div(logm, logp, reduction="batchmean", log_target=True)  # KL(P || M)
    kl_qm = F.kl_div(logm, logq, reduction="batchmean", log_target=True)  # KL(Q || M)
    return 0.5 * (kl_pm + kl_qm)


def consistency_weight(anchor_logits: torch.Tensor, follower_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``relu(mean p_anchor(y) - mean p_follower(y))``: the follower's lag behind the anchor (no grad)."""
    with torch.no_grad():
        pa = torch.softmax(anchor_logits.float(), 1).gather(1, labels[:, None]).mean()
        pf = torch.softmax(follower_logits.float(), 1).gather(1, labels[:, None]).mean()
        return torch.relu(pa - pf)


def follower_loss(follower_logits: torch.Tensor, anchor_logits: torch.Tensor, labels: torch.Tensor):
    """Stage 2 loss of one follower: ``CE + lambda_t * JS(follower || anchor)``, the anchor detached.

    Returns ``(loss, lambda_t)``.
    """
    anchor_logits = anchor_logits.detach()
    lam = consistency_weight(anchor_logits, follower_logits, labels)
    loss = F.cross_entropy(follower_logits, labels) + lam * js_divergence(follower_logits, anchor_logits)
    return loss, lam


# --- the registered method ------------------------------------------------------------------------


class UDIArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor_epochs: int | None = Field(
        None, gt=0, description="epochs of stage 1 (each modality alone); default half the run (CHOICE)"
    )
    tie_tolerance: float = Field(
        0.01, ge=0, le=1, description="accuracies within this of the best are a tie, broken by lower entropy (CHOICE)"
    )
    anchor: str | None = Field(None, description="force the anchor modality instead of choosing it after stage 1")


@register_method("udi")
class UDI(Method):
    """Approximation of UDI: modalities trained alone, then the best one frozen as the others' anchor."""

    Args = UDIArgs
    table_order = 80  # not in the paper's tables: after D&R
    approximation = True  # no reference code: `pdmp report` and docs/training.md say so
    find_unused_parameters = True  # the model's fusion head is not used; in stage 2 the anchor gets no gradient

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        dims, num_classes = late_fusion_shape(model, self.name)
        if self.args.anchor is None:
            require_validation(spec, self.name, "the anchor is chosen on it; or set udi.anchor")
        if self.args.anchor is not None and self.args.anchor not in self.modalities:
            raise PdmpError(
                f"udi.anchor {self.args.anchor!r} is not a modality of this dataset; choose one of "
                f"{', '.join(self.modalities)} or leave it unset",
                exit_code=2,
            )
        epochs = spec.epochs if spec else 2
        self.stage1 = self.args.anchor_epochs or max(1, epochs // 2)
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})  # unimodal classifiers
        self.params = model.modality_parameters()
        self.anchor: str | None = None  # None: stage 1 (a plain attribute: no device sync per step)
        self.choice: dict = {}  # the anchor choice's validation accuracy and entropy per modality

    def get_extra_state(self):  # saved with the method: a resumed run stays in its stage
        return {"anchor": self.anchor, "choice": self.choice}

    def set_extra_state(self, state) -> None:
        self.anchor, self.choice = state["anchor"], state["choice"]

    def describe(self) -> str:
        how = f"anchor {self.args.anchor} (forced)" if self.args.anchor else "anchor = best validation accuracy"
        return (
            f"UDI (approximation, no reference code): epochs 1-{self.stage1} each modality alone, then {how} frozen "
            "and the others trained with CE + lambda_t * JS to its predictions"
        )

    def on_epoch_start(self, ctx) -> None:
        if ctx.epoch < self.stage1 or self.anchor is not None:
            return
        if self.args.anchor is not None:
            self.anchor = self.args.anchor
            return
        feats, labels = ctx.features("val")  # never the test split
        with torch.no_grad():
            logits = {m: self.heads[m](feats[m].to(self.heads[m].weight.device)) for m in self.modalities}
            labels = labels.to(self.heads[self.modalities[0]].weight.device)
            acc = {m: (s.argmax(1) == labels).float().mean().item() for m, s in logits.items()}
            ent = {m: predictive_entropy(s).item() for m, s in logits.items()}
        chosen = choose_anchor(acc, ent, self.args.tie_tolerance)
        self.choice = {"accuracy": acc, "entropy": ent, "anchor": chosen}
        self.anchor = chosen

    def _anchor_norms(self, model) -> list[nn.Module]:
        """The BatchNorm layers of the anchor's own parameters: kept in evaluation mode in stage 2."""
        own = {id(p) for p in self.params[self.anchor]}
        return [
            mod for mod in model.modules()
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and any(id(p) in own for p in mod.parameters())
        ]  # fmt: skip

    def forward_loss(self, model, inputs, labels, epoch, part):
        anchor = self.anchor
        if anchor is None:  # stage 1: every modality alone (disjoint parameters: a sum of separate losses)
            out = model(inputs, with_branches=False)
            loss = sum(F.cross_entropy(self.heads[m](out.features[m]), labels) for m in self.modalities)
            return out, loss
        frozen = self._anchor_norms(model) if model.training else []
        for bn in frozen:
            bn.eval()  # the frozen anchor predicts as it would at evaluation; its statistics stay put
        try:
            out = model(inputs, with_branches=False)
        finally:
            for bn in frozen:
                bn.train(model.training)
        target = self.heads[anchor](out.features[anchor]).detach()
        loss = sum(
            follower_loss(self.heads[m](out.features[m]), target, labels)[0] for m in self.modalities if m != anchor
        )
        return out, loss

    def after_backward(self, out, labels, epoch):
        if self.anchor is not None:  # no gradient, so SGD leaves the anchor alone (no decay, no momentum)
            for p in [*self.params[self.anchor], *self.heads[self.anchor].parameters()]:
                p.grad = None
        return self.gamma

    def predict(self, out):
        logits = {m: self.heads[m](out.features[m]) for m in self.modalities}
        # CHOICE: the unimodal logits summed (late fusion, no extra parameters); branch accuracy =
        # each modality's own classifier
        return dataclasses.replace(out, logits=sum(logits.values()), branch_logits=logits)
