"""Helpers for methods that train each modality through heads of their own (MLA, UDI).

Such a method needs each modality's feature size and the number of classes when it is built
(before the optimizer), and a model whose modality features do not mix before the head (late
fusion): a fusion that mixes inside the encoders (``se``, ``mmformer``) has no unimodal forward
pass to train one modality alone.
"""

from __future__ import annotations

import torch

from pdmp_cli.errors import PdmpError


def late_fusion_shape(model, method: str) -> tuple[dict[str, int], int]:
    """``({modality: feature size}, number of classes)`` of a late-fusion model; other models are refused."""
    encoders, fusion = getattr(model, "encoders", None), getattr(model, "fusion", None)
    if encoders is None or fusion is None:
        raise PdmpError(
            f"{method} trains each modality through its own forward pass, and this model fuses inside its "
            "encoders; use a late fusion (--fusion concat, sum, film or gated)",
            exit_code=2,
        )
    dims = {m: int(encoders[m].out_dim) for m in model.modalities}
    p = next(fusion.parameters())
    with torch.no_grad():  # the fusion's output size, whatever its kind
        num_classes = fusion({m: torch.zeros(1, d, device=p.device, dtype=p.dtype) for m, d in dims.items()}).shape[1]
    return dims, int(num_classes)


def require_validation(spec, method: str, why: str) -> None:
    """Refuse at set-up (before anything is written) a run that selects on test: ``method`` needs the
    validation split for ``why``, and the test split must never decide anything."""
    if spec is not None and getattr(spec, "select_on_test", False):
        raise PdmpError(
            f"{method} needs a validation split ({why}) and --select-on-test leaves none; drop --select-on-test "
            "(a stratified share of the training data is carved off, --val-fraction)",
            exit_code=2,
        )
