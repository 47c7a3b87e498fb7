"""The ``paper`` convention: the theoretical accounting of the LightCL table.

Reverse-engineered in FACTS.md section 2 (the paper only says "calculated
theoretically"):

* memory = weights + gradients + the outputs of the main-path convolutions of
  every sample in a step (``a`` per sample), plus the parameter-sized tensors a
  method stores; no optimizer state, no batch-norm or ReLU outputs, no
  shortcut convolutions, no stored images, no allocator;
* ``a`` is rounded to 0.01 MiB per 32x32 image before use, as the table was
  (2.125 -> 2.13 MiB; 64x64 images count 4 x 2.13);
* FLOPs = 3 x forward FLOPs (forward + a backward twice as expensive) for every
  sample a step sees, over the whole schedule, times the method's factor.

Each method supplies its terms (:class:`~costmodel.methods.base.PaperTerms`);
the formulas here are the same for all.  With frozen layers, weights count in
full, gradients and activations only for the part that trains (its first
trainable module onwards), and the backward only for that part.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from costmodel.trace.records import StepTrace

MIB = 2**20
_SHORTCUT_WORDS = ("shortcut", "downsample")
PAPER_WORD_BYTES = 4
"""The table counts every number as a 32-bit float."""


@dataclass(frozen=True)
class PaperFacts:
    """What the paper convention reads from one trace."""

    param_count: int
    trainable_count: int
    activation_bytes_per_sample: float
    """``a``: main-path conv outputs of one sample in the trainable part, fp32, after rounding."""
    activation_bytes_exact: int
    forward_flops_per_sample: int
    trainable_forward_flops_per_sample: int


def main_path_conv(module: str) -> bool:
    return not any(w in module for w in _SHORTCUT_WORDS)


def facts(trace: StepTrace, trainable: frozenset[str], input_hw: tuple[int, int]) -> PaperFacts:
    """Per-sample facts of one forward of the trained model.

    A step may run the model several times (replay batches, stored samples);
    the first call of each layer is the one counted, per sample of whichever
    batch it ran on.
    """
    first_trainable = _first_trainable_op(trace, trainable)
    act = fwd = fwd_train = 0
    seen: set[str] = set()
    for i, op in enumerate(trace.ops):
        if op.macs_by_kind not in ("conv", "linear") or op.module in seen:
            continue
        seen.add(op.module)
        per_sample = max(op.forward_flops[1], op.forward_flops[2])
        fwd += per_sample
        if i >= first_trainable:
            fwd_train += per_sample
            if op.macs_by_kind == "conv" and main_path_conv(op.module):
                out = trace.storages[op.outputs[0]].nbytes
                act += max(out[1], out[2]) // trace.element_size * PAPER_WORD_BYTES
    pixels = input_hw[0] * input_hw[1]
    per_32 = _round_half_up(act / MIB * 1024 / pixels, 2)
    rounded = per_32 * pixels / 1024 * MIB
    n_train = sum(trace.param_numel[p] for p in trainable if p in trace.param_numel)
    return PaperFacts(sum(trace.param_numel.values()), n_train, rounded, act, fwd, fwd_train)


def _round_half_up(value: float, digits: int) -> float:
    """The table's rounding (2.125 -> 2.13); Python's round() goes to even (2.12)."""
    return float(Decimal(repr(value)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP))


def _first_trainable_op(trace: StepTrace, trainable: frozenset[str]) -> int:
    sids = {trace.param_sids[p] for p in trainable if p in trace.param_sids}
    for i, op in enumerate(trace.ops):
        if i >= trace.prologue_ops and sids.intersection(op.inputs):
            return i
    return len(trace.ops)

