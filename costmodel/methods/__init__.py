"""The catalog of continual-learning methods: one module per method.

Every :class:`~costmodel.methods.base.Method` subclass with a ``name`` in a
module of this package is registered under that name.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from costmodel.errors import CostclError, suggest
from costmodel.methods.base import Method
from costmodel.scenario import Scenario

GLOBAL_DEFAULTS = {"model": "resnet18-cifar", "dataset": "cifar10", "batch_size": 32,
                   "optimizer": "sgd", "holdout": 0.0, "sparsity": 0.0}


@functools.cache
def catalog() -> dict[str, Method]:
    found: dict[str, Method] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Method) and obj.name \
                    and obj.__module__ == module.__name__:
                found[obj.name] = obj()
    return dict(sorted(found.items()))


def get(name: str) -> Method:
    methods = catalog()
    if name not in methods:
        raise suggest(name, methods, "method")
    return methods[name]


def resolve(s: Scenario) -> Scenario:
    """Fill every field the user left open: method paper defaults, then dataset, then costcl's."""
    method = get(s.method)
    unknown = sorted(set(s.options) - set(method.options))
    if unknown:
        takes = ", ".join(method.options) or "no options"
        raise CostclError(f"method {method.name!r} takes no option {unknown[0]!r}; it takes: {takes}")
    if s.setting not in method.settings:
        raise CostclError(f"method {method.name!r} cannot run under {s.setting} evaluation "
                          f"({method.settings_why}); use --setting {method.settings[0]}")
    filled: dict[str, Any] = {}
    for key in ("model", "dataset"):  # first: the other defaults depend on the dataset
        if getattr(s, key) is None:
            filled[key] = method.defaults.get(key, GLOBAL_DEFAULTS[key])
    s = s.replace(**filled)
    filled = {}
    data = s.data
    fallback = {
        **GLOBAL_DEFAULTS,
        "tasks": data.tasks,
        "epochs": data.epochs,
        "buffer_size": 0,
        "replay_batch": 0,
    }
    for key, value in {**fallback, **method.defaults}.items():
        if getattr(s, key) is None:
            filled[key] = value(s) if callable(value) else value
    if method.replays and s.replay_batch is None and "replay_batch" not in method.defaults:
        filled["replay_batch"] = s.batch_size or filled.get("batch_size", 32)
    options = {k: o.default for k, o in method.options.items()} | dict(s.options)
    out = s.replace(**filled, options=options)
    if method.replay_is_buffer:  # every stored sample is forwarded in every step
        if s.replay_batch is not None and s.replay_batch != out.buffer_size:
            raise CostclError(f"{method.name} forwards all {out.buffer_size} stored samples in "
                              "every step; set --buffer-size instead of --replay-batch")
        out = out.replace(replay_batch=out.buffer_size)
    if out.tasks > out.classes:
        raise CostclError(f"{out.tasks} tasks cannot split {out.classes} classes; "
                          f"use --tasks {out.classes} or fewer")
    return out
