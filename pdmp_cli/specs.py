"""Run specs: pydantic models for each command's options, and how they are resolved.

Precedence, lowest first: the model's defaults (the paper's settings) < the dataset
manifest's ``[defaults]`` < a spec file (YAML, TOML or JSON, ``--spec``) < command-line flags.
The resolved spec is saved beside every output.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pdmp_cli.errors import PdmpError, format_validation_error

Device = Literal["auto", "cpu", "cuda"]
GAMMA_P_MAX = 3.4028234663852886e38  # the largest float32 (torch.finfo(torch.float32).max)
GAMMA_P_MIN = 1 / GAMMA_P_MAX  # 1/gamma_p must be a float32 too


def _check_registered(family: str, name: str) -> str:
    if family == "encoder":
        from pdmp_cli.models.encoders import ENCODERS as reg
    elif family == "method":
        from pdmp_cli.methods import METHODS as reg
    else:
        from pdmp_cli.models.fusions import FUSIONS as reg
    if name not in reg:
        raise ValueError(f"unknown {family}; choose one of {reg.names()}")
    return name


SEED_MAX = 2**32 - 1  # seeds feed numpy and scikit-learn, which take [0, 2**32)


def _takes_bool(annotation) -> bool:
    from typing import get_args

    return annotation is bool or annotation is Any or any(_takes_bool(a) for a in get_args(annotation))


class _Spec(BaseModel):
    # every float of every spec is finite (an lr of inf or nan is never a setting)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any):
        # pydantic would read `lr = true` in a spec file as 1.0: a number field never takes a bool
        if isinstance(data, dict):
            for k, v in data.items():
                f = cls.model_fields.get(k) if isinstance(k, str) else None
                if isinstance(v, bool) and f is not None and not _takes_bool(f.annotation):
                    raise ValueError(f"{k} must be a number, got {v!r}")
        return data


class OptimSpec(_Spec):
    """Optimiser settings shared by analysis and training (the paper's SGD)."""

    epochs: int = Field(100, gt=0, description="training epochs")
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of model init, data order and noise, in [0, 2**32)")
    encoder: str = Field("resnet18", description="encoder registry name")
    device: Device = "auto"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    threads: int | None = Field(
        None, ge=1,
        description="intra-op CPU threads of each run, fixed before any work (default: 1 for the small encoder, "
        "pdmp_cli.runtime.RESNET18_THREADS for resnet18); resolved into the saved spec",
    )  # fmt: skip
    data_root: str | None = Field(None, description="override the manifest's data root")
    val_fraction: float = Field(
        0.1, ge=0, lt=1,
        description="validation split carved (stratified, seeded) from train when the dataset has none; "
        "0 needs select_on_test",
    )  # fmt: skip
    select_on_test: bool = Field(
        False, description="no validation split: choose epochs / rankings on the test split (the paper's convention)"
    )

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, v: str) -> str:
        return _check_registered("encoder", v)

    @model_validator(mode="after")
    def _validation(self):
        if self.val_fraction == 0 and not self.select_on_test:
            raise ValueError(
                "val_fraction 0 leaves nothing to select on but the test split; "
                "pass --select-on-test to accept that (results are labelled 'selected on test')"
            )
        return self


