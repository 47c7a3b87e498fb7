"""MEMO's memory accounting: a model's bytes against exemplars' bytes.

MEMO (Zhou et al., ICLR 2023; FACTS.md section 3) counts a model as its
backbone's parameters (no classifier head, no batch-norm running statistics,
no frozen teacher) at 4 bytes each, and an exemplar as a uint8 image,
H x W x C bytes.  ResNet-32 on CIFAR: 463,504 x 4 / 3,072 = 603.52 exemplars,
the paper's title.  Its generalized/specialized split (the last stage is
specialized) is read from the model (:func:`costmodel.models.staged.split`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from costmodel import checks
from costmodel.errors import CostclError
from costmodel.models.registry import backbone_params, build_model

WORD_BYTES = 4
MIB = 2**20


@dataclass(frozen=True)
class Backbone:
    model: str
    params: int
    """Backbone parameters, no head."""
    specialized: int | None
    """Parameters of the last stage (MEMO's specialized block), if the model has stages."""

    @property
    def generalized(self) -> int | None:
        return None if self.specialized is None else self.params - self.specialized

    @property
    def bytes(self) -> int:
        return WORD_BYTES * self.params


@functools.cache
def backbone(model: str, in_channels: int = 3) -> Backbone:
    """Parameter counts of a model's backbone and of its last stage (built on meta)."""
    from costmodel.models.staged import split

    net = build_model(model, 10, in_channels)
    try:
        last = split(net, "a generalized/specialized split").stages[-1][1]
        specialized = sum(p.numel() for p in last.parameters())
    except CostclError:
        specialized = None
    return Backbone(model, backbone_params(net), specialized)


def exemplar_bytes(input_shape: tuple[int, ...]) -> int:
    """One stored sample as uint8 (MEMO's counting of an image: C x H x W bytes; any other
    input: one byte per value)."""
    return math.prod(input_shape)


@dataclass(frozen=True)
class Conversion:
    model: str
    dataset: str
    backbone_params: int
    model_bytes: int
    exemplar_bytes: int
    query_bytes: int
    """The amount asked about: one model, N exemplars or X MiB."""

    @property
    def exemplars(self) -> float:
        return self.query_bytes / self.exemplar_bytes

    @property
    def models(self) -> float:
        return self.query_bytes / self.model_bytes

    def to_json(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "backbone_params": self.backbone_params,
                "model_bytes": self.model_bytes, "model_mib": self.model_bytes / MIB,
                "exemplar_bytes": self.exemplar_bytes,
                "exemplars_per_model": self.model_bytes / self.exemplar_bytes,
                "query": {"bytes": self.query_bytes, "mib": self.query_bytes / MIB,
                          "exemplars": self.exemplars, "whole_exemplars": int(self.exemplars),
                          "models": self.models}}


def convert(model: str, dataset: str, input_shape: tuple[int, ...], exemplars: int | None = None,
            mib: float | None = None) -> Conversion:
    """One backbone in exemplars, or N exemplars / X MiB in models and exemplars."""
    if exemplars is not None and mib is not None:
        raise CostclError("give --exemplars or --mib, not both")
    if exemplars is not None:
        checks.count(exemplars, "--exemplars", minimum=1, maximum=2**40)
    if mib is not None:
        checks.number(mib, "--mib", above=0, maximum=2**40)
    b = backbone(model, input_shape[0])
    img = exemplar_bytes(input_shape)
    query = b.bytes if exemplars is None and mib is None else (
        exemplars * img if exemplars is not None else round(mib * MIB))
    return Conversion(model, dataset, b.params, b.bytes, img, query)
