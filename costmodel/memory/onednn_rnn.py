"""What oneDNN's LSTM allocates on the CPU: its workspace and, inside each op, its scratch.

PyTorch runs one ``mkldnn_rnn_layer`` per layer and direction
(:mod:`costmodel.trace.recurrent`).  Sizes follow oneDNN's own arithmetic (v3.x,
src/cpu/rnn/rnn_utils.{hpp,cpp}: ``init_conf``, ``set_workspace_sizes``,
``set_offsets``; one layer and one direction per primitive, float32): each region of
the workspace and of the scratchpad starts on a 4 KiB page, and leading dimensions
are padded to 64 bytes (``get_good_ld``), so the sizes are not affine in the batch
and are evaluated at the batch (:func:`workspace_bytes`).

Inside the ops, measured with torch.profiler on this machine (torch 2.14, oneDNN
3.12, 2 threads; 30 shapes, every size exact):

* forward, after its outputs and workspace: the summed bias (``4H`` floats), the two
  weights reordered to ``ldigo`` with a padded leading dimension (none for an input or
  hidden size of 1, already in that layout) and the scratchpad;
* backward, after its seven gradients: a contiguous copy of the output's gradient when
  it arrives as a strided view, zeros for a state gradient nothing sent, the summed
  bias, the weights reordered to ``ldgoi`` where padding changes them, the gradient
  weights in ``ldigo``, one more ``4H`` floats and the scratchpad.

The scratchpad is the RNN space (the gates of every step, or of one step in a forward
at a batch of 128 or more, where oneDNN does not merge the layer's GEMM over steps,
and two hidden-state rows), plus one page of alignment and 568 bytes of other entries.
"""
from __future__ import annotations

PAGE = 4096
_FLOAT = 4
_OTHER_SCRATCH = 568
"""The scratchpad beyond its RNN space: oneDNN's pointer arrays and their alignment
(the same 568 bytes in every shape measured)."""


def _round(n: int, to: int = PAGE) -> int:
    return -(-n // to) * to


def good_ld(dim: int) -> int:
    """``get_good_ld`` for floats: a multiple of 16, not of 256 (4K aliasing)."""
    ld = _round(dim, 64 // _FLOAT)
    return ld + 64 // _FLOAT if ld % 256 == 0 else ld


def _pages(*regions: int) -> int:
    """``set_offsets``: each region starts on a page; the last one (empty) rounds the end."""
    offset = 0
    for size in (*regions, 0):
        offset = _round(offset) + size
    return offset


def workspace_bytes(steps: int, batch: int, features: int, hidden: int) -> int:
    """The training workspace of one layer and direction: gates, hidden outputs, states,
    cell states and the backward's diff states."""
    per_state = (steps + 1) * batch * 2  # (layers + 1) x (steps + 1) x batch
    states_ld = good_ld(max(features, hidden))
    return _pages(steps * batch * good_ld(4 * hidden) * _FLOAT,
                  steps * batch * good_ld(hidden) * _FLOAT,
                  per_state * states_ld * _FLOAT,
                  per_state * hidden * _FLOAT,
                  per_state * states_ld * _FLOAT,
                  per_state * states_ld * _FLOAT,
                  per_state * hidden * _FLOAT)


def scratchpad_bytes(steps: int, batch: int, hidden: int, forward: bool) -> int:
    gate_steps = 1 if forward and batch >= 128 else steps
    row = batch * good_ld(hidden) * _FLOAT
    space = _pages(gate_steps * batch * good_ld(4 * hidden) * _FLOAT, row, row)
    return space + PAGE + _OTHER_SCRATCH


def forward_scratch(steps: int, batch: int, features: int, hidden: int) -> int:
    """Bytes alive inside the forward op beyond its outputs, at its highest."""
    gates_ld = good_ld(4 * hidden)
    reorders = (features * gates_ld * _FLOAT if features != 1 else 0) + \
        (hidden * gates_ld * _FLOAT if hidden != 1 else 0)
    return 4 * hidden * _FLOAT + reorders + scratchpad_bytes(steps, batch, hidden, True)


def backward_scratch(steps: int, batch: int, features: int, hidden: int,
                     copies_grad: bool, zero_states: int) -> int:
    """Bytes alive inside the backward op beyond its seven gradients, at its highest.
    ``zero_states``: how many of the two state gradients nothing sent (zeros made)."""
    gates = 4 * hidden
    copy = steps * batch * hidden * _FLOAT if copies_grad and steps > 1 and batch > 1 else 0
    ldgoi = (gates * good_ld(features) * _FLOAT if good_ld(features) != features else 0) + \
        (gates * good_ld(hidden) * _FLOAT if good_ld(hidden) != hidden else 0)
    ldigo = (features + hidden) * good_ld(gates) * _FLOAT
    # the summed bias and one more 4H, less the second bias gradient (made after the rest)
    return (copy + zero_states * batch * hidden * _FLOAT + gates * _FLOAT + ldgoi + ldigo
            + scratchpad_bytes(steps, batch, hidden, False))


def gradient_bytes(steps: int, batch: int, features: int, hidden: int) -> tuple[int, ...]:
    """The seven gradients the backward returns, in its inputs' order (input, the two
    weights, the two biases, the two states): all of them, needed or not."""
    gates = 4 * hidden
    return (steps * batch * features * _FLOAT, gates * features * _FLOAT,
            gates * hidden * _FLOAT, gates * _FLOAT, gates * _FLOAT,
            batch * hidden * _FLOAT, batch * hidden * _FLOAT)
