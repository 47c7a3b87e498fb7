"""The scenario flags every costing command shares, declared once.

:func:`scenario_options` adds these parameters to a command's signature (typer
reads signatures) and hands the command a built :class:`Scenario` instead:
flags override the ``--config`` file, which overrides the method's defaults.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from costmodel.scenario import build, load_toml, parse_input_size, parse_option

_PANEL = "Scenario"

SCENARIO_PARAMS: list[inspect.Parameter] = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)
    for name, ann in [
        ("method", Annotated[Optional[str], typer.Option(help="CL method (see `costcl methods`), NAME@IMPL, or your own as package.module:ClassName (docs/methods.md).", rich_help_panel=_PANEL)]),
        ("impl", Annotated[Optional[str], typer.Option(help="Implementation of the method: costcl, or the public codebase it reproduces (lightcl, mammoth, pycil); see `costcl methods`.", rich_help_panel=_PANEL)]),
        ("model", Annotated[Optional[str], typer.Option(help="Model: a name from `costcl models`, torchvision:NAME or package.module:callable.", rich_help_panel=_PANEL)]),
        ("dataset", Annotated[Optional[str], typer.Option(help="Dataset: cifar10, cifar100, tinyimagenet, imagenet100, imagenet32.", rich_help_panel=_PANEL)]),
        ("batch_size", Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Samples per step.", rich_help_panel=_PANEL)]),
        ("replay_batch", Annotated[Optional[int], typer.Option(help="Replayed samples per step (replay methods).", rich_help_panel=_PANEL)]),
        ("buffer_size", Annotated[Optional[int], typer.Option(help="Exemplars kept in the replay buffer.", rich_help_panel=_PANEL)]),
        ("epochs", Annotated[Optional[int], typer.Option(help="Epochs per task.", rich_help_panel=_PANEL)]),
        ("tasks", Annotated[Optional[int], typer.Option(help="Number of tasks.", rich_help_panel=_PANEL)]),
        ("optimizer", Annotated[Optional[str], typer.Option(help="sgd, sgd-momentum, adam or adamw.", rich_help_panel=_PANEL)]),
        ("train_from", Annotated[Optional[str], typer.Option(help="Freeze every module before the first one named NAME...", rich_help_panel=_PANEL)]),
        ("dtype", Annotated[Optional[str], typer.Option(help="fp32, fp16 or bf16.", rich_help_panel=_PANEL)]),
        ("input_size", Annotated[Optional[str], typer.Option(help="One sample's shape, 1 to 4 sizes: C,H,W (3,64,64), C,L audio (1,16000), L tokens or features (784), C,T,H,W.", rich_help_panel=_PANEL)]),
        ("input_dtype", Annotated[Optional[str], typer.Option(help="float (default: the --dtype) or int64 token ids (with --vocab).", rich_help_panel=_PANEL)]),
        ("vocab", Annotated[Optional[int], typer.Option(help="Token ids are drawn in [0, N) (with --input-dtype int64).", rich_help_panel=_PANEL)]),
        ("num_classes", Annotated[Optional[int], typer.Option(help="Classifier width (default: the dataset's classes).", rich_help_panel=_PANEL)]),
        ("sparsity", Annotated[Optional[float], typer.Option(help="Fraction of weights pruned, in [0, 1).", rich_help_panel=_PANEL)]),
        ("holdout", Annotated[Optional[float], typer.Option(help="Fraction of training images held out.", rich_help_panel=_PANEL)]),
        ("device", Annotated[Optional[str], typer.Option(help="Where the step runs: cpu or cuda (allocator and optimizer code path).", rich_help_panel=_PANEL)]),
        ("attention", Annotated[Optional[str], typer.Option(help="Attention kernel: auto (what PyTorch selects on the --device), math (bmm, softmax, bmm) or fused.", rich_help_panel=_PANEL)]),
        ("setting", Annotated[Optional[str], typer.Option(help="class-il (default) or task-il evaluation.", rich_help_panel=_PANEL)]),
        ("option", Annotated[Optional[list[str]], typer.Option(help="Method option KEY=VALUE (repeatable).", rich_help_panel=_PANEL)]),
        ("config", Annotated[Optional[Path], typer.Option(help="Scenario TOML file; flags override it.", rich_help_panel=_PANEL)]),
    ]
]


def scenario_from_flags(values: dict[str, Any]):  # noqa: ANN201
    """Build the Scenario from the shared flags (``None`` = not given)."""
    config = values.pop("config", None)
    file_values = load_toml(config) if config is not None else None
    options = dict(parse_option(o) for o in (values.pop("option", None) or []))
    if values.get("input_size") is not None:
        values["input_size"] = parse_input_size(values["input_size"])
    return build(file_values, options=options or None, **values)


def scenario_options(fn: Callable[..., Any] | None = None, *,
                     exclude: tuple[str, ...] = ()) -> Any:
    """Give ``fn`` the scenario flags; it receives ``scenario=`` instead.

    ``exclude`` leaves flags out for a command that uses the name otherwise
    (``costcl fit --device`` names a device profile).
    """
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "scenario"]
        shared = [p for p in SCENARIO_PARAMS if p.name not in exclude]
        names = [p.name for p in shared]

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            flags = {k: kwargs.pop(k) for k in names}
            return fn(scenario=scenario_from_flags(flags), **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]
        return wrapper

    return decorate(fn) if fn is not None else decorate


DeviceProfileFile = Annotated[Optional[Path], typer.Option(
    "--device-profile", help="A device profile TOML (costcl calibrate --out FILE) for the time "
    "model; default: this machine's from costcl calibrate, else a generic uncalibrated one.")]
TimeBudget = Annotated[Optional[str], typer.Option(
    "--time-budget", help="Hours of the device: 2h, 90m, 3600s, 1d.")]


def time_profile(path: Path | None, device: str = "cpu"):  # noqa: ANN201
    """The profile ``--device-profile`` names (checked, one line if it is bad), else
    ``None``: the estimate then takes the default for its device."""
    if path is None:
        return None
    from costmodel.time_profile import load
    return load(path)
