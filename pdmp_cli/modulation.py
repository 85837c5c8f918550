"""PDMP gradient modulation, Eq. 10-12 of the paper.

    g_p = gamma_p * g_p'                                   (Eq. 10)
    g_r = gamma_r * g_r'                                   (Eq. 11)
    gamma_r = 1 / gamma_p  if m_p != m_o  else  gamma_p    (Eq. 12)

m_p is the performance-dominant modality (best final unimodal accuracy), m_o the
optimization-dominant one (best early accuracy). Only the *encoders'* parameter gradients
are scaled, after ``loss.backward()`` and before ``optimizer.step()``; the fusion and head
are untouched. With three or more modalities, Eq. 12 gives each remaining modality gamma_r.

Use it on your own model::

    mod = PDMPModulator({"audio": net.audio_enc, "visual": net.visual_enc},
                        performance_dominant="visual", optimization_dominant="audio", gamma_p=10)
    loss.backward()
    mod.apply()          # or mod.install_hooks() once, before training
    optimizer.step()
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import torch
from torch import nn

from pdmp_cli.errors import PdmpError


def resolve_gammas(
    modalities: list[str], performance_dominant: str, optimization_dominant: str, gamma_p: float
) -> dict[str, float]:
    """Eq. 12: modality -> gamma. m_p gets gamma_p; every other modality gets gamma_r."""
    if not (isinstance(gamma_p, (int, float)) and math.isfinite(gamma_p) and gamma_p > 0):
        raise PdmpError(f"gamma_p must be > 0, got {gamma_p}", exit_code=2)
    for role, m in (("performance-dominant", performance_dominant), ("optimization-dominant", optimization_dominant)):
        if m not in modalities:
            raise PdmpError(
                f"{role} modality {m!r} is not one of the model's modalities {modalities}", exit_code=2
            )
    gamma_r = 1.0 / gamma_p if performance_dominant != optimization_dominant else float(gamma_p)
    return {m: (float(gamma_p) if m == performance_dominant else gamma_r) for m in modalities}


def grad_norm(module: nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.cat(grads)).item() if grads else 0.0


class PDMPModulator:
    """Applies Eq. 10-12 to the parameter gradients of a set of encoders.

    ``encoders`` maps modality -> encoder module (anything with parameters). Give either a
    ``profile`` (a :class:`pdmp_cli.profile.Profile`, a path to a profile JSON, or anything with
    ``performance_dominant`` and ``optimization_dominant``) or the two dominant modalities by
    hand. ``gammas`` holds the resolved factor per modality. ``pdmp train --method pdmp`` uses
    this same class.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        gamma_p: float,
        performance_dominant: str | None = None,
        optimization_dominant: str | None = None,
        profile=None,
    ):
        if isinstance(profile, (str, os.PathLike)):
            from pdmp_cli.profile import Profile

            profile = Profile.load(profile)
        if profile is not None:
            performance_dominant = performance_dominant or profile.performance_dominant
            optimization_dominant = optimization_dominant or profile.optimization_dominant
            theirs = list(getattr(profile, "modalities", None) or [])
            if theirs and sorted(theirs) != sorted(encoders):
                raise PdmpError(
                    f"the profile is for modalities {theirs} but the encoders given are {list(encoders)}; "
                    "pass one encoder per modality of the profile",
                    exit_code=2,
                )
        if performance_dominant is None:
            raise PdmpError("PDMPModulator needs a profile or performance_dominant=", exit_code=2)
        if optimization_dominant is None:
            raise PdmpError(
                "the optimization-dominant modality is unknown (the profile leaves it null); "
                "pass optimization_dominant= by hand or measure it with `pdmp analyze`",
                exit_code=2,
            )
        self.encoders = dict(encoders)
        seen: dict[int, str] = {}
        for m, enc in self.encoders.items():
            for p in enc.parameters():
                if id(p) in seen and seen[id(p)] != m:
                    raise PdmpError(
                        f"encoders {seen[id(p)]!r} and {m!r} share parameters, so one gamma cannot be "
                        "applied to each; give each modality its own encoder",
                        exit_code=2,
                    )
                seen[id(p)] = m
        self.performance_dominant = performance_dominant
        self.optimization_dominant = optimization_dominant
        self.gammas = resolve_gammas(list(self.encoders), performance_dominant, optimization_dominant, gamma_p)
        self._hooks: list = []

    def describe(self) -> str:
        """One line: each modality's gamma and why (Eq. 12)."""
        mp, mo = self.performance_dominant, self.optimization_dominant
        parts = ", ".join(f"{m} x{g:g}" for m, g in self.gammas.items())
        why = (
            f"gamma_r = 1/gamma_p because performance-dominant {mp} != optimization-dominant {mo}"
            if mp != mo
            else f"gamma_r = gamma_p because {mp} is both performance- and optimization-dominant"
        )
        return f"{parts} ({why}; Eq. 12)"

    def __repr__(self) -> str:
        return f"PDMPModulator({self.gammas})"

    def apply(self) -> None:
        """Scale every encoder's ``.grad`` in place. Call after backward, before the step.

        Do not combine with :meth:`install_hooks` (the gradients would be scaled twice).
        """
        if self._hooks:
            raise PdmpError("hooks are installed: they already scale the gradients; do not also call apply()")
        with torch.no_grad():
            for m, enc in self.encoders.items():
                g = self.gammas[m]
                for p in enc.parameters():
                    if p.grad is not None:
                        p.grad.mul_(g)

    def install_hooks(self) -> "PDMPModulator":
        """Alternative to :meth:`apply`: scale gradients as backward computes them.

        Install once before training; :meth:`remove_hooks` undoes it. Returns ``self``.
        """
        if self._hooks:
            return self
        for m, enc in self.encoders.items():
            g = self.gammas[m]
            for p in enc.parameters():
                if p.requires_grad:
                    self._hooks.append(p.register_hook(lambda grad, g=g: grad * g))
        return self

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
