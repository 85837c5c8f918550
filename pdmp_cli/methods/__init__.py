"""Training methods, registered by name (timm-style): PDMP and the baselines it is compared with.

Every method runs in the same loop with the same data, model, optimizer, seed and metrics, so
comparisons are honest. A method is an ``nn.Module`` (its own heads are submodules, its state
is buffers) that the loop of :mod:`pdmp_cli.train.loop` consults at a few named points::

    method = build_method(spec.method, model, spec, profile)   # refusals happen here
    optimizer = SGD(model + method parameters)                  # each exactly once
    method.configure_optimizer(optimizer)                       # lr-scale: every lr x gamma_p
    for epoch:
        method.on_epoch_start(ctx)              # PMR prototypes, G-Blending weights, D&R, stages
        for batch:
            for part in method.parts(epoch):    # one optimizer step per part; MLA: per modality
                out, loss = method.forward_loss(model, inputs, labels, epoch, part)  # inside DDP
                method.backward(loss, precision)                # MMPareto: one per loss term
                gamma = method.after_backward(out, labels, epoch)   # PDMP, OGM-GE: scale grads
                optimizer.step()
        evaluate: method.predict(out) -> out'   # MLA, UDI: their own prediction rule (a new output)

Every default reproduces plain joint training (``vanilla``), and costs nothing: a method that
overrides no hook runs exactly the step it ran before these hooks existed.

Adding a method is adding one file in this folder with ``@register_method("name")`` and, if it
has hyperparameters, a pydantic ``Args`` model in the same file; nothing outside this folder
names a method. Users set the hyperparameters in a spec file (``[method_args.<name>]``) or with
``pdmp train --set <name>.<field>=<value>``; ``pdmp methods`` lists them.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from pdmp_cli.errors import PdmpError, format_error
from pdmp_cli.registry import Registry

METHODS: Registry = Registry("method")


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name`` (sets ``cls.name``)."""

    def deco(cls):
        cls.name = name
        return METHODS.register(name)(cls)

    return deco