class AnalyzeSpec(OptimSpec):
    """``pdmp analyze``: unimodal training on a class-stratified subset (Alg. 1, stage 1)."""

    dataset: str = Field(description="dataset name or manifest path")
    subset: list[float] = Field([0.4], min_length=1, description="fraction(s) of the training split, each in (0, 1]")
    early_epochs: int = Field(5, gt=0, description="epoch whose accuracy ranks the optimization-dominant modality")
    out: str | None = Field(None, description="profile path; default profiles/<dataset>.json "
                            "(<dataset>-<data identity> for a manifest of your own: pdmp_cli.analysis.default_stem)")
    cache: bool = True
    probe_epochs: int | None = Field(
        None, ge=0,
        description="epochs of the vanilla multimodal probe whose branch ranking decides m_o (Alg. 1, line 2); "
        "default: early_epochs, the point the unimodal criterion reads; 0: off (early unimodal accuracy decides)",
    )  # fmt: skip
    probe_fusion: str = "concat"
    scaling: bool = Field(
        True,
        description="with one subset s < 1, also train each modality on its nested half (s/2) and warn when a "
        "lower-ranked modality's gain per doubling of the data could carry it past the leader by the full set",
    )
    jobs: int | None = Field(
        None, ge=1,
        description="unimodal models trained at once, each in its own process (default: free cores ÷ threads on a CPU, "
        "one per GPU); the curves are the same as with 1",
    )  # fmt: skip
    epochs: int | Literal["auto"] = Field(
        100, description="epochs of each unimodal model, or auto: until validation accuracy stops improving"
    )
    patience: int = Field(5, gt=0, description="--epochs auto: stop after this many epochs without a new best")
    max_epochs: int = Field(100, gt=0, description="--epochs auto: the cap")
    seeds: list[int] | None = Field(None, description="repeat the analysis with each seed; rankings counted")
    skip_bad: bool = Field(
        False, description="leave out unreadable samples (the ones `pdmp train --skip-bad` leaves out: same data identity)"
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

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError(f"must be > 0 or auto, got {v!r}")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: Any):
        if isinstance(v, int) and not isinstance(v, bool):  # seeds = 5 in a spec file: one seed
            v = [v]
        if isinstance(v, str):
            try:
                v = [int(s) for s in v.split(",") if s.strip()]
            except ValueError:
                raise ValueError("must be a comma-separated list of integers such as 0,1,2") from None
        if v is not None and not isinstance(v, list):
            raise ValueError(f"must be a list of integers such as [0, 1, 2], got {v!r}")
        if v is not None and any(isinstance(x, bool) for x in v):
            raise ValueError(f"must be a list of integers such as [0, 1, 2], got {v!r}")
        if v is not None and not all(isinstance(x, int) for x in v):
            return v  # the list[int] check names the item
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"must not repeat a seed, got {v}")
        for seed in v or []:
            if isinstance(seed, int) and not 0 <= seed <= SEED_MAX:
                raise ValueError(f"each seed must be in [0, 2**32), got {seed}")
        return v or None

    @model_validator(mode="after")
    def _early(self):
        cap = self.max_epochs if self.epochs == "auto" else self.epochs
        if self.early_epochs > cap:
            what = "max_epochs" if self.epochs == "auto" else "epochs"
            raise ValueError(f"early_epochs ({self.early_epochs}) must be <= {what} ({cap})")
        if self.probe_epochs is None:  # the probe by default, as long as the unimodal criterion's epoch
            self.probe_epochs = self.early_epochs
        return self


class TrainSpec(OptimSpec):
    """``pdmp train``: multimodal training with PDMP or a baseline in the same loop."""

    profile: str = Field(description="dominance profile JSON (from pdmp analyze or pdmp profile new)")
    dataset: str | None = Field(None, description="defaults to the profile's dataset; must match it")
    fusion: str = "concat"
    method: str = Field("pdmp", description="method registry name (`pdmp methods` lists them)")
    method_args: dict[str, dict[str, Any]] = Field(
        {}, description="method name -> its hyperparameters (the method's Args); resolved: the chosen method's, all fields"
    )
    gamma_p: float = Field(10.0, gt=0, allow_inf_nan=False, description="gamma_p of Eq. 10; gamma_r follows by Eq. 12")
    grad_clip: float | None = Field(None, gt=0)
    run_dir: str | None = Field(None, description="default runs/<time>-<dataset>-<method>-<fusion>-g<gamma_p>-s<seed>")
    runs_root: str = "runs"
    skip_bad: bool = Field(False, description="skip unreadable samples instead of refusing to train")
    devices: int = Field(1, ge=1, description="processes (GPUs) on this node: pdmp train launches torchrun when > 1")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, or mixed precision: bf16 autocast (CUDA, CPU) or fp16 autocast + GradScaler (CUDA)"
    )
    # learning-rate schedule (pdmp_cli/train/schedule.py); none is the paper's setting
    lr_schedule: Literal["none", "step", "cosine"] = Field("none", description="per-epoch lr schedule: none, step, cosine")
    lr_step_size: int = Field(70, gt=0, description="step: epochs between lr drops (OGM-GE's code: 70)")
    lr_step_gamma: float = Field(0.1, gt=0, le=1, description="step: factor of each drop (OGM-GE's code: 0.1)")
    lr_min: float = Field(0.0, ge=0, description="cosine: the lr it anneals to")
    lr_cosine_epochs: int | None = Field(
        None, gt=0, description="cosine: epochs it anneals over, then stays at lr_min (default: the run's epochs, fixed at the start)"
    )
    tensorboard: bool = Field(False, description="also write TensorBoard event files into the run directory")

    @field_validator("fusion")
    @classmethod
    def _fusion(cls, v: str) -> str:
        return _check_registered("fusion", v)

    @field_validator("gamma_p")
    @classmethod
    def _gamma_p(cls, v: float) -> float:
        # Eq. 12 multiplies float32 gradients by gamma_p and by 1/gamma_p: both must be finite there
        if not GAMMA_P_MIN <= v <= GAMMA_P_MAX:
            raise ValueError(
                f"must be a finite number from {GAMMA_P_MIN:.3g} to {GAMMA_P_MAX:.3g} (gamma_p and 1/gamma_p "
                f"scale float32 gradients), got {v!r}"
            )
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_registered("method", v)

    @model_validator(mode="before")
    @classmethod
    def _method_args(cls, data: Any):
        # each method's own Args check its table
        if not isinstance(data, dict):
            return data
        from pdmp_cli.methods import resolve_method_args

        return resolve_method_args(data, cls.model_fields["method"].default)

    @model_validator(mode="before")
    @classmethod
    def _cosine_length(cls, data: Any):
        # fixed when the spec is made, so a resume that adds epochs keeps the same cosine curve
        if isinstance(data, dict) and data.get("lr_schedule") == "cosine" and data.get("lr_cosine_epochs") is None:
            data = {**data, "lr_cosine_epochs": data.get("epochs", cls.model_fields["epochs"].default)}
        return data

    @model_validator(mode="after")
    def _lr_min(self):
        if self.lr_schedule == "cosine" and self.lr_min >= self.lr:
            raise ValueError(f"lr_min ({self.lr_min:g}) must be < lr ({self.lr:g}) for the cosine schedule")
        return self


