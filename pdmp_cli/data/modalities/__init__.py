"""Modality kinds: how one sample's file(s) become a tensor. One file per kind, registered by name.

A manifest's ``[modalities.<name>]`` table names a ``kind`` (``audio``, ``frames``, ``image``,
``flow``, ``npy``), a ``path`` pattern and a ``preprocessing`` table validated by the kind's
``Preprocessing`` model. Each kind splits its work in two:

* :meth:`Modality.decode` -- deterministic and expensive (decode audio, STFT; decode and resize
  frames). Its result is what the features cache (:mod:`pdmp_cli.data.features`) stores, keyed
  by the files' identity and :meth:`Modality.cache_params`.
* :meth:`Modality.finish` -- cheap, and random at training time (frame choice, crop, flip), so
  augmentation stays random every epoch even when ``decode`` comes from the cache.

Adding a kind is adding one file here with ``@register_modality("name")``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from pdmp_cli.registry import Registry

MODALITIES: Registry = Registry("modality kind")
register_modality = MODALITIES.register


class BadFile(Exception):
    """A sample's file cannot be used. ``problem`` is ``missing``, ``unreadable``, ``truncated`` or
    ``non-finite`` (decodes to NaN/inf)."""

    def __init__(self, path: Path | str, problem: str, detail: str = ""):
        self.path = Path(path)
        self.problem = problem
        self.detail = detail
        super().__init__(f"{path}: {problem}" + (f" ({detail})" if detail else ""))


class Modality:
    """Base of every kind. Subclasses set ``Preprocessing`` and implement the methods below."""

    Preprocessing: ClassVar[type[BaseModel]]
    VERSION: ClassVar[int] = 1  # bump when decode's output changes: it is part of the cache key
    cacheable: ClassVar[bool] = True  # False: decode is as cheap as a cache read (npy)

    def __init__(self, prep: BaseModel):
        self.prep = prep

    kind: ClassVar[str] = ""  # the registered name

    def channels(self, example: Path | None = None) -> int:
        """Input channels of the encoder for this modality."""
        raise NotImplementedError

    def output_shape(self) -> tuple[int, ...]:
        """Shape of one sample's tensor (as documented in the manifests)."""
        raise NotImplementedError

    def cache_params(self) -> dict[str, Any]:
        """The preprocessing parameters :meth:`decode` depends on (part of the cache key)."""
        return self.prep.model_dump()

    def sources(self, path: Path) -> list[Path]:
        """The files one sample reads; raises :class:`BadFile` ("missing") if there are none."""
        if not path.is_file():
            raise BadFile(path, "missing")
        return [path]

    def decode(self, path: Path):
        """Deterministic, expensive part -> a numpy array (cached). Raises :class:`BadFile`."""
        raise NotImplementedError

    def finish(self, decoded, train: bool):
        """Cheap part -> float tensor; random (torch's RNG) when ``train``."""
        raise NotImplementedError


def build_modality(kind: str, preprocessing: dict | BaseModel | None = None) -> Modality:
    cls = MODALITIES.get(kind)
    prep = preprocessing if isinstance(preprocessing, BaseModel) else cls.Preprocessing.model_validate(preprocessing or {})
    return cls(prep)


_NUM = re.compile(r"(\d+)")


def natural_key(p: Path) -> list:
    """Sort ``frame_2.jpg`` before ``frame_10.jpg``."""
    return [int(t) if t.isdigit() else t.lower() for t in _NUM.split(p.name)]


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
