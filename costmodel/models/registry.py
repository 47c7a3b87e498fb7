"""Model names a user can type, and how to build each on any device.

* built-in CIFAR ResNets (:mod:`costmodel.models.cifar_resnet`);
* torchvision's ImageNet-style models by short name (``resnet18``) or any
  classification model as ``torchvision:NAME``;
* any factory as ``package.module:callable`` (called with ``num_classes=`` when
  it accepts it).

Models are built under ``torch.device(device)``, so the engine builds them on
the meta device: no memory, no initialisation cost worth mentioning.  A model
whose constructor reads tensor values (torchvision's RegNets compute their block
widths with ``.tolist()``) cannot be built that way; :func:`build_model` then
builds it with plain tensors on the CPU and only its parameters and buffers on
meta, and as a last resort on the CPU and moved to meta (:data:`ROUTES`).  Which
route a model took is remembered per process (:func:`build_route`), so the
failing attempt is paid once.

GoogLeNet and Inception-v3 are built with ``aux_logits=False``: in training mode
their auxiliary heads make the forward return a tuple, and torchvision trains
neither with them: its reference ``references/classification/train.py`` calls
``criterion(model(image), target)`` with no auxiliary loss, and both models'
ImageNet weights are "ported from the original paper" (their weights' ``_docs``),
and ``googlenet(weights=...)`` drops the auxiliary heads unless asked.  The
step costed is the main head's; the papers' extra losses (0.3 x each auxiliary
loss in GoogLeNet) are not counted.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
from collections.abc import Callable, Iterator
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


TORCHVISION_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
"""Arguments beyond ``num_classes`` for torchvision models whose defaults do not train as
one tensor of logits (see the module docstring); ``init_weights=True`` is the default
they warn about, said explicitly."""


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision
        if in_channels != 3:
            raise CostclError(f"torchvision model {name!r} takes 3 input channels, not "
                              f"{in_channels}; use --input-size 3,H,W")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                            **TORCHVISION_KWARGS.get(name, {}))
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
            raise ModelCodeFailed(f"model factory {path!r} raised {type(e).__name__}: "
                                  f"{_first_line(e)}") from None
        if not isinstance(model, nn.Module):
            raise CostclError(f"model factory {path!r} returned {type(model).__name__}, "
                              "not a torch.nn.Module")
        return model
    return build


class ModelCodeFailed(CostclError):
    """The model's own constructor raised: on meta that may be the device's fault, so
    :func:`build_model` tries the next route before it gives this message."""


ROUTES = ("meta", "meta-params", "cpu")
"""How a model is built for the meta device, cheapest first: all on meta; plain tensors
on the CPU and parameters and buffers on meta; all on the CPU, then moved to meta
(allocates and initialises real weights: the last resort)."""

_ROUTE_OF: dict[str, str] = {}


def build_route(name: str) -> str | None:
    """The route (one of :data:`ROUTES`) the last meta build of ``name`` took."""
    return _ROUTE_OF.get(name)


def build_model(name: str, num_classes: int, in_channels: int = 3, device: str = "meta",
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build a model on ``device`` (meta by default) in ``dtype``."""
    spec = resolve(name)
    with _default_dtype(dtype):  # build in the dtype: no conversion pass afterwards
        if device == "meta":
            return _build_for_meta(spec, num_classes, in_channels)
        try:
            with torch.device(device):
                return spec.build(num_classes, in_channels)
        except CostclError:
            raise
        except Exception as e:  # noqa: BLE001 - a model's constructor can raise anything
            raise _build_error(spec.name, e) from None


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _build_for_meta(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    """Try the routes from the one that worked last for this model; a bad argument
    (a plain :class:`CostclError`) fails at once, the last route's error is the message."""
    first = ROUTES.index(_ROUTE_OF.get(spec.name, ROUTES[0]))
    error: Exception | None = None
    for route in ROUTES[first:]:
        try:
            model = _ON_ROUTE[route](spec, num_classes, in_channels)
        except ModelCodeFailed as e:
            error = e
        except CostclError:
            raise
        except Exception as e:  # noqa: BLE001 - a model's constructor can raise anything
            error = e
        else:
            _ROUTE_OF[spec.name] = route
            return model
    assert error is not None
    raise (error if isinstance(error, CostclError) else _build_error(spec.name, error)) from None


def _build_error(name: str, e: Exception) -> CostclError:
    return CostclError(f"model {name!r} fails to build: {type(e).__name__}: {_first_line(e)}")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def _all_on_meta(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    with torch.device("meta"):
        return spec.build(num_classes, in_channels)


def _params_on_meta(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    """Tensors the constructor computes with stay real (CPU); each parameter and buffer
    goes to meta as it is registered, before its initialiser runs, so no weight is
    initialised and at most one is allocated at a time (uninitialised)."""
    with torch.device("cpu"), _register_on_meta():
        model = spec.build(num_classes, in_channels)
    return model.to("meta")  # tensors assigned to existing buffer slots skip registration


def _on_cpu_then_meta(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    with torch.device("cpu"):
        model = spec.build(num_classes, in_channels)
    return model.to("meta")


_ON_ROUTE: dict[str, Callable[[ModelSpec, int, int], nn.Module]] = {
    "meta": _all_on_meta, "meta-params": _params_on_meta, "cpu": _on_cpu_then_meta}


@contextlib.contextmanager
def _register_on_meta() -> Iterator[None]:
    """``nn.Module.register_parameter``/``register_buffer`` that move the tensor to meta
    (``Module.__setattr__`` registers through them).  Process-wide while it lasts."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register_parameter(module, name, param)
        if param is not None and not param.is_meta:
            kwargs = {**param.__dict__, "requires_grad": param.requires_grad}
            module._parameters[name] = type(param)(param.to("meta"), **kwargs)

    def buffer(module: nn.Module, name: str, tensor: torch.Tensor | None,
               persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent)
        if tensor is not None and not tensor.is_meta:
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


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
