"""Replay the memory of one training step over the traced facts.

No tensor is created here.  The forward is the traced op sequence: each op adds
its new storages, and a storage leaves when the program has let go of it
(traced liveness) and no running backward node keeps it.  Each ``backward()``
follows PyTorch's engine on one device: the ready node with the highest
sequence number runs first, AccumulateGrad as soon as it is ready; a node
allocates the gradients of its inputs (:mod:`costmodel.memory.backward_rules`),
then lets go of the gradients it received and of what it saved; gradients that
meet at a branch are summed, in place on plain tensors, out of place when a
Python dispatch mode (any memory tracker) is watching, because the mode keeps
one more reference to every tensor.

Byte counts are :data:`~costmodel.trace.records.Lin` in the batch sizes and the
order of events does not depend on them, so a timeline is built once per set of
trainable parameters and evaluated for any batch in microseconds: each
checkpoint is a plane, the peak is the highest one at (B, R).
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from costmodel.memory import backward_rules
from costmodel.memory import kernel_scratch as ks
from costmodel.memory import graph, onednn_rnn
from costmodel.memory.graph import Selection
from costmodel.trace.records import RNN_LAYER_OP, Lin, NodeFact, StepTrace, StorageKind, at

CATEGORIES = ("parameters", "model_buffers", "inputs", "activations", "gradients",
              "temporaries", "buffer", "method_state")
PARAMS, BUFFERS, INPUTS, ACTS, GRADS, TEMPS, REPLAY, STATE = range(len(CATEGORIES))
_KIND_CATEGORY = {StorageKind.PARAM: PARAMS, StorageKind.BUFFER: BUFFERS,
                  StorageKind.INPUT: INPUTS, StorageKind.ACTIVATION: ACTS,
                  StorageKind.REPLAY: REPLAY, StorageKind.STATE: STATE}

Sizer = Callable[[Lin], Lin]
"""Turns a byte count into what the allocator really hands out (CUDA rounds)."""


@dataclass
class Timeline:
    """Memory at every checkpoint, by category: ``coef[k, c] @ (1, B, R)`` bytes.

    ``phase[k]`` says where in the step checkpoint ``k`` was taken and
    ``where[k]`` which op or node had just run.
    """

    coef: np.ndarray
    """Shape (checkpoints, categories, 3)."""
    phase: list[str]
    where: list[str]
    after_backward: np.ndarray
    """Bytes per category (categories x 3) once the step's last backward is done."""
    grad_bytes: dict[str, int]
    """Gradient bytes of each trainable parameter, in parameter order."""
    scratch: list[tuple[int, Lin | ks.AtBatch]] = None  # type: ignore[assignment]
    """(checkpoint, bytes): the CPU kernel's scratch over checkpoint ``k``, one entry per
    alternative of :mod:`~costmodel.memory.kernel_scratch` (an :class:`~ks.AtBatch` where
    it is not affine in the batch); ``None`` unless asked for."""

    def totals(self, batch: int, replay: int = 0) -> np.ndarray:
        return self.coef[:, :, 0].sum(1) + self.coef[:, :, 1].sum(1) * batch \
            + self.coef[:, :, 2].sum(1) * replay


class _Grad:
    __slots__ = ("nbytes", "refs", "category")

    def __init__(self, nbytes: Lin, category: int) -> None:
        self.nbytes, self.refs, self.category = nbytes, 1, category


class _Memory:
    """Running totals per category and the list of checkpoints."""

    def __init__(self) -> None:
        self.cur = [[0, 0, 0] for _ in CATEGORIES]
        self.points: list[list[int]] = []
        self.phase: list[str] = []
        self.where: list[str] = []

    def add(self, category: int, nbytes: Lin, sign: int = 1) -> None:
        c = self.cur[category]
        c[0] += sign * nbytes[0]
        c[1] += sign * nbytes[1]
        c[2] += sign * nbytes[2]

    def checkpoint(self, phase: str, where: str) -> None:
        self.points.append([v for c in self.cur for v in c])
        self.phase.append(phase)
        self.where.append(where)


