"""PODNet (Douillard et al., ECCV 2020), as PyCIL's models/podnet.py trains it.

Cited at G-U-N/PyCIL@87cc4110 (:mod:`costmodel.codebases.pycil`).  PyCIL has no
PODNet of costcl's own beside it: the method is its PyCIL implementation.

* the network (podnet.py:55-57, utils/inc_net.py:204-234) is PyCIL's
  ``cosine_resnet32`` (convs/ucir_cifar_resnet.py:12-158): UCIR's CIFAR ResNet, whose
  stride-2 shortcuts are a 1x1 convolution and a batch norm (``DownsampleB``, 2,752
  parameters more than option A) and whose last block has no final ReLU; no unused fc.
  Its classifier is a cosine classifier with 10 proxies per class (LSC,
  convs/linears.py:37-100, 236-247): after the first task a ``SplitCosineLinear`` whose
  old part ``fc1`` is in an optimizer group with learning rate 0 (podnet.py:111-122)
  but still requires grad, so it gets a gradient and a momentum buffer; it also
  returns the proxy-reduced scores of each part, with their graph, unused;
* every step (podnet.py:196-237): the student's dict (stage maps, features, logits),
  the NCA loss (podnet.py:285-320), the frozen teacher (the previous task's network)
  under ``no_grad``, the POD-flat loss (cosine embedding of the features) and the
  POD-spatial loss over the three stage maps (podnet.py:256-282), both weighed by
  ``sqrt(total / new)``; ``zero_grad`` after the forward, as every PyCIL learner;
* the loop's variables (the student's and the teacher's dicts, stage maps included)
  stay referenced into the next step until they are reassigned, after the next
  forward of each network;
* after training, the memory is re-herded to ``memory_size // known`` per class and the
  network fine-tuned for ``ft_epochs`` (20) on the memory alone, with the same step
  (podnet.py:131-171); then the memory is herded again (podnet.py:93); evaluation is
  NME over the class means (models/base.py:84-92, 151-159).

Epochs: 160 for every task (podnet.py:12; no separate first-task count), 20 of
balanced fine-tuning per later task (podnet.py:14); batch 128, SGD with momentum.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import Option, Phase, StepContext, classes_per_task, known_classes
from costmodel.methods.pycil import PyCILCode, PyCILMethod
from costmodel.models.cifar_resnet import OptionABlock
from costmodel.models.pycil import Block, ConvNet, _stage, _Stem
from costmodel.models.staged import Stages, split
from costmodel.scenario import Scenario

NB_PROXY = 10
"""Proxies per class (podnet.py:19)."""


def reduce_proxies(out: torch.Tensor, nb_proxy: int) -> torch.Tensor:
    """Softmax-weighted sum of each class's proxy similarities (linears.py:236-247)."""
    if nb_proxy == 1:
        return out
    simi_per_class = out.view(out.shape[0], out.shape[1] // nb_proxy, nb_proxy)
    attentions = F.softmax(simi_per_class, dim=-1)
    return (attentions * simi_per_class).sum(-1)


class CosineLinear(nn.Module):
    """Cosine similarity to ``classes * nb_proxy`` proxies (linears.py:37-67)."""

    def __init__(self, in_features: int, classes: int, nb_proxy: int, to_reduce: bool,
                 sigma: bool) -> None:
        super().__init__()
        self.nb_proxy, self.to_reduce = nb_proxy, to_reduce
        self.weight = nn.Parameter(torch.empty(classes * nb_proxy, in_features))
        nn.init.uniform_(self.weight, -1 / math.sqrt(in_features), 1 / math.sqrt(in_features))
        self.sigma = nn.Parameter(torch.ones(1)) if sigma else None

    def forward(self, x: torch.Tensor) -> dict:
        out = F.linear(F.normalize(x, p=2, dim=1), F.normalize(self.weight, p=2, dim=1))
        if self.to_reduce:
            out = reduce_proxies(out, self.nb_proxy)
        if self.sigma is not None:
            out = self.sigma * out
        return {"logits": out}


class SplitCosineLinear(nn.Module):
    """The old classes' proxies (``fc1``) and the new ones' (``fc2``), one scale
    (linears.py:70-100): each part normalises the features itself."""

    def __init__(self, in_features: int, old: int, new: int, nb_proxy: int) -> None:
        super().__init__()
        self.nb_proxy = nb_proxy
        self.fc1 = CosineLinear(in_features, old, nb_proxy, False, False)
        self.fc2 = CosineLinear(in_features, new, nb_proxy, False, False)
        self.sigma = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> dict:
        out1, out2 = self.fc1(x), self.fc2(x)
        out = torch.cat((out1["logits"], out2["logits"]), dim=1)
        out = self.sigma * reduce_proxies(out, self.nb_proxy)
        return {"old_scores": reduce_proxies(out1["logits"], self.nb_proxy),
                "new_scores": reduce_proxies(out2["logits"], self.nb_proxy), "logits": out}


class UcirBlock(Block):
    """UCIR's ResNetBasicblock (ucir_cifar_resnet.py:59-91) over an option-A block's layers,
    with ``DownsampleB`` (ucir_cifar_resnet.py:23-32) where the block changes shape; PyCIL's
    block's forward, without the last block's final ReLU."""

    def __init__(self, block: OptionABlock, last: bool) -> None:
        super().__init__(block)
        self.last = last
        self.downsample = None
        if block.downsample is not None:
            c_in, c_out = block.conv_a.in_channels, block.conv_a.out_channels
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, block.conv_a.stride, 0, bias=False), nn.BatchNorm2d(c_out))