# flag -> (the spec field and value that make it read, how to ask for that)
_READ_ONLY_WITH = {
    "lr_step_size": ("lr_schedule", "step", "--lr-schedule step"),
    "lr_step_gamma": ("lr_schedule", "step", "--lr-schedule step"),
    "lr_min": ("lr_schedule", "cosine", "--lr-schedule cosine"),
    "lr_cosine_epochs": ("lr_schedule", "cosine", "--lr-schedule cosine"),
    "patience": ("epochs", "auto", "--epochs auto"),
    "max_epochs": ("epochs", "auto", "--epochs auto"),
}


def refuse_ignored_flags(spec: _Spec, flags: dict) -> None:
    """A flag the resolved spec would never read (``--lr-min`` without the cosine schedule,
    ``--patience`` without ``--epochs auto``) is refused in one line instead of being accepted and
    ignored."""
    for name, (field, value, ask) in _READ_ONLY_WITH.items():
        if flags.get(name) is not None and name in type(spec).model_fields and getattr(spec, field) != value:
            raise PdmpError(f"--{name.replace('_', '-')} is read only with {ask}, and this run's {field} is "
                            f"{getattr(spec, field)!r}: it would be ignored; drop it, or add {ask}", 2)


def read_spec_file(path: str | Path) -> dict:
    """A spec file: YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``); a mapping
    of spec fields (examples/ has one per paper setting)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise PdmpError(f"spec file {p} does not exist", 2)
    if p.suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise PdmpError(f"spec file {p} must be .yaml, .yml, .toml or .json", 2)
    try:
        text = p.read_text()
        if p.suffix == ".toml":
            raw = tomllib.loads(text)
        elif p.suffix == ".json":
            raw = json.loads(text)
        else:
            raw = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        why = " ".join(str(e).split())  # YAML's messages span lines
        raise PdmpError(f"spec file {p} could not be parsed ({why}); fix the syntax", 2) from None
    if raw is None:  # an empty (or all-comment) YAML file
        return {}
    if not isinstance(raw, dict):
        raise PdmpError(f"spec file {p} must hold a mapping of options (key: value), not a {type(raw).__name__}", 2)
    # keys starting with "_" are annotations, never options (pdmp tune's chosen.json: "_tune")
    return {k: v for k, v in raw.items() if not str(k).startswith("_")}


def _merge(into: dict, layer: dict) -> None:
    """``into.update(layer)``, merging nested tables (``method_args.<method>``) field by field."""
    for k, v in layer.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            into[k] = dict(into[k])
            _merge(into[k], v)
        else:
            into[k] = v


def resolve_spec(model: type[_Spec], *layers: dict | None):
    """Merge layers (later wins; ``None`` values in a layer mean "not given") and validate.

    Raises PdmpError with one line listing every problem (exit code 2).
    """
    merged: dict = {}
    for layer in layers:
        if layer:
            _merge(merged, {k: v for k, v in layer.items() if v is not None})
    try:
        return model.model_validate(merged)
    except ValidationError as e:
        raise PdmpError(format_validation_error(e), exit_code=2) from None


def dataset_defaults(dataset: str, fields: type[_Spec]) -> dict:
    """The manifest's ``[defaults]`` that ``fields`` knows (an unknown dataset raises PdmpError)."""
    from pdmp_cli.data import load_manifest

    d = load_manifest(dataset).defaults.as_overrides()
    return {k: v for k, v in d.items() if k in fields.model_fields}
