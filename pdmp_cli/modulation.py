"""PDMP gradient modulation, Eq. 10-12 of the paper.

    g_p = gamma_p * g_p'                                   (Eq. 10)
    g_r = gamma_r * g_r'                                   (Eq. 11)
    gamma_r = 1 / gamma_p  if m_p != m_o  else  gamma_p    (Eq. 12)

m_p is the performance-dominant modality (best final unimodal accuracy), m_o the
optimization-dominant one (best early accuracy). Only the *modality-owned* parameters' gradients
are scaled (a late-fusion model's encoders; in a model that fuses inside its encoders, each
stream's own layers), after ``loss.backward()`` and before ``optimizer.step()``; shared parts
(fusion head, squeeze layers, cross-modal transformers) are untouched.

Three or more modalities: Eq. 12 names one "remaining" factor, and the default reading gives it
to every modality but m_p (``others="gamma_r"``: with m_p != m_o, all of them x 1/gamma_p). The
paper's reasoning (slow the modality that dominates optimisation) reads as well with only m_o
slowed: ``others="one"`` leaves a modality that is neither m_p nor m_o at x1, ``others="gamma_p"``
speeds it up with m_p. With m_p == m_o every reading gives every modality gamma_p; with two
modalities they coincide.

Use it on your own model: map each modality to its modules, or to a list of its parameters
(the parameters that belong to that modality alone)::

    mod = PDMPModulator({"audio": net.audio_enc, "visual": [*net.visual_enc.parameters(), net.visual_pos]},
                        performance_dominant="visual", optimization_dominant="audio", gamma_p=10)
    loss.backward()
    mod.apply()          # or mod.install_hooks() once, before training
    optimizer.step()

A model with ``modality_parameters()`` (every model of ``pdmp train``) can be passed as it is.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Mapping, Union

import torch
from torch import nn

from pdmp_cli.errors import PdmpError


OTHERS = ("gamma_r", "one", "gamma_p")  # readings of Eq. 12 for a modality neither m_p nor m_o


def resolve_gammas(
    modalities: list[str], performance_dominant: str, optimization_dominant: str, gamma_p: float,
    others: str = "gamma_r",
) -> dict[str, float]:
    """Eq. 12: modality -> gamma. m_p gets gamma_p; every other modality gets gamma_r.

    ``others`` (three or more modalities, m_p != m_o): what a modality that is neither m_p nor
    m_o gets: ``gamma_r`` (1/gamma_p, the default reading), ``one`` (x1) or ``gamma_p``.
    """
    if others not in OTHERS:
        raise PdmpError(f"others must be one of {', '.join(OTHERS)}, got {others!r}", exit_code=2)
    if not (isinstance(gamma_p, (int, float)) and math.isfinite(gamma_p) and gamma_p > 0):
        raise PdmpError(f"gamma_p must be > 0, got {gamma_p}", exit_code=2)
    for role, m in (("performance-dominant", performance_dominant), ("optimization-dominant", optimization_dominant)):
        if m not in modalities:
            raise PdmpError(
                f"{role} modality {m!r} is not one of the model's modalities {modalities}", exit_code=2
            )
    gamma_r = 1.0 / gamma_p if performance_dominant != optimization_dominant else float(gamma_p)
    third = gamma_r if performance_dominant == optimization_dominant else {"gamma_r": gamma_r, "one": 1.0, "gamma_p": float(gamma_p)}[others]
    return {
        m: float(gamma_p) if m == performance_dominant else gamma_r if m == optimization_dominant else third
        for m in modalities
    }


def grad_norm(module: nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.cat(grads)).item() if grads else 0.0


Owned = Union[nn.Module, Iterable[nn.Module], Iterable[nn.Parameter]]


def owned_parameters(owned: Mapping[str, Owned]) -> dict[str, list[nn.Parameter]]:
    """modality -> module(s) or parameters  =>  modality -> its parameters (each once, in order).

    Refuses (one line) a modality with no parameters and a parameter given to two modalities:
    one gamma per parameter is what Eq. 10-11 needs.
    """
    out: dict[str, list[nn.Parameter]] = {}
    seen: dict[int, str] = {}
    for m, group in owned.items():
        items = [group] if isinstance(group, nn.Module) else list(group)
        params = []
        for it in items:
            ps = list(it.parameters()) if isinstance(it, nn.Module) else [it]
            for p in ps:
                if not isinstance(p, torch.Tensor):
                    raise PdmpError(
                        f"modality {m!r}: expected modules or parameters, got {type(p).__name__}", exit_code=2
                    )
                if seen.get(id(p), m) != m:
                    raise PdmpError(
                        f"modalities {seen[id(p)]!r} and {m!r} share parameters, so one gamma cannot be "
                        "applied to each; give each modality only the parameters that belong to it alone "
                        "(leave shared layers out: they are never scaled)",
                        exit_code=2,
                    )
                if id(p) not in seen:
                    seen[id(p)] = m
                    params.append(p)
        if not params:
            raise PdmpError(f"modality {m!r} was given no parameters to scale", exit_code=2)
        out[m] = params
    return out


class PDMPModulator:
    """Applies Eq. 10-12 to the gradients of each modality's own parameters.

    ``owned`` maps modality -> what belongs to that modality alone: a module, a list of modules,
    or a list of parameters (anything else in the model, e.g. a cross-attention block fed by
    several modalities, is shared and left alone); or it is a model with ``modality_parameters()``.
    The parameter lists are resolved once, here. Give either a ``profile`` (a
    :class:`pdmp_cli.profile.Profile`, a path to a profile JSON, or anything with
    ``performance_dominant`` and ``optimization_dominant``) or the two dominant modalities by
    hand. ``gammas`` holds the resolved factor per modality. ``pdmp train --method pdmp`` uses
    this same class.
    """

    def __init__(
        self,
        owned: Mapping[str, Owned],
        gamma_p: float,
        performance_dominant: str | None = None,
        optimization_dominant: str | None = None,
        profile=None,
        others: str = "gamma_r",
    ):
        if hasattr(owned, "modality_parameters"):
            owned = owned.modality_parameters()
        if isinstance(profile, (str, os.PathLike)):
            from pdmp_cli.profile import Profile

            profile = Profile.load(profile)
        if profile is not None:
            performance_dominant = performance_dominant or profile.performance_dominant
            optimization_dominant = optimization_dominant or profile.optimization_dominant
            theirs = list(getattr(profile, "modalities", None) or [])
            if theirs and sorted(theirs) != sorted(owned):
                raise PdmpError(
                    f"the profile is for modalities {theirs} but the modalities given are {list(owned)}; "
                    "map every modality of the profile to its parameters",
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
        self.owned = dict(owned)  # as given
        self.params = owned_parameters(self.owned)  # modality -> its parameters
        self.performance_dominant = performance_dominant
        self.optimization_dominant = optimization_dominant
        self.others = others
        self.gammas = resolve_gammas(list(self.params), performance_dominant, optimization_dominant, gamma_p, others)
        # which criterion chose m_o (the profile's; None when given by hand): said by describe()
        self.criterion = getattr(profile, "optimization_criterion", None) if profile is not None else None
        self._profile = profile
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
        third = [m for m in self.gammas if m not in (mp, mo)]
        if third and mp != mo and self.others != "gamma_r":
            why += f"; {', '.join(third)} x{self.gammas[third[0]]:g} (others={self.others})"
        return f"{parts} ({why}; Eq. 12){self._criterion_words()}"

    def _criterion_words(self) -> str:
        """``; m_o by ...``: which criterion of the profile chose m_o, and the other's answer if it differs."""
        p, mo = self._profile, self.optimization_dominant
        words = {
            "multimodal-probe": "the branch ranking of a multimodal probe (Alg. 1)",
            "unimodal-early": "early unimodal accuracy (Sec. III-B)",
            "reference": "the paper's statement",
            "manual": "hand",
        }.get(self.criterion or "")
        if not words:
            return ""
        text = f"; m_o {mo} by {words}"
        early = (getattr(p, "early_ranking", None) or [None])[0]
        probe = ((getattr(p, "probe", None) or {}).get("ranking") or [None])[0]
        other = {"multimodal-probe": ("early unimodal accuracy", early), "unimodal-early": ("the multimodal probe", probe)}
        name, says = other.get(self.criterion, (None, None))
        if says and says != mo:
            text += f" (the criteria disagree: {name} says {says}; `pdmp tune` tries both)"
        return text

    def __repr__(self) -> str:
        return f"PDMPModulator({self.gammas})"

    def apply(self) -> None:
        """Scale every modality-owned parameter's ``.grad`` in place. Call after backward, before the step.

        Do not combine with :meth:`install_hooks` (the gradients would be scaled twice).
        """
        if self._hooks:
            raise PdmpError("hooks are installed: they already scale the gradients; do not also call apply()")
        with torch.no_grad():
            for m, params in self.params.items():
                grads = [p.grad for p in params if p.grad is not None]
                if grads:
                    torch._foreach_mul_(grads, self.gammas[m])  # one fused multiply per modality

    def install_hooks(self) -> "PDMPModulator":
        """Alternative to :meth:`apply`: scale gradients as backward computes them.

        Install once before training; :meth:`remove_hooks` undoes it. Returns ``self``.
        """
        if self._hooks:
            return self
        for m, params in self.params.items():
            g = self.gammas[m]
            for p in params:
                if p.requires_grad:
                    self._hooks.append(p.register_hook(lambda grad, g=g: grad * g))
        return self

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
