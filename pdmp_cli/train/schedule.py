"""Learning-rate schedules of ``pdmp train`` (``--lr-schedule none|step|cosine``), per epoch.

``none`` is the paper's setting (a constant SGD learning rate) and the default. ``step`` is
PyTorch's ``StepLR``: the lr is multiplied by ``lr_step_gamma`` every ``lr_step_size`` epochs
(OGM-GE's reference code: every 70 epochs by 0.1, the defaults). ``cosine`` is
``CosineAnnealingLR``: from the lr down to ``lr_min`` over ``lr_cosine_epochs`` (fixed to the
run's epochs when the run starts, so a resume that adds epochs keeps the curve); after those
epochs the lr stays at ``lr_min`` (PyTorch's cosine would rise again).

The scheduler steps once after each finished epoch; ``metrics.jsonl``'s ``lr`` is the lr the
epoch trained with. Its state is in ``checkpoints/last.pt`` (key ``lr_schedule``), so a
resumed run continues the schedule exactly; the settings are in the run's ``spec.json``.
The lr-scale method multiplies the lr before the schedule starts, so the schedule scales it.
"""

from __future__ import annotations

import torch


class LRSchedule:
    """The spec's schedule on ``optimizer`` (a no-op for ``none``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec):
        self.kind = spec.lr_schedule
        self.sched: torch.optim.lr_scheduler.LRScheduler | None = None
        self.limit: int | None = None
        if self.kind == "step":
            self.sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.lr_step_size, gamma=spec.lr_step_gamma)
        elif self.kind == "cosine":
            self.limit = spec.lr_cosine_epochs or spec.epochs
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.limit, eta_min=spec.lr_min)

    def step(self) -> None:
        """After an epoch: the next epoch's lr."""
        if self.sched is None or (self.limit is not None and self.sched.last_epoch >= self.limit):
            return
        self.sched.step()

    def state_dict(self) -> dict | None:
        return self.sched.state_dict() if self.sched is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore after the optimizer's state (whose param groups hold the current lr)."""
        if self.sched is not None and state is not None:
            self.sched.load_state_dict(state)

    def describe(self, spec) -> str:
        if self.kind == "step":
            return f"lr schedule step: x{spec.lr_step_gamma:g} every {spec.lr_step_size} epochs"
        if self.kind == "cosine":
            return f"lr schedule cosine: to {spec.lr_min:g} over {self.limit} epochs"
        return "lr schedule none (constant, the paper's)"
