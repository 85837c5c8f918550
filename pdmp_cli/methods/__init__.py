"""Training methods, registered by name (timm-style): PDMP and the baselines it is compared with.

A method is a small object the training loop consults at two points, so every method runs in
the same loop with the same data, model, optimizer and metrics (honest comparisons)::

    method = build_method(spec.method, model, spec, profile)
    optimizer = SGD(model.parameters(), lr=spec.lr, ...)
    method.configure_optimizer(optimizer)              # lr-scale: every lr x gamma_p (Table VII)
    ...
    loss.backward()
    gamma = method.after_backward(out, labels, epoch)  # modulate encoder grads in place
    optimizer.step()

Adding a method is adding one file in this folder with ``@register_method("name")`` (and the
name in :class:`pdmp_cli.specs.TrainSpec`'s ``method`` choices).
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from pdmp_cli.registry import Registry

METHODS: Registry = Registry("method")
register_method = METHODS.register


class Method:
    """No modulation. Methods override the hooks they need.

    ``gamma``: the nominal gradient factor per encoder (printed at the start, saved in
    summary.json). ``needs_branch_logits``: whether ``after_backward`` reads ``out.branch_logits``
    (the loop then computes them during training too).
    """

    needs_branch_logits = False

    def __init__(self, model, spec, profile):
        self.modalities = list(model.encoders)
        self.encoders = dict(model.encoders.items())
        self.gamma = {m: 1.0 for m in self.modalities}

    def describe(self) -> str:
        return "no gradient modulation"

    def configure_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called once after the optimizer is built (before a checkpoint is restored)."""

    def after_backward(self, out, labels: torch.Tensor, epoch: int) -> dict[str, float | torch.Tensor]:
        """Modulate the encoders' ``.grad`` in place; return the factor applied to each modality.

        ``out`` is the model's output (``logits``, ``branch_logits``), ``epoch`` is 0-based.
        A factor may be a 0-dim tensor, so no device sync is needed.
        """
        return self.gamma


def build_method(name: str, model, spec, profile) -> Method:
    """The method ``name`` for ``model``; unknown names list the valid ones."""
    return METHODS.get(name)(model, spec, profile)


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
