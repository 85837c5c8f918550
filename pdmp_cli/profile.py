"""The dominance profile: the reusable result of the modality analysis (Alg. 1, stage 1).

A JSON file, schema-versioned, validated by pydantic when read back. ``performance_dominant``
is the first of ``late_ranking``; ``optimization_dominant`` the first of ``early_ranking``
(or of the multimodal probe's ranking when that criterion decided). Reference profiles copy a
ranking the paper states and say so in ``provenance``; nothing in them was measured.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pdmp_cli.errors import PdmpError, format_validation_error
from pdmp_cli.fsutil import write_json

# 2 adds the validation split, curve trends, --epochs auto and --seeds (all optional fields):
# version 1 profiles (the shipped reference ones among them) still read, as they are
SCHEMA_VERSION = 2
READS = (1, 2)


class ModalityResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    curve: list[float] = Field(description="accuracy on the evaluation split (validation) after each epoch")
    early_accuracy: float
    late_accuracy: float = Field(description="the last epoch's; with --epochs auto, the best epoch's (early stopping)")
    eval_size: int = Field(description="evaluation samples behind each accuracy")
    still_rising: bool | None = Field(
        None, description="the curve's fitted rise over its last epochs is beyond evaluation noise (None: too short to tell)"
    )
    rise: float | None = Field(None, description="the fitted rise: accuracy gained over the second half of training")
    trend_p: float | None = Field(None, description="one-sided p-value of that rise (the largest over --seeds)")
    stopped_epoch: int | None = Field(None, description="--epochs auto: the epoch training stopped")


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool_version: str
    created: str
    command: str = ""
    source: Literal["measured", "reference", "manual"] = "measured"
    reference: str | None = Field(None, description="the paper table/figure a reference profile copies")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    dataset: str
    dataset_identity: str | None = Field(None, description="content hash of the data analysed")
    modalities: list[str] = Field(min_length=2)
    subset: float | None = None
    seed: int | None = None
    settings: dict = Field(default_factory=dict)
    results: dict[str, ModalityResult] = Field(default_factory=dict)
    early_ranking: list[str] = Field(default_factory=list, description="best first")
    late_ranking: list[str] = Field(default_factory=list, description="best first")
    performance_dominant: str
    optimization_dominant: str | None = Field(None, description="null when unknown (the paper does not state it)")
    optimization_criterion: Literal["unimodal-early", "multimodal-probe", "reference", "manual"] = "unimodal-early"
    probe: dict | None = Field(None, description="the multimodal probe's per-branch accuracies and ranking")
    uncertain: dict[str, bool] = Field(
        default_factory=dict,
        description="ranking -> top two within noise; late_trend: a modality ranked below the first was still rising; "
        "criteria_disagree: the two m_o criteria name different modalities; data_scaling: the ranking may flip "
        "with more data",
    )
    validation: dict | None = Field(
        None, description="the split the rankings were measured on (pdmp_cli.data.split.record_of); None: version 1"
    )
    seeds: list[int] | None = Field(None, description="--seeds: accuracies are means over these seeds")
    ranking_frequency: dict[str, dict[str, int]] | None = Field(
        None, description="--seeds: late/early -> ranking ('visual > audio') -> how many seeds gave it"
    )
    data_scaling: dict | None = Field(
        None,
        description="one --subset s < 1: the nested half's late accuracy, each modality's gain per doubling of "
        "the training data, the accuracy projected to the full set, and the modalities that may overtake the "
        "leader (pdmp_cli.analysis.data_scaling)",
    )
    notes: list[str] = Field(default_factory=list)
    provenance: Provenance

    @model_validator(mode="after")
    def _consistent(self):
        mods = set(self.modalities)
        for name in ("performance_dominant", "optimization_dominant"):
            v = getattr(self, name)
            if v is not None and v not in mods:
                raise ValueError(f"{name} {v!r} is not one of the modalities {self.modalities}")
        for name in ("early_ranking", "late_ranking"):
            r = getattr(self, name)
            if r and sorted(r) != sorted(self.modalities):
                raise ValueError(f"{name} {r} must list each of {self.modalities} once")
        if self.late_ranking and self.late_ranking[0] != self.performance_dominant:
            raise ValueError("performance_dominant must be the first of late_ranking")
        if self.optimization_criterion == "unimodal-early" and self.early_ranking:
            if self.early_ranking[0] != self.optimization_dominant:
                raise ValueError("optimization_dominant must be the first of early_ranking")
        return self

    # --- I/O -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename): a crash never leaves half a profile."""
        return write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        from pdmp_cli.resources import profile_path

        p = profile_path(path)  # a path, or a shipped reference profile's name (cremad.paper)
        if not p.is_file():
            raise PdmpError(f"profile {p} does not exist; run `pdmp analyze` or `pdmp profile new` to make one", 2)
        try:
            raw = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PdmpError(f"profile {p} is not valid JSON ({e}); re-create it with `pdmp analyze`", 2) from None
        if not isinstance(raw, dict) or raw.get("schema_version") not in READS:
            found = raw.get("schema_version") if isinstance(raw, dict) else None
            raise PdmpError(
                f"profile {p} has schema_version {found!r}, this pdmp reads {' and '.join(map(str, READS))}; "
                "re-create it with `pdmp analyze`",
                2,
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise PdmpError(f"profile {p} is invalid: {format_validation_error(e)}", 2) from None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
