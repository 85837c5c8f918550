"""Is the model still a model? Non-finite weights, buffers and gradients, and what to try instead.

The loop watches the loss every ``CHECK_EVERY`` steps, but a loss can stay finite while the model
has blown up: with a huge γp the modulated encoder's weights grow to ~1e13 and its BatchNorm
running variances overflow to ``inf`` (training normalises with batch statistics, so the loss
does not notice; evaluation uses the running ones, and that branch sits at chance). So, once per
epoch and before any checkpoint is written, :func:`blown_up` looks at

- every floating-point parameter and buffer (the sum of each tensor, stacked: one device sync
  per epoch, never one per step; measured 0.3 ms for the ``small`` model, ~60 ms for two
  ResNet-18 encoders (22 M parameters) on one busy CPU thread: a CPU epoch of those takes
  minutes), and
- the encoder gradient norms the loop already computes every step (``EpochStats.norm_steps``
  counts the steps whose norms were all finite; read once at epoch end). fp16 is exempt: there
  a non-finite gradient is the GradScaler's signal to skip the step, and the weights stay as
  they were.

A run where either check fails is ``diverged``: its message names what blew up and what to try
(:func:`remedy`), and no checkpoint of that state is ever written.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from pdmp_cli import distributed, rundir

SHOWN = 3  # tensor names shown in a message


def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers holding a nan or inf (one device sync)."""
    named = [
        (n, t)
        for n, t in itertools.chain(model.named_parameters(), model.named_buffers())
        if t.is_floating_point()
    ]
    if not named:
        return []
    with torch.no_grad():
        # a sum is inf/nan when any element is (one read of each tensor, no temporaries: ~10x
        # faster than isfinite(t).all()); only then is each tensor looked at element by element,
        # which also clears a sum that overflowed from finite values
        if bool(torch.isfinite(torch.stack([t.sum(dtype=torch.float32) for _, t in named])).all()):
            return []
        ok = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu()
    return [n for (n, _), good in zip(named, ok.tolist()) if not good]


def nonfinite_grad_steps(stats, precision_kind: str) -> int:
    """Steps of this epoch whose encoder gradient norms were not all finite (0 under fp16)."""
    if precision_kind == "fp16" or stats.steps == 0:
        return 0
    return max(0, stats.steps - round(float(stats.norm_steps.item())))


def blown_up(model: torch.nn.Module, stats, precision_kind: str) -> str | None:
    """What is non-finite after this epoch's steps, as a phrase, or None when all is finite.

    Under DDP every rank calls it at the same point (one collective), and all get the same answer.
    """
    tensors = nonfinite_tensors(model)
    grads = nonfinite_grad_steps(stats, precision_kind)
    if not distributed.any_rank(bool(tensors or grads)):
        return None
    parts = []
    if tensors:
        more = f" and {len(tensors) - SHOWN} more" if len(tensors) > SHOWN else ""
        parts.append(f"the weights or buffers hold inf/nan ({', '.join(tensors[:SHOWN])}{more})")
    if grads:
        parts.append(f"the encoder gradients were inf/nan in {grads} of {stats.steps} steps")
    return "; ".join(parts) if parts else "another process's model holds inf/nan"


HUGE = 1e10  # a weight or buffer this large is far past any trained model's (BatchNorm variances of ~1e12 seen)


def oversized(model: torch.nn.Module, limit: float = HUGE) -> str | None:
    """Finite but far past normal: the floating-point parameters and buffers whose largest
    magnitude is over ``limit``, as a phrase (one device sync), or None. Such a model is on its way
    to inf (a BatchNorm running variance of 1e12 evaluates that branch at chance): a warning, not
    a clean "complete"."""
    named = [(n, t) for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_floating_point()
             and t.numel()]
    if not named:
        return None
    with torch.no_grad():
        peaks = torch.stack([t.detach().abs().amax().float() for _, t in named]).cpu().tolist()
    big = [(n, p) for (n, _), p in zip(named, peaks) if p > limit]
    if not big:
        return None
    shown = ", ".join(f"{n} {p:.3g}" for n, p in big[:SHOWN]) + (f" and {len(big) - SHOWN} more" if len(big) > SHOWN else "")
    return f"weights or buffers far past normal magnitudes (over {limit:g}: {shown}); the model may be unusable"


def remedy(spec) -> str:
    """What to try after a divergence: γp toward 1 for the methods that scale by it, else a
    smaller lr; and gradient clipping when it is off."""
    g = spec.gamma_p
    from pdmp_cli.methods import uses_gamma_p

    knobs = []
    if uses_gamma_p(spec.method) and g != 1:
        knobs.append(f"a smaller --gamma-p than {g:g}" if g > 1 else f"a --gamma-p closer to 1 than {g:g}")
    knobs.append(f"a smaller --lr than {spec.lr:g}")  # the lr can blow a run up whatever gamma_p is
    if spec.grad_clip is None:
        knobs.append("--grad-clip 1.0")
    # a resume keeps the spec: these need a new run
    return "try a new run with " + (", ".join(knobs[:-1]) + " or " + knobs[-1] if len(knobs) > 1 else knobs[0])


def kept_note(run_dir: Path, epochs_done: int) -> str:
    """Which checkpoint a diverged run leaves behind."""
    from pdmp_cli.errors import PdmpError
    from pdmp_cli.train import checkpoint

    last = Path(run_dir) / rundir.CHECKPOINTS / "last.pt"
    if last.exists():
        try:
            checkpoint.verify(last)  # "good" only if it still is what was saved
        except (PdmpError, OSError):
            return f"{last} no longer matches what was saved (damaged): no good checkpoint is left"
        return f"the last good checkpoint ({last}, {epochs_done} epochs done) is kept"
    return "no checkpoint was written (no epoch finished)"
