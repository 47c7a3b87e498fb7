"""Run the FLOP counters papers quote, and set costcl's analytic count beside each.

fvcore's ``FlopCountAnalysis``, thop's ``profile`` (on a copy: it adds buffers to
what it profiles) and PyTorch's ``FlopCounterMode`` each count one forward of
one sample, on real CPU tensors, in training mode (as costcl's step is).
costcl's numbers come from its trace, converted to each tool's convention
(:mod:`costmodel.conventions`); none of the tools' numbers feed a prediction.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from costmodel import conventions, engine, methods
from costmodel.models.registry import build_model
from costmodel.scenario import Scenario


_FVCORE_CATEGORY = {"conv": "conv", "addmm": "linear", "linear": "linear", "mm": "linear",
                    "matmul": "matmul", "bmm": "matmul", "einsum": "matmul",
                    "batch_norm": "batch_norm", "adaptive_avg_pool2d": "adaptive_avg_pool2d",
                    "upsample_nearest2d": "upsample", "upsample_bilinear2d": "upsample"}
_TORCH_CATEGORY = {"convolution": "conv", "_convolution": "conv", "addmm": "linear", "mm": "linear",
                   "bmm": "matmul", "baddbmm": "matmul"}


@dataclass
class CrossCheck:
    model: str
    input_shape: tuple[int, ...]
    measured: dict[str, dict[str, int]]
    """tool -> op category -> count, from running the tool."""
    costcl: dict[str, dict[str, int]]
    """tool -> op category -> costcl's count in that tool's convention."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "input_shape": list(self.input_shape),
                "units": conventions.TOOL_UNITS, "measured": self.measured, "costcl": self.costcl,
                "notes": self.notes}


def _torch_counts(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x)
    out: dict[str, int] = {}
    for op, n in counter.get_flop_counts()["Global"].items():
        cat = _TORCH_CATEGORY.get(str(op).split(".")[-1], str(op))
        out[cat] = out.get(cat, 0) + int(n)
    return out


def _fvcore_counts(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, int], list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import and tracing use deprecated TorchScript
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_op = analysis.by_operator()
        unsupported = sorted(analysis.unsupported_ops())
    out: dict[str, int] = {}
    for op, n in by_op.items():
        cat = _FVCORE_CATEGORY.get(op, op)
        out[cat] = out.get(cat, 0) + int(n)
    return out, unsupported


def _thop_counts(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    clone = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import thop

        _, _, layers = thop.profile(clone, inputs=(x,), verbose=False, ret_layer_info=True)
    out: dict[str, int] = {}

    def walk(prefix: str, tree: dict) -> None:
        for name, (ops, _, children) in tree.items():
            path = f"{prefix}.{name}" if prefix else name
            if children:
                walk(path, children)
                continue
            kind = type(model.get_submodule(path)).__name__
            cat = ("conv" if "Conv" in kind else "linear" if kind == "Linear"
                   else "batch_norm" if "BatchNorm" in kind
                   else "adaptive_avg_pool" if kind.startswith("AdaptiveAvgPool")
                   else "avg_pool" if kind.startswith("AvgPool") else kind)
            if int(ops):
                out[cat] = out.get(cat, 0) + int(ops)

    walk("", layers)
    return out


def crosscheck(s: Scenario) -> CrossCheck:
    s = methods.resolve(s.replace(method="sgd", batch_size=1))
    sm = engine.step_model(s, methods.get("sgd"))
    ours = {tool: conventions.by_category(sm.trace, tool, 1) for tool in conventions.FLOPS_CONVENTIONS}
    torch.manual_seed(0)
    model = build_model(s.model, s.classes, s.input_shape[0], device="cpu")
    model.train()
    x = torch.randn(1, *s.input_shape)
    measured = {"torch": _torch_counts(model, x)}
    measured["fvcore"], unsupported = _fvcore_counts(model, x)
    measured["thop"] = _thop_counts(model, x)
    notes = [
        "FlopCounterMode and costcl's torch convention count 2 FLOPs per multiply-accumulate; "
        "fvcore and thop count multiply-accumulates (fvcore calls them flops).",
        "FlopCounterMode counts only convolutions and matrix products.",
        "fvcore also counts batch norm (5 per element with affine, in training mode) and "
        "adaptive average pooling (1 per input element).",
        "thop counts by module type: batch norm 4 per element with affine, AvgPool2d 1 per "
        "output element, AdaptiveAvgPool2d kernel+1 per output element, ReLU and max-pool 0; "
        "functional calls (F.relu, F.avg_pool2d, +) are invisible to it.",
    ]
    if unsupported:
        notes.append("fvcore skipped (no handle): " + ", ".join(unsupported))
    for tool, counts in measured.items():
        extra = sorted(set(counts) - set(ours[tool]))
        if extra:
            notes.append(f"{tool} counts {', '.join(extra)}, which costcl's {tool} "
                         "convention does not model")
    return CrossCheck(s.model, tuple(s.input_shape), measured, ours, notes)