def simulate(trace: StepTrace, sel: Selection, in_place_accumulation: bool = True,
             sizer: Sizer | None = None, anomaly: bool = False,
             kernel_scratch: bool = False, at_batch: tuple[int, int] = (1, 0),
             threads: int = 2) -> Timeline:
    """The step's memory timeline.

    ``anomaly``: the code runs with ``torch.autograd.set_detect_anomaly(True)``:
    after each node runs (its inputs and saved tensors released), the engine
    checks every output gradient for NaN with ``isnan(grad).any()``, a bool
    tensor of the gradient's element count alive for the check.

    ``at_batch``: the (batch, replay) at which sizes rounded at the batch are taken (oneDNN's
    LSTM, where :attr:`StepTrace.has_onednn_lstm`); the timeline holds there only.

    ``threads``: the CPU threads the kernels share their work over (some scratch is per
    thread, :mod:`~costmodel.memory.kernel_scratch`).
    """
    size = sizer or (lambda nb: nb)
    mem = _Memory()
    storages = trace.storages
    nbytes = [size(s.nbytes) for s in storages]
    rnn_dims = _rnn_layers(trace, nbytes, at_batch) if trace.has_onednn_lstm else {}
    for sid, s in enumerate(storages):
        if s.kind is not StorageKind.ACTIVATION:
            mem.add(_KIND_CATEGORY[s.kind], nbytes[sid])
    holders = dict(sel.holders)
    dead: set[int] = set()
    dies_after: dict[int, list[int]] = {}
    carried = [0, 0, 0]
    # Tensors the step assigned to .grad itself are gradients: not carried into the next
    # step (its zero_grad frees them), and backward adds into them in place.
    installed = {sid for _, _, sid in trace.installed_grads}
    dropped = set(trace.dropped)
    category_of = {sid: GRADS for sid in installed}
    for sid, s in enumerate(storages):
        if s.kind is not StorageKind.ACTIVATION:
            continue
        if s.last_use is None:
            # What a step returns is still held by the loop when the next step runs;
            # the prologue's results are made once, and work outside a step is not repeated.
            if s.producer >= trace.prologue_ops and trace.segments and sid not in installed \
                    and sid not in dropped:
                carried = [a + b for a, b in zip(carried, nbytes[sid])]
        else:
            dies_after.setdefault(s.last_use, []).append(sid)

    # What the loop still holds from the previous step (what the step returned)
    # is replaced only when this step returns.
    mem.add(ACTS, tuple(carried))
    # A step that zeroes its gradients itself holds the previous step's until then.
    previous_grads, zero_grad_after = (0, 0, 0), -1
    if trace.zero_grad_at:  # the gradients that the previous step's backward made
        previous_grads = (sum(size(n.slot_bytes[0])[0] for i, n in enumerate(trace.nodes)
                              if n.leaf is not None and sel.active[i]), 0, 0)
        mem.add(GRADS, previous_grads)
        zero_grad_after = trace.zero_grad_at - 1
    nodes = trace.nodes
    active = sel.active
    has_grad: set[str] = set()
    grad_bytes: dict[str, int] = {}

    def release(g: _Grad | None) -> None:
        if g is None:
            return
        g.refs -= 1
        if g.refs == 0:
            mem.add(g.category, g.nbytes, -1)

    def alloc(nb: Lin, category: int = TEMPS) -> _Grad:
        nb = size(nb)
        mem.add(category, nb)
        return _Grad(nb, category)

    kept_until = sel.kept_until or {}
    itemsize = trace.element_size
    scratch: list[tuple[int, Lin | ks.AtBatch]] = []
    plain_input = _plain_input_convolutions(trace) if kernel_scratch else set()

    def transient(nb: Lin, where: str) -> None:
        """A temporary alive for one checkpoint."""
        mem.add(TEMPS, nb)
        mem.checkpoint("backward", where)
        mem.add(TEMPS, nb, -1)

    def over_last(extras: list[Lin | ks.AtBatch]) -> None:
        """Scratch alternatives over the checkpoint just taken."""
        scratch.extend((len(mem.points) - 1, e) for e in extras)

    def let_go(sid: int) -> None:
        """A graph no longer keeps ``sid``: free it if the program is done with it too."""
        left = holders.get(sid)
        if left is None:
            return
        holders[sid] = left - 1
        if left == 1 and sid in dead:
            mem.add(category_of.get(sid, ACTS), nbytes[sid], -1)

    def forward(first: int, last: int) -> None:
        for i in range(first, last + 1):
            op = trace.ops[i]
            for sid in op.outputs:
                mem.add(category_of.get(sid, ACTS), nbytes[sid])
            mem.checkpoint("forward", op.module or op.name)
            if kernel_scratch and op.name in ks.FORWARD_OPS and op.outputs and len(op.inputs) > 1:
                x, w = nbytes[op.inputs[0]], nbytes[op.inputs[1]]
                over_last(ks.conv_forward_op(op.kernel, x, w, nbytes[op.outputs[0]],
                                             op.module in plain_input, threads))
            if kernel_scratch and i in rnn_dims:
                over_last([(onednn_rnn.forward_scratch(*rnn_dims[i]), 0, 0)])
            for sid in dies_after.get(i, ()):
                dead.add(sid)
                if not holders.get(sid):
                    mem.add(category_of.get(sid, ACTS), nbytes[sid], -1)
            for sid in kept_until.get(i, ()):  # an unexecuted graph's last output is gone
                let_go(sid)
            if i == zero_grad_after:
                mem.add(GRADS, previous_grads, -1)

    def backward(root: int, deps_in: tuple[int, ...]) -> None:
        deps = list(deps_in)
        buffers: dict[int, list[_Grad | None]] = {root: [alloc(nodes[root].slot_bytes[0])]}
        mem.checkpoint("backward", "backward()")
        ready = [(-root, root)]
        while ready:
            _, n = heapq.heappop(ready)
            node = nodes[n]
            received = buffers.pop(n, [])
            if node.leaf is not None:  # AccumulateGrad: the gradient becomes param.grad
                g = received[0]
                if node.leaf in has_grad:  # summed into the existing .grad in place
                    release(g)
                elif g.refs == 1 and g.category == TEMPS:
                    mem.add(TEMPS, g.nbytes, -1)
                    mem.add(GRADS, g.nbytes)
                    g.category = GRADS
                else:
                    alloc(node.slot_bytes[0], GRADS)
                    mem.checkpoint("backward", node.leaf)
                    release(g)
                has_grad.add(node.leaf)
                grad_bytes[node.leaf] = node.slot_bytes[0][0]
                continue
            plan = backward_rules.rule(node.name, len(node.edges))
            outputs: list[tuple[tuple[int, int], _Grad]] = []
            allocated = False
            for edge, how in zip(node.edges, plan):
                if edge is None or not active[edge[0]]:
                    continue
                g = received[how] if 0 <= how < len(received) else None
                if g is None:  # a fresh gradient (or zeros for a slot nothing reached)
                    outputs.append((edge, alloc(nodes[edge[0]].slot_bytes[edge[1]])))
                    allocated = True
                else:
                    g.refs += 1
                    outputs.append((edge, g))
            extra = backward_rules.transient(node.name)
            lstm = _lstm_node(node, at_batch) if node.name == "MkldnnRnnLayerBackward0" else None
            if lstm is not None:  # oneDNN returns all seven gradients, needed or not
                unneeded = sum(b for k, b in enumerate(onednn_rnn.gradient_bytes(*lstm[:4]))
                               if node.edges[k] is None or not active[node.edges[k][0]])
                transient((unneeded, 0, 0), node.name)
                if kernel_scratch:
                    zeros = sum(1 for k in (1, 2) if k >= len(received) or received[k] is None)
                    over_last([(onednn_rnn.backward_scratch(*lstm, zeros), 0, 0)])
            elif extra and outputs:
                transient(tuple(extra * v for v in size(outputs[0][1].nbytes)), node.name)
            elif allocated:
                mem.checkpoint("backward", node.name)
                if kernel_scratch and node.name in ks.BACKWARD_NODES:
                    over_last(_backward_scratch(node, nodes, active, nbytes, threads))
            for g in received:
                release(g)
            if node.name not in backward_rules.EXPANDS:
                # validate_outputs: a passed gradient of the wrong size is reduced or cast
                for k, (edge, g) in enumerate(outputs):
                    want = size(nodes[edge[0]].slot_bytes[edge[1]])
                    if g.nbytes != want and nodes[edge[0]].name not in backward_rules.TAKES_STRIDED:
                        new = alloc(want)
                        mem.checkpoint("backward", node.name)
                        release(g)
                        outputs[k] = (edge, new)
            for sid in graph.held(node, active):
                let_go(sid)
            for _, g in outputs if anomaly else ():  # isnan(grad).any(), one at a time
                transient(size(tuple(v // itemsize for v in g.nbytes)),
                          f"{node.name} (anomaly check)")
            # Outputs are handed to the next nodes' input buffers; a gradient summed
            # into one stays referenced by the engine's outputs vector until the
            # node's last output is delivered.
            delivered: list[_Grad] = []
            for (t, slot), g in outputs:
                buf = buffers.setdefault(t, [None] * len(nodes[t].slot_bytes))
                old = buf[slot]
                # add_ in place needs a dense, unshared tensor of the slot's size; a sum's
                # gradient is an expanded view of a smaller one (InputBuffer::accumulate)
                full = nodes[t].slot_bytes[slot]
                if old is None:
                    buf[slot] = g
                elif in_place_accumulation and old.refs == 1 and tuple(old.nbytes) == tuple(full):
                    delivered.append(g)
                elif in_place_accumulation and g.refs == 1 and tuple(g.nbytes) == tuple(full):
                    release(old)
                    buf[slot] = g
                else:
                    new = alloc(full)
                    mem.checkpoint("backward", "accumulate")
                    release(old)
                    delivered.append(g)
                    buf[slot] = new
                deps[t] -= 1
                if deps[t] == 0:
                    heapq.heappush(ready, (-t, t))
            for g in delivered:
                release(g)

    first = 0
    for k, seg in enumerate(trace.segments):
        forward(first, seg.after_op)
        has_grad.update(name for at, name, _ in trace.installed_grads if at == k)
        if active[seg.root]:
            backward(seg.root, sel.dependencies[k])
        first = seg.after_op + 1
    forward(first, len(trace.ops) - 1)
    mem.add(ACTS, tuple(carried), -1)  # the previous step's results are replaced now
    coef = np.array(mem.points, dtype=np.int64).reshape(len(mem.points), len(CATEGORIES), 3)
    ordered = {name: grad_bytes[name] for name in trace.param_sids if name in grad_bytes}
    return Timeline(coef, mem.phase, mem.where, np.array(mem.cur, dtype=np.int64), ordered,
                    scratch if kernel_scratch else None)


def _rnn_layers(trace: StepTrace, nbytes: list[Lin],
                at_batch: tuple[int, int]) -> dict[int, tuple[int, int, int, int]]:
    """Each oneDNN LSTM layer op that trains (a workspace): its (steps, batch, features,
    hidden) at ``at_batch``, read from its float32 operands' sizes; its workspace is
    resized to what oneDNN allocates there (``nbytes`` is changed)."""
    out = {}
    for i, op in enumerate(trace.ops):
        if op.name != RNN_LAYER_OP or len(op.outputs) != 4 or not any(nbytes[op.outputs[3]]):
            continue
        w_hh = at(nbytes[op.inputs[2]], *at_batch) // 4  # 4H x H floats
        hidden = round((w_hh // 4) ** 0.5)
        features = at(nbytes[op.inputs[1]], *at_batch) // (16 * hidden)
        batch = at(nbytes[op.outputs[1]], *at_batch) // (4 * hidden)  # hy: batch x H
        steps = at(nbytes[op.outputs[0]], *at_batch) // (4 * hidden * batch)
        out[i] = (steps, batch, features, hidden)
        nbytes[op.outputs[3]] = (onednn_rnn.workspace_bytes(*out[i]), 0, 0)
    return out


def _lstm_node(node: NodeFact, at_batch: tuple[int, int]) -> tuple[int, int, int, int, bool]:
    """(steps, batch, features, hidden, copies its output's gradient) of a oneDNN LSTM
    layer's backward, from its kernel tag ('lstm:steps:features:hidden[:copy]')."""
    parts = node.kernel.split(":")
    steps, features, hidden = (int(p) for p in parts[1:4])
    batch = at(node.slot_bytes[1], *at_batch) // (4 * hidden)
    return steps, batch, features, hidden, "copy" in parts


def _plain_input_convolutions(trace: StepTrace) -> set[str]:
    """Convolutions whose input oneDNN takes in its plain layout (fewer than 8 channels, an
    image), and transposed ones (no rule: left out of the scratch)."""
    kinds = {m.name: m.type for m in trace.modules}
    out = set()
    for name, (shape_in, _) in trace.module_shapes.items():
        if kinds.get(name, "").startswith("Conv") and len(shape_in) > 1 and shape_in[1][0] < 8:
            out.add(name)
    return out


def _backward_scratch(node: NodeFact, nodes: list[NodeFact], active: tuple[bool, ...],
                      nbytes: list[Lin], threads: int) -> list[Lin | ks.AtBatch]:
    def needs(k: int) -> bool:
        return k < len(node.edges) and node.edges[k] is not None and active[node.edges[k][0]]

    if node.name == "ScaledDotProductFlashAttentionForCpuBackward0":
        return ks.flash_attention_backward(node.slot_bytes[0])
    if node.name == "NativeBatchNormBackward0":
        edge = node.edges[0]
        return ks.batch_norm_backward(nodes[edge[0]].slot_bytes[edge[1]] if edge else ks.ZERO,
                                      needs(0))
    if len(node.saved) < 2:
        return []
    x, w = nbytes[node.saved[0]], nbytes[node.saved[1]]  # (input, weight): _saved_ order
    return ks.conv_backward_node(node.kernel, x, w, node.slot_bytes[0], needs(0), needs(1),
                                 threads)
