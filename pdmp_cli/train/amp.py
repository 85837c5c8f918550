"""Mixed precision for the training loop: ``spec.precision`` = fp32, bf16 or fp16.

    with precision.autocast():
        out = model(inputs); loss = cross_entropy(out.logits, labels)
    precision.backward(loss)       # fp16: backward of loss x scale (small grads survive fp16)
    precision.unscale_(optimizer)  # fp16: grads / scale, BEFORE anyone reads them:
    method.after_backward(...)     #   PDMP's gamma multiplies true gradients, norms are true norms
    clip_grad_norm_(...)
    precision.step(optimizer)      # fp16: skipped when a grad is inf/NaN, then the scale adapts

* ``bf16``: ``torch.autocast`` with bfloat16 (same exponent range as fp32: no scaler needed).
  On CUDA and on CPU (CPU autocast; helps on CPUs with bf16 instructions).
* ``fp16``: autocast with float16 and a ``torch.amp.GradScaler``. CUDA only: :func:`resolve`
  refuses it on CPU (no speed-up there, and bf16 is the CPU's half type).
* ``fp32``: no autocast, no scaler: the loop's plain path.

Evaluation runs in fp32 (exact metrics; it is a small part of an epoch).
"""

from __future__ import annotations

import contextlib

import torch

from pdmp_cli.errors import PdmpError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast + (for fp16) a GradScaler, as four calls the loop makes in a fixed order.

    Works on any device torch supports (tests use fp16 on CPU); :func:`resolve` is the policy
    ``pdmp train`` applies to what users ask for.
    """

    def __init__(self, kind: str, device: torch.device):
        if kind not in DTYPES:
            raise PdmpError(f"precision must be one of {list(DTYPES)}, got {kind!r}", exit_code=2)
        self.kind, self.device, self.dtype = kind, device, DTYPES[kind]
        self.scaler = torch.amp.GradScaler(device.type) if kind == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the grads by the loss scale in place (fp16); nothing otherwise."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)  # already unscaled: steps unless a grad is inf/NaN
        self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def resolve(kind: str, device: torch.device) -> Precision:
    """The :class:`Precision` for ``spec.precision`` on ``device``, or a PdmpError saying what works."""
    if kind == "fp16" and device.type != "cuda":
        raise PdmpError(
            f"precision fp16 needs a CUDA GPU (its loss scaling and speed-up are for GPUs), and the device is "
            f"{device.type}; use --precision bf16 (CPU autocast) or fp32",
            exit_code=2,
        )
    if kind == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PdmpError(
            f"precision bf16 is not supported by GPU {torch.cuda.get_device_name(device)}; "
            "use --precision fp16 (with loss scaling) or fp32",
            exit_code=2,
        )
    return Precision(kind, device)