def _ucir_stage(stage: nn.Module, last_stage: bool) -> nn.Module:
    if isinstance(stage, nn.Sequential) and all(isinstance(b, OptionABlock) for b in stage):
        n = len(stage)
        return nn.Sequential(*(UcirBlock(b, last_stage and i == n - 1) for i, b in enumerate(stage)))
    return _stage(stage)  # another backbone: its own stages (PyCIL builds cosine_resnet18 there)


class UcirConvNet(ConvNet):
    """``cosine_resnet32`` (ucir_cifar_resnet.py:94-158): ``{'fmaps', 'features'}``; the
    stem output and every stage map stay referenced until the forward returns (PyCIL's
    ConvNet's forward, over UCIR's blocks and without its unused ``fc``)."""

    def __init__(self, parts: Stages) -> None:
        nn.Module.__init__(self)
        self.stem = _Stem(parts)
        n = len(parts.stages)
        self.stages = nn.ModuleList(_ucir_stage(m, i == n - 1) for i, (_, m) in enumerate(parts.stages))
        self.out_dim = parts.feature_dim


class CosineIncrementalNet(nn.Module):
    """utils/inc_net.py:204-234 with BaseNet's forward (inc_net.py:74-86): a cosine
    classifier with proxies, split into old and new parts after the first task."""

    def __init__(self, parts: Stages, cpt: int, tasks: int) -> None:
        super().__init__()
        self.convnet = UcirConvNet(parts)
        d = self.convnet.out_dim
        self.fc: nn.Module = (CosineLinear(d, cpt, NB_PROXY, True, True) if tasks == 1
                              else SplitCosineLinear(d, cpt * (tasks - 1), cpt, NB_PROXY))

    def feature_dim(self, tasks: int) -> int:
        return self.convnet.out_dim

    def forward(self, x: torch.Tensor) -> dict:
        out = self.convnet(x)
        logits = self.fc(out["features"])
        logits.update(out)
        return logits


def nca(similarities: torch.Tensor, targets: torch.Tensor, scale: float = 1.0,
        margin: float = 0.6) -> torch.Tensor:
    """PODNet's NCA loss with the positive excluded from the denominator (podnet.py:285-320),
    op for op (its ``margins`` tensor is built and never read)."""
    rows = torch.arange(similarities.shape[0], device=similarities.device)
    margins = torch.zeros_like(similarities)
    margins[rows, targets] = margin
    similarities = scale * (similarities - margin)
    similarities = similarities - similarities.max(1)[0].view(-1, 1)
    disable_pos = torch.zeros_like(similarities)
    disable_pos[rows, targets] = similarities[rows, targets]
    numerator = similarities[rows, targets]
    denominator = similarities - disable_pos
    losses = numerator - torch.log(torch.exp(denominator).sum(-1))
    return torch.mean(-losses)


