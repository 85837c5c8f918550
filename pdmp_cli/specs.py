"""Run specs: pydantic models for each command's options, and how they are resolved.

Precedence, lowest first: the model's defaults (the paper's settings) < the dataset
manifest's ``[defaults]`` < a spec file (TOML or JSON, ``--spec``) < command-line flags.
The resolved spec is saved beside every output.
"""

from __future__ import annotations

from pydantic import ValidationError

_OPS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _one(err) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if not loc:  # a check across fields: its message names them
        return err["msg"].removeprefix("Value error, ")
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind in _OPS:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{loc} must be {_OPS[kind]} {bound}, got {value!r}"
    if kind == "extra_forbidden":
        return f"{loc} is not a known option; remove it or check its spelling"
    if kind == "missing":
        return f"{loc} is required"
    if kind == "literal_error":
        return f"{loc} must be one of {ctx.get('expected')}, got {value!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "got " in msg:
        return f"{loc}: {msg}"
    return f"{loc}: {msg}, got {value!r}"


def format_validation_error(e: ValidationError) -> str:
    """All of a ValidationError's problems on one line: ``gamma_p must be > 0, got -1``."""
    return "; ".join(_one(err) for err in e.errors())


import json  # noqa: E402
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Literal  # noqa: E402

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator  # noqa: E402

from pdmp_cli.errors import PdmpError  # noqa: E402

Device = Literal["auto", "cpu", "cuda"]


def _check_registered(family: str, name: str) -> str:
    if family == "encoder":
        from pdmp_cli.models.encoders import ENCODERS as reg
    else:
        from pdmp_cli.models.fusions import FUSIONS as reg
    if name not in reg:
        raise ValueError(f"unknown {family}; choose one of {reg.names()}")
    return name


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OptimSpec(_Spec):
    """Optimiser settings shared by analysis and training (the paper's SGD)."""

    epochs: int = Field(100, gt=0, description="training epochs")
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0
    encoder: str = Field("resnet18", description="encoder registry name")
    device: Device = "auto"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    data_root: str | None = Field(None, description="override the manifest's data root")

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, v: str) -> str:
        return _check_registered("encoder", v)


class AnalyzeSpec(OptimSpec):
    """``pdmp analyze``: unimodal training on a class-stratified subset (Alg. 1, stage 1)."""

    dataset: str = Field(description="dataset name or manifest path")
    subset: list[float] = Field([0.4], min_length=1, description="fraction(s) of the training split, each in (0, 1]")
    early_epochs: int = Field(5, gt=0, description="epoch whose accuracy ranks the optimization-dominant modality")
    out: str | None = Field(None, description="profile path; default profiles/<dataset>.json")
    cache: bool = True
    probe_epochs: int = Field(0, ge=0, description="epochs of a vanilla multimodal probe (0: off)")
    probe_fusion: str = "concat"
    parallel: bool = Field(
        False, description="train the unimodal models at once, one process per modality (one GPU each where there are several)"
    )

    @field_validator("subset", mode="before")
    @classmethod
    def _subset_list(cls, v: Any):
        if isinstance(v, str):
            try:
                v = [float(s) for s in v.split(",") if s.strip()]
            except ValueError:
                raise ValueError("must be a fraction or a comma-separated list of fractions") from None
        return v if isinstance(v, list) else [v]

    @field_validator("subset")
    @classmethod
    def _subset_range(cls, v: list[float]) -> list[float]:
        for s in v:
            if not (0 < s <= 1):
                raise ValueError(f"each subset must be in (0, 1], got {s}")
        return v

    @model_validator(mode="after")
    def _early(self):
        if self.early_epochs > self.epochs:
            raise ValueError(f"early_epochs ({self.early_epochs}) must be <= epochs ({self.epochs})")
        return self


class TrainSpec(OptimSpec):
    """``pdmp train``: multimodal training with PDMP or a baseline in the same loop."""

    profile: str = Field(description="dominance profile JSON (from pdmp analyze or pdmp profile new)")
    dataset: str | None = Field(None, description="defaults to the profile's dataset; must match it")
    fusion: str = "concat"
    method: Literal["pdmp", "vanilla", "ogm-ge", "lr-scale"] = "pdmp"
    gamma_p: float = Field(10.0, gt=0, description="gamma_p of Eq. 10; gamma_r follows by Eq. 12")
    ogm_alpha: float = Field(0.1, gt=0, description="OGM-GE alpha")
    ogm_start: int = Field(0, ge=0, description="OGM-GE: first epoch of the modulation window (0-based)")
    ogm_end: int = Field(50, ge=0, description="OGM-GE: epoch the modulation window ends (0-based, exclusive)")
    grad_clip: float | None = Field(None, gt=0)
    run_dir: str | None = Field(None, description="default runs/<time>-<dataset>-<method>-<fusion>-g<gamma_p>-s<seed>")
    runs_root: str = "runs"
    skip_bad: bool = Field(False, description="skip unreadable samples instead of refusing to train")
    devices: int = Field(1, ge=1, description="processes (GPUs) on this node: pdmp train launches torchrun when > 1")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, or mixed precision: bf16 autocast (CUDA, CPU) or fp16 autocast + GradScaler (CUDA)"
    )

    @field_validator("fusion")
    @classmethod
    def _fusion(cls, v: str) -> str:
        return _check_registered("fusion", v)

    @model_validator(mode="after")
    def _ogm_window(self):
        if self.method == "ogm-ge" and self.ogm_end <= self.ogm_start:
            raise ValueError(f"ogm_end ({self.ogm_end}) must be > ogm_start ({self.ogm_start}) for ogm-ge")
        return self


def read_spec_file(path: str | Path) -> dict:
    """A spec file: TOML (``.toml``) or JSON (``.json``)."""
    p = Path(path)
    if not p.is_file():
        raise PdmpError(f"spec file {p} does not exist", 2)
    try:
        if p.suffix == ".toml":
            return tomllib.loads(p.read_text())
        if p.suffix == ".json":
            return json.loads(p.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise PdmpError(f"spec file {p} could not be parsed ({e}); fix the syntax", 2) from None
    raise PdmpError(f"spec file {p} must be .toml or .json", 2)


def resolve_spec(model: type[_Spec], *layers: dict | None):
    """Merge layers (later wins; ``None`` values in a layer mean "not given") and validate.

    Raises PdmpError with one line listing every problem (exit code 2).
    """
    merged: dict = {}
    for layer in layers:
        if layer:
            merged.update({k: v for k, v in layer.items() if v is not None})
    try:
        return model.model_validate(merged)
    except ValidationError as e:
        raise PdmpError(format_validation_error(e), exit_code=2) from None


def dataset_defaults(dataset: str, fields: type[_Spec]) -> dict:
    """The manifest's ``[defaults]`` that ``fields`` knows (an unknown dataset raises PdmpError)."""
    from pdmp_cli.data import load_manifest

    d = load_manifest(dataset).defaults.as_overrides()
    return {k: v for k, v in d.items() if k in fields.model_fields}