class NoArgs(BaseModel):
    """A method without hyperparameters."""

    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """Plain joint training: fused cross-entropy, one backward, one step. Methods override hooks.

    Class attributes (read by the loop, the spec, ``pdmp report`` and ``pdmp sweep``, so that
    nothing outside ``methods/`` needs a method's name):

    - ``Args``: the method's hyperparameters (pydantic, ``extra="forbid"``); ``self.args`` holds
      the resolved values. A field declared with ``json_schema_extra={"tune": [values]}`` is
      searched by ``pdmp tune`` (as gamma_p is for a method that ``uses_gamma_p``).
    - ``needs_branch_logits``: the training forward computes ``out.branch_logits`` (s_m).
    - ``uses_gamma_p``: the method reads ``spec.gamma_p`` (reports group runs by it; the divergence
      hint suggests a smaller gamma_p).
    - ``uses_optimization_dominant``: the method reads the profile's m_o (PDMP's Eq. 12); ``pdmp tune``
      then tries both branches when the profile cannot settle m_o.
    - ``max_modalities``: the method is defined for at most this many modalities (None: any N >= 2);
      ``max_modalities_reason`` says why, in the refusal.
    - ``find_unused_parameters``: some parameters get no gradient in a step (DDP must be told).
    - ``table_order``: position in comparison tables (``pdmp report``, ``pdmp sweep --method all``):
      the paper's Table I order, the plain baseline first (0) and PDMP last (100).
    - ``in_paper_table``: the method is a row of the paper's Table I (``pdmp sweep --method paper``).
    - ``approximation``: no reference code exists; reports label the method "approximation".

    ``gamma``: the nominal gradient factor per modality (printed at the start, saved in summary.json).
    """

    name = "method"
    Args: type[BaseModel] = NoArgs
    needs_branch_logits = False
    uses_gamma_p = False
    uses_optimization_dominant = False
    max_modalities: int | None = None
    max_modalities_reason = ""
    find_unused_parameters = False
    table_order: int = 50
    in_paper_table = False
    approximation = False

    def __init__(self, model, spec, profile):
        super().__init__()
        self.modalities = list(model.modalities)
        if self.max_modalities is not None and len(self.modalities) > self.max_modalities:
            able = [n for n in METHODS.names() if METHODS.get(n).max_modalities is None]
            why = f": {self.max_modalities_reason}" if self.max_modalities_reason else ""
            raise PdmpError(
                f"{self.name} is defined for {self.max_modalities} modalities, this dataset has "
                f"{len(self.modalities)} ({', '.join(self.modalities)}){why}; use --method {' or '.join(able)}",
                exit_code=2,
            )
        self.args = self.Args.model_validate(spec.method_args.get(self.name, {}))
        self.gamma = {m: 1.0 for m in self.modalities}

    def describe(self) -> str:
        return "no gradient modulation"

    @classmethod
    def training_settings(cls, spec, profile) -> dict | None:
        """What this method changes in training, resolved: its ``Args`` with defaults filled in
        and gamma_p when it reads it. Two specs with equal settings (and equal other fields) train
        identically, so ``pdmp tune`` trains them once; ``None``: exactly plain joint training."""
        args = cls.Args.model_validate(spec.method_args.get(cls.name, {}))
        out = {"method": cls.name, **args.model_dump(mode="json")}
        if cls.uses_gamma_p:
            out["gamma_p"] = float(spec.gamma_p)
        return out

    # -- set-up ----------------------------------------------------------------------------------

    def configure_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called once after the optimizer is built (before a checkpoint is restored)."""

    # -- epoch boundary --------------------------------------------------------------------------

    def on_epoch_start(self, ctx) -> None:
        """Before epoch ``ctx.epoch``'s first step (not when a run resumes mid-epoch).

        ``ctx`` is a :class:`pdmp_cli.train.state.EpochContext`: the model, the optimizer,
        ``ctx.outputs(split)`` / ``ctx.features(split)`` / ``ctx.batches(split)`` over ``"train"``
        or ``"val"`` (never test), every rank alike, read without augmentation unless the method
        asks for ``view="augmented"`` (the training split as the loop trains on it). State
        changed here must be buffers so ``--resume`` keeps it.
        """

    # -- one batch -------------------------------------------------------------------------------

    def parts(self, epoch: int) -> Iterable[Any]:
        """The optimizer steps of one batch: one step per element, passed to :meth:`forward_loss`."""
        return (None,)

    def forward_loss(self, model, inputs: dict, labels: torch.Tensor, epoch: int, part: Any):
        """The training forward pass and the loss to minimise: ``(out, loss)``.

        Runs inside the DDP-wrapped forward (so the method's own modules are synchronised).
        """
        out = model(inputs, with_branches=self.needs_branch_logits)  # logits (B, K); s_m (B, K) each
        return out, F.cross_entropy(out.logits, labels)

    def backward(self, loss: torch.Tensor, precision) -> None:
        """Fill ``.grad`` from ``loss``; ``precision.backward`` applies fp16 loss scaling."""
        precision.backward(loss)

    def after_backward(self, out, labels: torch.Tensor, epoch: int) -> dict[str, float | torch.Tensor]:
        """Modulate the (unscaled) gradients in place; return the factor applied to each modality.

        ``out`` is the model's output (``logits``, ``branch_logits``), ``epoch`` is 0-based.
        A factor may be a 0-dim tensor, so no device sync is needed.
        """
        return self.gamma

    # -- evaluation ------------------------------------------------------------------------------

    def predict(self, out):
        """The output evaluation reads: ``logits`` (whose argmax is the prediction) and
        ``branch_logits`` (each modality's accuracy). A method with its own prediction rule returns
        a new output (``dataclasses.replace(out, ...)``) and never edits ``out``."""
        return out


# `pdmp demo`: the plain baseline, the de-facto baseline of the field, and PDMP
DEMO_METHODS = ("vanilla", "ogm-ge", "pdmp")


def build_method(name: str, model, spec, profile) -> Method:
    """The method ``name`` for ``model``, on the model's device; unknown names list the valid ones."""
    method = METHODS.get(name)(model, spec, profile)
    p = next(model.parameters(), None)
    return method.to(p.device) if p is not None else method  # its heads and buffers beside the model


def uses_gamma_p(name: str) -> bool:
    """Whether runs of method ``name`` depend on gamma_p (False for a name no longer registered)."""
    return name in METHODS and METHODS.get(name).uses_gamma_p


def _field_error(method: str, err) -> str:
    """``agm.alpha must be > 0, got -1`` (the spelling of ``--set``); checks across fields: ``agm: ...``."""
    if not err["loc"]:
        return f"{method}: " + format_error(err)
    return format_error({**err, "loc": (method, *err["loc"])})


def resolve_method_args(data: dict, default_method: str) -> dict:
    """Spec layer -> spec: validate ``method_args`` and keep the chosen method's full arguments.

    ``method_args`` maps method name -> its fields; every table is checked against that method's
    ``Args`` (one line naming method and field), and every table is completed with the defaults (the chosen method's always), so spec.json
    records the values a run used. Raises ValueError (the spec turns it into one line).
    """
    data = dict(data)
    given = data.get("method_args") or {}
    if not isinstance(given, dict):
        raise ValueError(f"method_args must be a table of method name -> its fields, got {given!r}")
    for k, v in given.items():
        if not isinstance(v, dict):
            raise ValueError(f"method_args.{k} must be a table of that method's fields (e.g. alpha = 0.8), got {v!r}")
    tables = {k: dict(v) for k, v in given.items()}
    unknown = sorted(set(tables) - set(METHODS.names()))
    if unknown:
        raise ValueError(f"method_args.{unknown[0]}: unknown method; choose one of {METHODS.names()}")
    resolved = {}
    for name, table in tables.items():
        try:
            resolved[name] = METHODS.get(name).Args.model_validate(table).model_dump(mode="json")
        except ValidationError as e:
            raise ValueError("; ".join(_field_error(name, err) for err in e.errors())) from None
        for field, v in resolved[name].items():  # every hyperparameter of every method is a finite number
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{name}.{field} must be a finite number, got {table.get(field, v)!r}")
    chosen = data.get("method") or default_method
    if isinstance(chosen, str) and chosen in METHODS and chosen not in resolved:
        resolved[chosen] = METHODS.get(chosen).Args().model_dump(mode="json")
    data["method_args"] = resolved
    return data


def parse_set(items: list[str] | None) -> dict | None:
    """``["agm.alpha=1.5", ...]`` (``--set``) -> ``{"agm": {"alpha": 1.5}}``; values parsed as JSON, else text.

    Field names and values are checked later by the method's ``Args``; None when nothing is set.
    """
    import json

    tables: dict[str, dict] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        name, dot, field = key.strip().rpartition(".")
        if not (eq and dot and name and field):
            raise PdmpError(f"--set needs METHOD.FIELD=VALUE (e.g. --set agm.alpha=1.5), got {item!r}", exit_code=2)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        table = tables.setdefault(name, {})
        if field in table and table[field] != parsed:
            raise PdmpError(f"--set {name}.{field} is given twice with different values ({table[field]!r} and "
                            f"{parsed!r}); give it once", exit_code=2)
        table[field] = parsed
    return tables or None


def check_set_for(tables: dict | None, method: str | list[str]) -> None:
    """The ``--set`` tables of one command line name only the method being run, since a setting
    for another method would be accepted and ignored. Raises PdmpError (one line)."""
    said = {(name, field): f"--set {name}.{field}={v}" for name, t in (tables or {}).items() for field, v in t.items()}
    runs = [method] if isinstance(method, str) else list(method)  # pdmp tune: the methods it tunes
    for (name, _), flag in said.items():
        if name not in runs:
            which = f"the run's method is {runs[0]}" if len(runs) == 1 else f"the methods run are {', '.join(runs)}"
            raise PdmpError(f"{flag} is for method {name}, but {which}: it would be ignored; "
                            f"drop it, or pass --method {name}", exit_code=2)


def describe_methods() -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """(name, first paragraph of its file's docstring, [(field, default, description)]) per method."""
    rows = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (importlib.import_module(cls.__module__).__doc__ or cls.__doc__ or "").strip()
        summary = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
        fields = [(f, repr(info.default), info.description or "") for f, info in cls.Args.model_fields.items()]
        rows.append((name, summary, fields))
    return rows


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
