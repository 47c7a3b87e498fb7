"""What each kind of autograd node allocates when it runs.

Most backward formulas produce a fresh gradient for every input that needs one,
sized like that input: the default.  The exceptions matter for memory because
they allocate nothing: a view's backward returns a view of the incoming
gradient, an addition hands the same gradient to both of its inputs, a
concatenation hands out slices of it.  Those share the incoming storage, which
then lives until the last of them is released.

A rule maps a node's name to, for each input, either :data:`NEW` or the index
of the incoming slot whose storage it passes on.
"""
from __future__ import annotations

NEW = -1
"""Sentinel: this input's gradient is a fresh allocation."""

# The backward returns a view of (or the very) incoming gradient for every input.
# If the passed gradient's size differs from what the input expects (a broadcast
# add, a dtype cast), PyTorch reduces or casts it into a fresh tensor.
_PASS_ALL = {
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "TBackward0",
    "TransposeBackward0", "TransposeBackward1", "PermuteBackward0", "SqueezeBackward0",
    "SqueezeBackward1", "SqueezeBackward2", "SqueezeBackward3", "SqueezeBackward4",
    "UnsqueezeBackward0", "UnsqueezeBackward1", "AliasBackward0", "CloneBackward0",
    "CatBackward0", "ToCopyBackward0", "ViewAsRealBackward0", "ViewAsComplexBackward0",
    "AddBackward0", "AddBackward1", "LiftFreshBackward0",
}
# The backward of a sum is an expanded view of the (small) incoming gradient:
# passed on whatever the size of the input.
EXPANDS = {"SumBackward0", "SumBackward1"}
# Nodes that take a gradient of the right shape in any layout (a slice of a concatenation's)
# and copy it to a contiguous tensor inside their kernel (kernel scratch,
# :mod:`costmodel.memory.onednn_rnn`): no fresh gradient is made for them beforehand.
TAKES_STRIDED = {"MkldnnRnnLayerBackward0"}
# The first input gets the incoming gradient, the others a fresh one.
_PASS_FIRST = {"SubBackward0", "SubBackward1", "RsubBackward0"}


def rule(name: str, n_edges: int) -> tuple[int, ...]:
    """Per input: :data:`NEW`, or the incoming slot whose storage is passed on."""
    if name in _PASS_ALL or name in EXPANDS:
        return (0,) * n_edges
    if name in _PASS_FIRST:
        return (0,) + (NEW,) * (n_edges - 1)
    return (NEW,) * n_edges


TRANSIENTS: dict[str, int] = {
    # pow_backward computes grad * (exponent * self.pow(exponent - 1)): the power
    # and the product with the exponent live until the output exists.
    "PowBackward0": 2,
}
"""Extra tensors, each the size of the node's output, alive while it computes."""


def transient(name: str) -> int:
    return TRANSIENTS.get(name, 0)
