"""LightCL (Wang et al., ASP-DAC 2025), as its public code behaves (FACTS.md section 1).

* Maintain Generalizability: everything before the last stage is frozen (the
  head and the last stage train); the sparse variant trains from the last block
  of the stage before.
* Memorize Feature Patterns: at the start of every task after the first, the
  first ``buffer_size`` (15) samples of the task are stored with the current
  model's feature maps at four points of the last stage (each block's first
  ReLU output and its output) and its logits: the references FS.  At the end of
  every task, the top ``ratio`` of channels of each map by L1 norm are marked
  important (positions I, OR-ed over tasks).
* Each later step forwards the stored samples (cloned, as the code does), sums
  ``beta * (FM - FS)^2`` over the important positions and over the logits, then
  forwards the batch for the cross-entropy on the task's logit slice; one
  backward, plain SGD.  ``lean=true`` back-propagates the stored-sample loss
  before the batch's forward, so its graph is gone before the batch's
  activations exist (same gradients, lower peak).
* Sparse variant (``--sparsity`` > 0): static channel masks, kept as bool
  tensors the size of every pruned weight and re-applied after each step.  As
  for SparCL, PyTorch still runs dense kernels.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.codebases.lightcl_repo import LIGHTCL_REPO
from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext, Stored, TaskRun,
                                    Work, first_then_later)
from costmodel.models.registry import build_model, head_name
from costmodel.models.staged import split
from costmodel.errors import CostclError
from costmodel.scenario import Scenario
from costmodel.trace.meta_outputs import FastMeta


def _epochs(s: Scenario) -> int:
    return 100 if s.dataset == "tinyimagenet" else 50


def last_stage_blocks(net: nn.Module) -> list[nn.Module]:
    """The residual blocks of the last stage; each must hold two convolutions (the maps
    LightCL regulates are the input of the second one and the block's output)."""
    blocks = list(split(net, "lightcl").stages[-1][1].children())
    if not blocks or any(sum(isinstance(m, nn.Conv2d) for m in b.children()) < 2 for b in blocks):
        raise CostclError(f"lightcl needs a ResNet whose last stage is made of residual blocks "
                          f"with two convolutions each; {type(net).__name__} is not one: use "
                          "resnet18-cifar, resnet32-cifar or a torchvision ResNet")
    return blocks


@contextlib.contextmanager
def feature_maps(net: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect LightCL's four maps: each last-stage block's first ReLU output
    (the input of its second conv) and its output, in forward order."""
    maps: list[torch.Tensor] = []
    handles = []
    for block in last_stage_blocks(net):
        convs = [m for m in block.children() if isinstance(m, nn.Conv2d)]
        handles.append(convs[1].register_forward_pre_hook(lambda m, a: maps.append(a[0])))
        handles.append(block.register_forward_hook(lambda m, a, out: maps.append(out)))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


STAGE_SPARSITY = ((3, 0.8), (2, 0.7))
"""The public code's channel pruning: 80% in the last stage, 70% in the one before,
20% everywhere else (FACTS.md section 1), counted from the end for any ResNet."""


def channel_masks(net: nn.Module) -> dict[str, torch.Tensor]:
    """LightCL's static channel masks, as its ChannelPruner builds them.

    Output channels of each conv are ranked by the signed mean of their weights;
    a conv's input channels follow the previous conv's kept channels (shortcut
    convs excepted); batch norms and the head follow the conv before them.
    """
    stages = [name for name, _ in split(net, "lightcl").stages]
    sparsity = {stages[-1]: 0.8, stages[-2]: 0.7}
    head = head_name(net)
    masks: dict[str, torch.Tensor] = {}
    last = None
    for name, p in net.named_parameters():
        if name.startswith(head + "."):
            if name.endswith("weight") and last is not None:
                masks[name] = last.view(1, -1).expand_as(p).clone()
            continue
        if p.dim() == 4:
            s = next((v for stage, v in sparsity.items() if name.startswith(stage + ".")), 0.2)
            mean = p.detach().mean(dim=(1, 2, 3))
            c = mean.numel()
            keep = int(c * (1 - s) + 0.5)
            threshold = torch.kthvalue(mean.float().cpu(), max(1, c - keep)).values.item()
            out = mean >= threshold
            mask = out.view(-1, 1, 1, 1).expand_as(p).clone()
            if last is not None and "shortcut" not in name and last.numel() == p.shape[1]:
                mask &= last.view(1, -1, 1, 1).expand_as(p)
            masks[name] = mask
            last = out
        elif p.dim() == 1 and last is not None and last.numel() == p.numel():
            masks[name] = last.clone()
    return masks


@functools.cache
def map_shapes(model: str, input_shape: tuple[int, ...], classes: int) -> tuple[tuple[int, ...], ...]:
    """(C, H, W) of each of the four maps, from one meta forward, kept on disk: a warm run
    traces nothing else."""
    from costmodel import cache
    return cache.remembered("lightcl.map_shapes", (model, input_shape, classes),
                            lambda: _map_shapes(model, input_shape, classes),
                            tuple[tuple[int, ...], ...], model=model)


def _map_shapes(model: str, input_shape: tuple[int, ...], classes: int) -> tuple[tuple[int, ...], ...]:
    net = build_model(model, classes, input_shape[0], "meta")
    with feature_maps(net) as maps, torch.no_grad(), FastMeta():  # no Python references
        net(torch.empty((1, *input_shape), device="meta"))
    return tuple(tuple(m.shape[1:]) for m in maps)


class LightCL(Method):
    name = "lightcl"
    sparse = True
    summary = "LightCL: freeze the generalized layers, regulate the last stage's feature patterns"
    paper = "Wang et al., ASP-DAC 2025 (INV-WZQ/LightCL)"
    reference_impl = "lightcl"
    replays = True
    replay_is_buffer = True
    defaults = {"model": "resnet18-cifar", "dataset": "cifar10", "batch_size": 32,
                "optimizer": "sgd", "epochs": _epochs, "holdout": 0.1, "buffer_size": 15}
    options = {"beta": Option(2e-4, "weight of the feature-pattern loss (Beta)"),
               "ratio": Option(0.15, "share of channels kept as important positions (Ratio)", maximum=1.0),
               "lean": Option(False, "back-propagate the stored-sample loss before the batch's forward"),
               "warmup": Option(False, "train the whole model on the first task (no pretrained "
                                "checkpoint: 'first task as pretraining')")}

    # -- structure -----------------------------------------------------------
    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        if variant == "first" and s.options.get("warmup"):
            return frozenset(n for n, _ in net.named_parameters())
        stages = split(net, "lightcl").stages
        starts = [stages[-1][0] + "."]
        if s.sparsity:  # the sparse variant also trains the last block of the previous stage
            prev_name, prev = stages[-2]
            starts.append(f"{prev_name}.{len(list(prev.children())) - 1}.")
        head = head_name(net)
        starts.append(head + ".")
        return frozenset(n for n, _ in net.named_parameters() if n.startswith(tuple(starts)))

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        out = []
        if s.sparsity:
            n = sum(p.numel() for p in net.parameters() if p.dim() > 1)
            out.append(Stored("lightcl.channel_masks", (n,), torch.bool, "method_state",
                              "static channel masks of the sparse variant"))
        if variant == "first":
            return out
        r, dtype = s.buffer_size, s.torch_dtype
        out += [Stored("fs.inputs", (r, *s.input_shape), dtype, "buffer",
                       "the stored samples (float, as the code keeps them)"),
                Stored("fs.targets", (r,), torch.int64, "buffer", "their labels")]
        for i, shape in enumerate(map_shapes(s.model, tuple(s.input_shape), s.classes)):
            out.append(Stored(f"fs.map{i}", (r, *shape), dtype, "method_state",
                              "feature-map reference FS"))
            out.append(Stored(f"fs.mask{i}", (shape[0],), torch.bool, "method_state",
                              "important channels I"))
        out.append(Stored("fs.logits", (r, s.classes), dtype, "method_state", "logit reference"))
        return out

    def schedule(self, s: Scenario) -> list[Phase]:
        return first_then_later(s, {"extra_forward_samples": s.batch_size},
                                {"extra_forward_samples": s.buffer_size + s.batch_size})

    # -- the step ------------------------------------------------------------
    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = ctx.classes // ctx.tasks
        lo = ctx.task * k
        if "fs.inputs" not in ctx.state:  # first task: the batch only
            loss = F.cross_entropy(ctx.model(x)[:, lo:lo + k], y - lo)
            ctx.backward(loss)
            return loss.detach()
        beta, ratio = ctx.options.get("beta", 2e-4), ctx.options.get("ratio", 0.15)
        lean = ctx.options.get("lean", False)
        with feature_maps(ctx.model) as maps:
            logits = ctx.model(ctx.state["fs.inputs"].clone())
        reg = 0.0
        for i, fm in enumerate(maps):
            fs = ctx.state[f"fs.map{i}"]
            if ratio >= 1.0:
                reg = reg + torch.sum(beta * (fs - fm) ** 2)
            else:
                mask = ctx.state[f"fs.mask{i}"].view(-1, 1, 1).expand_as(fm)
                reg = reg + torch.sum(beta * ((fm - fs).mul_(mask)) ** 2)
        reg = reg + torch.sum(beta * (ctx.state["fs.logits"] - logits) ** 2)
        del maps, logits
        if lean:
            ctx.backward(reg)
            reg = reg.detach()
        loss = F.cross_entropy(ctx.model(x)[:, lo:lo + k], y - lo) + reg
        ctx.backward(loss)
        return loss.detach()

    # -- between steps, for the bundled trainer ---------------------------------
    def begin_task(self, run: TaskRun) -> None:
        """Task 0 of the sparse variant: prune.  Later tasks: store FS from the first batch."""
        if run.task == 0:
            if run.scenario.sparsity and "lightcl.masks" not in run.state:
                run.state["lightcl.masks"] = channel_masks(run.net)
                self.after_step(run)
            return
        x, y = next(iter(run.batches()))
        r = run.scenario.buffer_size
        inputs = x[:r].detach().clone()
        with torch.no_grad(), feature_maps(run.net) as maps:
            logits = run.net(inputs)
        run.state["fs.inputs"], run.state["fs.targets"] = inputs, y[:r].clone()
        for i, fm in enumerate(maps):
            run.state[f"fs.map{i}"] = fm.detach().clone()
            run.state.setdefault(f"fs.mask{i}", torch.ones(fm.shape[1], dtype=torch.bool,
                                                           device=fm.device))
        run.state["fs.logits"] = logits.detach().clone()

    def after_step(self, run: TaskRun) -> None:
        masks = run.state.get("lightcl.masks")
        if masks:
            with torch.no_grad():
                for name, p in run.net.named_parameters():
                    if name in masks:
                        p.mul_(masks[name])

    def end_task(self, run: TaskRun) -> None:
        """Important positions I: the top ``ratio`` channels of each map by L1 norm, OR-ed."""
        x, _ = next(iter(run.batches()))
        ratio = float(run.scenario.options.get("ratio", 0.15))
        with torch.no_grad(), feature_maps(run.net) as maps:
            run.net(x)
        for i, fm in enumerate(maps):
            norms = fm.abs().sum(dim=(0, 2, 3))
            c = norms.numel()
            keep = int(c * ratio + 0.5)
            threshold = torch.kthvalue(norms.float().cpu(), max(1, c - keep)).values.item()
            mask = norms >= threshold
            old = run.state.get(f"fs.mask{i}")
            run.state[f"fs.mask{i}"] = mask if old is None or run.task == 0 else (old | mask)

    # -- the paper convention ------------------------------------------------
    def paper_terms(self, s: Scenario) -> PaperTerms:
        maps = map_shapes(s.model, tuple(s.input_shape), s.classes)
        fs_bytes = 4 * s.buffer_size * (sum(c * h * w for c, h, w in maps) + s.classes)
        return PaperTerms(samples=s.batch_size + s.buffer_size, extra_bytes=fs_bytes,
                          density=1 - (s.sparsity or 0.0),
                          note="lightcl: costcl's principled model of the public code (weights, "
                               "the trained part's gradients and activations for the stored "
                               "samples and the batch, the references FS); the published cells "
                               "are not reproduced by any formula costcl has found, so none is claimed")


def forward_with_maps(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The repository's ``model(x)``: the logits and the four last-stage maps (models.py:111-134)."""
    with feature_maps(net) as maps:
        logits = net(x)
    return logits, maps


class LightCLRepository(LightCL):
    """LightCL as the LightCL repository's LightCL.py and prune.py run it.

    Where its code changes memory or FLOPs (cited at the codebase's commit):

    * the channel pruner is built in the dense run too (LightCL.py:202-220): its masks
      are float32 all-ones copies of every conv weight and of the head's weight, plus
      one channel vector per conv that the batch norms share (prune.py:228-254); the
      sparse run's masks are bool;
    * the stored samples are a view of the task's first 32-image batch (LightCL.py:
      168-171), so the whole batch stays allocated;
    * the references FS come from a forward with grad enabled, whose output (and so
      its graph over the trainable part) stays referenced for the whole task
      (LightCL.py:172-173, released at 178): :meth:`prepare`;
    * each step keeps both forwards' feature maps and logits referenced through
      backward (LightCL.py:129-148), under anomaly detection (147);
    * the sparse run trains from layer3.1 in task 0 only; later tasks train the last
      stage and the head in both runs (LightCL.py:75-80 against 117-120);
    * evaluation every 5 epochs and at each task's end runs without no_grad
      (LightCL.py:94-104, 176, 199), at the end after a 32-image forward in train
      mode whose graph is kept (180-185).
    """

    impl = "lightcl"
    codebase = LIGHTCL_REPO
    options = {k: LightCL.options[k] for k in ("beta", "ratio")} | {
        "warmup": Option(False, "train the whole model on the first task: the repository's "
                         "--pretrain switch turned off (LightCL.py:75, 237)")}
    cites = ("LightCL.py:75-80", "LightCL.py:117-148", "LightCL.py:168-185",
             "LightCL.py:202-220", "prune.py:228-254", "models.py:59-68", "models.py:111-134")

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        if variant == "first":
            return super().trainable(s, net, variant)
        return super().trainable(s.replace(sparsity=0.0), net, variant)

    def anomaly_mode(self, variant: str = "main") -> bool:
        return variant != "first"  # switched on in the first later task's first step

    def replay_batch(self, s: Scenario, variant: str = "main") -> int:
        """The stored samples are the first ``buffer_size`` of the task's first batch
        (LightCL.py:168-171): a batch smaller than the buffer keeps the whole batch."""
        return min(super().replay_batch(s, variant), s.batch_size)

    def buffer_limit(self, s: Scenario) -> int | None:
        """``input[:Buffer_num]`` of one batch (LightCL.py:171): never more than the batch."""
        return s.batch_size

    def prepared_trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        """The reference forward runs before my_train sets the flags (LightCL.py:172 against
        117-120): in task 1 with task 0's, which train layer3.1 too in the sparse run.
        That is the worst task, so the peak is task 1's."""
        return self.trainable(s, net, "first")

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        mask_dtype = torch.bool if s.sparsity else torch.float32
        weights = sum(p.numel() for p in net.parameters() if p.dim() > 1)
        channels = sum(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d))
        out = [Stored("pruner.masks", (weights + channels,), mask_dtype, "method_state",
                      "ChannelPruner masks: every conv and head weight, one channel vector "
                      "per conv (built in the dense run too)")]
        if variant == "first":
            return out
        out += [Stored("fs.batch", (s.batch_size, *s.input_shape), s.torch_dtype, "buffer",
                       "the task's first batch: the stored samples are a view of it"),
                Stored("fs.batch_labels", (s.batch_size,), torch.int64, "buffer", "its labels")]
        for i, shape in enumerate(map_shapes(s.model, tuple(s.input_shape), s.classes)):
            out.append(Stored(f"fs.mask{i}", (shape[0],), torch.bool, "method_state",
                              "important channels I"))
        return out

    def prepare(self, ctx: StepContext) -> None:
        """The task's references: a forward of the stored samples with grad enabled,
        its output kept (with its graph) and its maps detached (views of it)."""
        ctx.model.train()
        logits, maps = forward_with_maps(ctx.model, ctx.state["fs.batch"][:ctx.replay_batch])
        ctx.state["fs.reference"] = logits
        for i, fm in enumerate(maps):
            ctx.state[f"fs.map{i}"] = fm.detach()
        ctx.state["fs.logits"] = logits.detach()

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = ctx.classes // ctx.tasks
        lo = ctx.task * k
        if "fs.batch" not in ctx.state:  # task 0: train() (LightCL.py:82-91)
            output = ctx.model(x)
            loss = F.cross_entropy(output[:, lo:lo + k], y - lo)
            ctx.backward(loss)
            return loss.detach()
        beta, ratio = ctx.options.get("beta", 2e-4), ctx.options.get("ratio", 0.15)
        stored = ctx.state["fs.batch"][:ctx.replay_batch]
        out, maps = forward_with_maps(ctx.model, stored.clone())
        reg = torch.sum(beta * ((ctx.state["fs.logits"] - out) ** 2))
        for i, fm in enumerate(maps):
            if ratio >= 1.0:
                reg = reg + torch.sum(beta * ((ctx.state[f"fs.map{i}"] - fm) ** 2))
            else:
                mask = ctx.state[f"fs.mask{i}"].view(-1, 1, 1).expand_as(fm)
                reg = reg + torch.sum(beta * ((fm - ctx.state[f"fs.map{i}"]).mul_(mask)) ** 2)
        output2, maps2 = forward_with_maps(ctx.model, x)
        loss = F.cross_entropy(output2[:, lo:lo + k], y - lo) + reg
        torch.isnan(reg).any()
        ctx.backward(loss)
        return loss.detach()

    def begin_task(self, run: TaskRun) -> None:
        """The trainer's side of LightCL.py:168-173: keep the task's first batch, then
        :meth:`prepare` the references from its first ``buffer_size`` samples."""
        if run.task == 0:
            super().begin_task(run)
            return
        x, y = next(iter(run.batches()))
        run.state["fs.batch"], run.state["fs.batch_labels"] = x, y
        for i, (c, _, _) in enumerate(map_shapes(run.scenario.model, tuple(run.scenario.input_shape),
                                                  run.scenario.classes)):
            run.state.setdefault(f"fs.mask{i}", torch.ones(c, dtype=torch.bool, device=x.device))
        ctx = _PrepareContext(run.net, run.state, run.scenario.buffer_size)
        self.prepare(ctx)

    def works(self, s: Scenario) -> list[Work]:
        batch = self.codebase.evaluation.batch_size or s.batch_size
        return [Work("evaluation during a task", batch, _evaluate),
                Work("evaluation at a task's end", batch, _positions_then_evaluate,
                     prepared=False),
                Work("evaluation at the first task's end", batch, _positions_then_evaluate,
                     variant="first", prepared=False)]


class _PrepareContext:
    """What :meth:`LightCLRepository.prepare` reads and writes, over the trainer's state."""

    def __init__(self, model: nn.Module, state: dict, replay_batch: int) -> None:
        self.model, self.state, self.replay_batch = model, state, replay_batch


def _evaluate(ctx: StepContext, x: torch.Tensor) -> None:
    """test() (LightCL.py:94-104): eval mode, grad enabled, the previous batch's
    outputs replaced when the next forward returns."""
    ctx.model.eval()
    out, maps = forward_with_maps(ctx.model, x)
    out, maps = forward_with_maps(ctx.model, x)  # noqa: F841


def _positions_then_evaluate(ctx: StepContext, x: torch.Tensor) -> None:
    """LightCL.py:178-199: a batch's maps in train mode with grad (graph kept), then test()."""
    ctx.model.train()
    kept, maps = forward_with_maps(ctx.model, x)
    maps = [m.detach() for m in maps]
    _evaluate(ctx, x)
    del kept, maps
