"""``dr``: Diagnosing and Re-learning (Wei et al., ECCV 2024), as its reference code
(GeWu-Lab/Diagnosing_Relearning_ECCV2024, 025085e: ``code/ours.py``, ``code/script/ours.sh``) does it.

Training is plain fused cross-entropy. Each encoder's weights are saved at initialisation.
After epoch e (0-based) with ``e % reinit_epoch == 0`` and ``e > 0``, up to ``reinit_num``
times, for every modality m:

    features of encoder m on the training data and on a held-out split
    MinMax-scale each set to [-1, 1]; KMeans with k = number of classes (random_state 0)
    purity = share of samples whose cluster's majority label is their label
    gap_m = |purity_train - purity_heldout|;   w_m = tanh(lambda * gap_m)
    every parameter of encoder m:  theta <- w_m * theta_init + (1 - w_m) * theta

A modality whose representation fits the training data much better than unseen data (a large
purity gap: it is over-trained) is pulled back towards its initialisation the most. Running
BatchNorm statistics are buffers, not parameters, and the optimizer's momentum is kept: the
reference re-initialises neither, and neither do we. lambda 3, reinit_num 3 (``ours.sh``).

Choices (docs/training.md, "D&R"):

* **Held-out split, never the test split.** The reference reads a ``val.csv`` carved from
  CREMA-D's training list (and trains on the rest, ``my_train``). We use the dataset's own
  validation split, else a stratified seeded split carved from the training data
  (:mod:`pdmp_cli.data.split`, recorded in the run directory). The reference also picks its
  best checkpoint on the test set; here the loop's rules apply.
* **Schedule scaled to the run.** ``ours.sh`` re-initialises every 20 of 90 epochs. The default
  ``reinit_epoch`` is ``max(1, round(epochs * 20 / 90))`` (4 of the synthetic presets' 20), so
  a shorter run still gets its re-learning steps; set ``reinit_epoch`` to pin it.
* **Features without augmentation, in dataset order.** The reference extracts training
  features through its shuffled, augmenting training loader; we use the evaluation transform.
* **KMeans ``n_init=10``**: the scikit-learn default in the reference's time (today's default,
  ``"auto"``, runs k-means++ once).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from pdmp_cli.methods import Method, register_method
from pdmp_cli.methods._heads import require_validation

# --- the method's computations (pure functions, unit-tested by hand) ------------------------------


def purity(labels, clusters) -> float:
    """Share of samples whose cluster's majority label equals their own (the reference's purity_score)."""
    from sklearn.metrics.cluster import contingency_matrix  # scikit-learn loads only when D&R runs

    table = contingency_matrix(np.asarray(labels), np.asarray(clusters))  # (labels, clusters)
    return float(table.max(axis=0).sum() / table.sum())


def cluster_purity(features: np.ndarray, labels, num_classes: int, seed: int = 0) -> float:
    """Purity of KMeans (k = classes) on features MinMax-scaled to [-1, 1], as the reference does."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import MinMaxScaler

    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(np.asarray(features, dtype=np.float64))
    clusters = KMeans(n_clusters=num_classes, random_state=seed, n_init=10).fit_predict(x)
    return purity(labels, clusters)


def reinit_weight(purity_train: float, purity_heldout: float, lam: float) -> float:
    """``w = tanh(lambda * |purity_train - purity_heldout|)``: how far back to the initial weights."""
    return math.tanh(lam * abs(purity_train - purity_heldout))


@torch.no_grad()
def blend_(params: list[torch.nn.Parameter], initial: list[torch.Tensor], w: float) -> None:
    """``theta <- w * theta_init + (1 - w) * theta`` in place, for parameters only (no buffers)."""
    for p, p0 in zip(params, initial, strict=True):
        p.mul_(1.0 - w).add_(p0.to(p.device, p.dtype), alpha=w)


def default_reinit_epoch(epochs: int) -> int:
    """The reference's 20-of-90-epochs period, scaled to a run of ``epochs`` epochs."""
    return max(1, round(epochs * 20 / 90))


def reinit_due(epoch: int, reinit_epoch: int, done: int, reinit_num: int) -> bool:
    """Whether to re-initialise after 0-based ``epoch``, ``done`` re-initialisations so far."""
    return epoch > 0 and epoch % reinit_epoch == 0 and done < reinit_num


# --- the registered method ------------------------------------------------------------------------


class DRArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    move_lambda: float = Field(3.0, gt=0, description="lambda of w = tanh(lambda * purity gap) (reference: 3)",
                               json_schema_extra={"tune": [0.5, 1.0, 2.0, 3.0, 6.0, 12.0]})  # pdmp tune: around the reference's 3
    reinit_epoch: int | None = Field(
        None, gt=0, description="re-initialise after every this many epochs (default: 20 of 90, scaled to --epochs)"
    )
    reinit_num: int = Field(3, ge=0, description="at most this many re-initialisations (reference: 3)")


@register_method("dr")
class DR(Method):
    """Plain fused training; every few epochs each encoder is blended back towards its initial weights."""

    Args = DRArgs
    table_order = 70  # Table I: after MLA, before PDMP
    in_paper_table = True

    def __init__(self, model, spec, profile):
        super().__init__(model, spec, profile)
        require_validation(spec, self.name, "the purity gap compares training and held-out features")
        self.params = model.modality_parameters()
        self.period = self.args.reinit_epoch or default_reinit_epoch(spec.epochs if spec else 90)
        # the initial weights, as buffers: saved with the method, so a resumed run blends towards them
        for i, (m, ps) in enumerate(self.params.items()):
            for j, p in enumerate(ps):
                self.register_buffer(f"init_{i}_{j}", p.detach().clone())
        self.register_buffer("done", torch.zeros((), dtype=torch.long))  # re-initialisations so far
        self.last: dict[str, dict[str, float]] = {}  # the last re-initialisation's purities and weights

    def _initial(self, i: int, n: int) -> list[torch.Tensor]:
        return [getattr(self, f"init_{i}_{j}") for j in range(n)]

    def describe(self) -> str:
        a = self.args
        return (
            f"D&R: after every {self.period} epochs (at most {a.reinit_num} times), each encoder blended towards its "
            f"initial weights by tanh({a.move_lambda:g} x |purity(train) - purity(val)|)"
        )

    def on_epoch_start(self, ctx) -> None:
        # the reference re-initialises after epoch e when e % reinit_epoch == 0 and e > 0: here,
        # before epoch e + 1 starts (the same point; it also runs after a resume at that boundary)
        if not reinit_due(ctx.epoch - 1, self.period, int(self.done), self.args.reinit_num):
            return
        num_classes = ctx.bundle.num_classes
        train_feats, train_y = ctx.features("train")
        val_feats, val_y = ctx.features("val")
        self.last = {}
        for i, m in enumerate(self.modalities):
            p_train = cluster_purity(train_feats[m].cpu().numpy(), train_y.cpu().numpy(), num_classes)
            p_val = cluster_purity(val_feats[m].cpu().numpy(), val_y.cpu().numpy(), num_classes)
            w = reinit_weight(p_train, p_val, self.args.move_lambda)
            blend_(self.params[m], self._initial(i, len(self.params[m])), w)
            self.last[m] = {"purity_train": p_train, "purity_val": p_val, "weight": w}
        self.done += 1