def pod_spatial_loss(old_fmaps: list[torch.Tensor], fmaps: list[torch.Tensor]) -> torch.Tensor:
    """POD-spatial (podnet.py:256-282): width- and height-pooled squared maps, normalised,
    L2 distance per sample.  PyCIL calls it with the student's maps first."""
    loss = torch.zeros((), device=fmaps[0].device)
    for a, b in zip(old_fmaps, fmaps):
        a, b = torch.pow(a, 2), torch.pow(b, 2)
        a_h, b_h = a.sum(dim=3).view(a.shape[0], -1), b.sum(dim=3).view(b.shape[0], -1)
        a_w, b_w = a.sum(dim=2).view(a.shape[0], -1), b.sum(dim=2).view(b.shape[0], -1)
        a, b = torch.cat([a_h, a_w], dim=-1), torch.cat([b_h, b_w], dim=-1)
        a, b = F.normalize(a, dim=1, p=2), F.normalize(b, dim=1, p=2)
        with warnings.catch_warnings():  # deprecated, but PyCIL calls it
            warnings.simplefilter("ignore", UserWarning)
            loss += torch.mean(torch.frobenius_norm(a - b, dim=-1))
    return loss / len(fmaps)


class PODNet(PyCILCode, PyCILMethod):
    name = "podnet"
    summary = "PODNet: cosine classifier with proxies, POD spatial + flat distillation, NME"
    paper = "Douillard et al., ECCV 2020; PyCIL podnet"
    reference_impl = "pycil"
    later_epochs = 160
    cites = ("models/podnet.py:12-21", "models/podnet.py:55-71", "models/podnet.py:95-171",
             "models/podnet.py:189-237", "models/podnet.py:256-324", "utils/inc_net.py:204-234",
             "convs/linears.py:37-100", "convs/linears.py:236-247",
             "convs/ucir_cifar_resnet.py:23-158", "models/base.py:180-285")
    options = {"init_epochs": Option(160, "epochs of the first task (podnet.py:12: every task's)"),
               "finetune_epochs": Option(20, "epochs of balanced fine-tuning on the memory "
                                             "after each later task (ft_epochs)"),
               "lambda_c": Option(5.0, "weight of POD-spatial (lambda_c_base)"),
               "lambda_f": Option(1.0, "weight of POD-flat (lambda_f_base)")}

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return CosineIncrementalNet(split(build(), self.name), classes_per_task(s), tasks_seen)

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 0 if variant == "first" else 1

    def schedule(self, s: Scenario) -> list[Phase]:
        """The first task, every later task (new images + memory), then per later task the
        balanced fine-tuning on the memory alone: ``memory_size // known`` exemplars per
        class, the new classes' included (podnet.py:140-146).  Herding runs twice per later
        task (before fine-tuning and after it): twice the images and the memory forward."""
        n, m, cpt = s.images_per_task(), s.buffer_size, classes_per_task(s)
        out = [Phase("first task", 1, n, int(self.option(s, "init_epochs")), "first",
                     extra_forward_samples=n),
               Phase("later tasks (new images + memory)", s.tasks - 1, n + m, s.epochs, "main",
                     first_task=1, mixed=True, extra_forward_samples=2 * (n + m))]
        tune = int(self.option(s, "finetune_epochs"))
        for t in range(1, s.tasks):
            per_class = m // (t * cpt)
            out.append(Phase(f"task {t} balanced fine-tuning (memory only)", 1,
                             per_class * (t + 1) * cpt, tune, "main", first_task=t))
        return out

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        known = known_classes(ctx)
        outputs = ctx.model(x)
        logits, features, fmaps = outputs["logits"], outputs["features"], outputs["fmaps"]
        lsc_loss = nca(logits, y)
        if not known:
            loss = lsc_loss + 0.0 + 0.0
        else:
            total = known + ctx.classes // ctx.tasks
            factor = math.sqrt(total / (total - known))
            with torch.no_grad():
                old_outputs = ctx.state["teacher"](x)
            old_features, old_fmaps = old_outputs["features"], old_outputs["fmaps"]
            ones = torch.ones(x.shape[0], device=x.device)
            flat_loss = F.cosine_embedding_loss(features, old_features.detach(), ones) \
                * factor * float(ctx.options.get("lambda_f", 1.0))
            del ones
            spatial_loss = pod_spatial_loss(fmaps, old_fmaps) * factor \
                * float(ctx.options.get("lambda_c", 5.0))
            loss = lsc_loss + flat_loss + spatial_loss
        ctx.zero_grad()
        ctx.backward(loss)
        _, preds = torch.max(logits, dim=1)
        correct = preds.eq(y.expand_as(preds)).sum()
        # What outlives the step until the next one's backward: the predictions.  The dicts
        # and losses are reassigned by then, after the next forward of each network: the
        # peak (in backward) no longer holds them, so they are not carried.
        ctx.keep.update(preds=preds, correct=correct)
        return loss.detach()
