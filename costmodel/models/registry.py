"""Model names a user can type, and how to build each on any device.

* built-in CIFAR ResNets (:mod:`costmodel.models.cifar_resnet`);
* torchvision's ImageNet-style models by short name (``resnet18``) or any
  classification model as ``torchvision:NAME``;
* any factory as ``package.module:callable`` (called with ``num_classes=`` when
  it accepts it).

Models are built under ``torch.device(device)``, so the engine builds them on
the meta device: no memory, no initialisation cost worth mentioning.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from costmodel.errors import CostclError, suggest


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int, int], nn.Module]
    """(num_classes, in_channels) -> module."""
    description: str
    family: str


def _cifar18(num_classes: int, in_channels: int) -> nn.Module:
    from costmodel.models.cifar_resnet import CifarResNet18
    return CifarResNet18(num_classes, in_channels=in_channels)


def _cifar_a(depth: int) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        from costmodel.models.cifar_resnet import CifarResNetA
        return CifarResNetA(depth, num_classes, in_channels)
    return build


def _convnet(depth: int) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        from costmodel.models.convnets import conv2, conv4
        return (conv2 if depth == 2 else conv4)(num_classes, in_channels)
    return build


def _torchvision_resnet(block: str, layers: list[int]) -> Callable[[int, int], nn.Module]:
    """An ImageNet-style ResNet torchvision does not name (PyCIL's resnet10 and resnet26)."""
    def build(num_classes: int, in_channels: int) -> nn.Module:
        from torchvision.models import resnet
        if in_channels != 3:
            raise CostclError("ImageNet-style ResNets take 3 input channels; use --input-size 3,H,W")
        return resnet.ResNet(getattr(resnet, block), layers, num_classes=num_classes)
    return build


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision
        if in_channels != 3:
            raise CostclError(f"torchvision model {name!r} takes 3 input channels, not "
                              f"{in_channels}; use --input-size 3,H,W")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return build


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("resnet18-cifar", _cifar18, "ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), "
                  "as LightCL and Mammoth train it", "cifar"),
        *(ModelSpec(f"resnet{d}-cifar", _cifar_a(d), f"PyCIL's ResNet-{d} (option-A shortcuts, "
                    "widths 16/32/64), as MEMO and PyCIL train it", "cifar")
          for d in (14, 20, 26, 32)),
        ModelSpec("conv2", _convnet(2), "MEMO's ConvNet2 for 32x32 inputs (two conv blocks)", "cifar"),
        ModelSpec("conv4", _convnet(4), "MEMO's ConvNet4 for ImageNet (four conv blocks)", "imagenet"),
        ModelSpec("resnet10", _torchvision_resnet("BasicBlock", [1, 1, 1, 1]),
                  "ResNet-10 (ImageNet-style BasicBlocks [1,1,1,1], as PyCIL's resnet10)", "imagenet"),
        ModelSpec("resnet18", _torchvision("resnet18"), "torchvision ResNet-18 (ImageNet-style)", "imagenet"),
        ModelSpec("resnet26", _torchvision_resnet("Bottleneck", [2, 2, 2, 2]),
                  "ResNet-26 (ImageNet-style Bottlenecks [2,2,2,2], as PyCIL's resnet26)", "imagenet"),
        ModelSpec("resnet34", _torchvision("resnet34"), "torchvision ResNet-34 (ImageNet-style)", "imagenet"),
        ModelSpec("resnet50", _torchvision("resnet50"), "torchvision ResNet-50 (ImageNet-style)", "imagenet"),
        ModelSpec("mobilenet_v2", _torchvision("mobilenet_v2"), "torchvision MobileNetV2", "imagenet"),
    )
}


@functools.cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision
    return tuple(torchvision.models.list_models(module=torchvision.models))


def resolve(name: str) -> ModelSpec:
    """The spec for a model name: built-in, ``torchvision:NAME`` or ``module:callable``."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith("torchvision:"):
        tv = name.split(":", 1)[1]
        if tv not in _torchvision_names():
            raise suggest(tv, _torchvision_names(), "torchvision classification model")
        return ModelSpec(name, _torchvision(tv), f"torchvision {tv}", "torchvision")
    if ":" in name:
        return ModelSpec(name, _factory(name), f"user factory {name}", "user")
    raise suggest(name, list(MODELS) + ["torchvision:NAME", "package.module:callable"], "model")


def _factory(path: str) -> Callable[[int, int], nn.Module]:
    module_name, _, attr = path.partition(":")

    def build(num_classes: int, in_channels: int) -> nn.Module:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise CostclError(f"cannot load model factory {path!r}: {e}; give it as "
                              "package.module:callable on the Python path") from None
        except Exception as e:  # noqa: BLE001 - a user's module can raise anything on import
            where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
            raise CostclError(f"model factory module {module_name!r} fails on import: "
                              f"{type(e).__name__}: {getattr(e, 'msg', e)}{where}; fix it and "
                              "rerun") from None
        try:
            fn = getattr(module, attr)
        except AttributeError as e:
            raise CostclError(f"cannot load model factory {path!r}: {e}; give it as "
                              "package.module:callable on the Python path") from None
        if not callable(fn):
            raise CostclError(f"model factory {path!r} names a {type(fn).__name__} object, not a "
                              "function or class that builds a model")
        try:
            takes = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            takes = {}
        try:
            model = fn(num_classes=num_classes) if "num_classes" in takes else fn()
        except Exception as e:  # noqa: BLE001 - a user's factory can raise anything
            raise CostclError(f"model factory {path!r} raised {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise CostclError(f"model factory {path!r} returned {type(model).__name__}, "
                              "not a torch.nn.Module")
        return model
    return build


def build_model(name: str, num_classes: int, in_channels: int = 3, device: str = "meta",
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build a model on ``device`` (meta by default) in ``dtype``."""
    spec = resolve(name)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the dtype: no conversion pass afterwards
    try:
        with torch.device(device):
            model = spec.build(num_classes, in_channels)
    finally:
        torch.set_default_dtype(previous)
    return model


def head_name(model: nn.Module) -> str | None:
    """The classifier: the last ``nn.Linear`` in module order."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return last


def backbone_params(model: nn.Module) -> int:
    """Parameters without the classifier head (MEMO's 'model size')."""
    head = head_name(model)
    return sum(p.numel() for n, p in model.named_parameters()
               if head is None or not (n == head or n.startswith(head + ".")))
