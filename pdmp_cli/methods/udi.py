"""``udi``: Unidirectional Dynamic Interaction (Wang et al., arXiv 2509.02281) -- an APPROXIMATION.

No code is released and the paper's exact formulas were not available to us, so this file
implements what its abstract and our notes (``BASELINES.md``) establish, and marks every choice
it had to make with "CHOICE". ``pdmp report`` and the README label the method "approximation".

Established:

1. Stage 1: each modality is trained alone (no joint loss); the anchor is the modality with the
   best accuracy, ties broken by the lower predictive entropy ``H = -sum_c p_c log p_c``.
2. Stage 2: the anchor is frozen; each other modality (a follower) is trained without a joint
   loss, guided by the anchor's predictions through a consistency loss (Jensen-Shannon
   divergence), the interaction weighted by a dynamic mechanism.

CHOICES (not pinned down by what we could read):

* CHOICE unimodal classifiers: modality m's own logits are the model's branch logits s_m (the
  exact split of a concat or sum head; a masked forward otherwise), so the trained model
  predicts with its usual fused output and needs no extra head.
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

import torch
import torch.nn.functional as F

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
