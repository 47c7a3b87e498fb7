"""The catalog of continual-learning methods: one module per method.

Every :class:`~costmodel.methods.base.Method` subclass with a ``name`` in a
module of this package is registered under that name and its ``impl``: the
method's clean step ('costcl') and one implementation per public codebase that
runs it ('lightcl', 'mammoth', 'pycil').  A user's method is found the same way
from outside (:mod:`costmodel.plugins`) and is then no different from these.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from costmodel import plugins
from costmodel.errors import CostclError, suggest
from costmodel.methods.base import Method, Option
from costmodel.scenario import Scenario, method_and_impl

GLOBAL_DEFAULTS = {"model": "resnet18-cifar", "dataset": "cifar10", "batch_size": 32,
                   "optimizer": "sgd", "holdout": 0.0, "sparsity": 0.0}


@functools.cache
def _registry() -> dict[str, dict[str, Method]]:
    found: dict[str, dict[str, Method]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Method) and obj.name \
                    and obj.__module__ == module.__name__:
                impls = found.setdefault(obj.name, {})
                if obj.impl in impls:
                    raise RuntimeError(f"{obj.name}@{obj.impl} is defined twice")
                impls[obj.impl] = obj()
    return {name: dict(sorted(impls.items(), key=lambda kv: (kv[0] != "costcl", kv[0])))
            for name, impls in sorted(found.items())}


def catalog() -> dict[str, Method]:
    """Every method under its default implementation."""
    return {name: impls[default_impl(name)] for name, impls in _registry().items()}


def implementations(name: str) -> dict[str, Method]:
    """A method's implementations by ``--impl`` name, costcl's own first.

    ``name`` is a catalog name, a plugin's ``package.module:ClassName`` or a name an
    installed package registers (:mod:`costmodel.plugins`); a catalog name wins.
    """
    methods = _registry()
    if name in methods:
        return methods[name]
    if plugins.target(name) is not None:
        return _plugin(name)
    raise suggest(name, [*methods, *plugins.registered()], "method")


@functools.cache
def _plugin(name: str) -> dict[str, Method]:
    """A plugin's class and the implementations of it beside it in its module: the
    subclasses with its ``name`` and another ``impl``."""
    cls = plugins.load(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)) or cls is Method:
        what = f"the class {cls.__name__}" if isinstance(cls, type) else \
            f"a {type(cls).__name__}"
        raise CostclError(f"method plugin {name!r} is {what}, not a subclass of "
                          "costmodel.methods.base.Method; see docs/methods.md")
    if cls.step is Method.step:
        raise CostclError(f"method plugin {name!r} ({cls.__name__}) has no step(ctx, x, y); "
                          "see docs/methods.md")
    family = [cls] + [c for c in vars(importlib.import_module(cls.__module__)).values()
                      if isinstance(c, type) and c is not cls and issubclass(c, cls)
                      and c.name == cls.name and c.impl != cls.impl]
    impls: dict[str, Method] = {}
    for c in family:
        method = c()
        if not c.name:
            method.name = name  # type: ignore[misc] - shown in messages and tables
        impls.setdefault(c.impl, method)
    return dict(sorted(impls.items(), key=lambda kv: (kv[0] != "costcl", kv[0])))


def method_rows() -> list[tuple[str, str, str]]:
    """(name, implementations, what it does and where it comes from) of every method
    ``--method`` can name: the catalog's, then those installed packages register."""
    def impls(name: str) -> str:
        return ", ".join(f"{i} (default)" if i == default_impl(name) else i
                         for i in implementations(name))

    rows = [(m.name, impls(m.name), f"{m.summary}; from {m.paper}") for m in catalog().values()]
    for name, reg in plugins.registered().items():
        where = f"plugin {reg.target} of {reg.distribution}"
        if name in _registry():
            rows.append((name, "-", f"{where}: not used, the catalog's {name} has this name"))
            continue
        try:
            m = get(name)
        except CostclError as e:
            rows.append((name, "-", f"{where}: cannot be loaded: {e}"))
            continue
        paper = f"; from {m.paper}" if m.paper else ""
        rows.append((name, impls(name), f"{m.summary or 'no summary'}{paper}; {where}"))
    return rows


def default_impl(name: str) -> str:
    """The method's reference public code where costcl reproduces it, else 'costcl'."""
    impls = implementations(name)
    ref = next(iter(impls.values())).reference_impl
    return ref if ref in impls else next(iter(impls))


def get(name: str, impl: str | None = None) -> Method:
    impls = implementations(name)
    impl = impl or default_impl(name)
    if impl not in impls:
        raise CostclError(f"method {name!r} has no implementation {impl!r}; it has: "
                          f"{', '.join(impls)} (use --impl NAME)")
    return impls[impl]


def named(s: Scenario, text: str, **changes: Any) -> Scenario:
    """``s`` for the method ``text``: a name, or NAME@IMPL for one implementation.

    In a command over several methods, a shared ``--sparsity`` is for the sparse ones,
    each ``--option`` for the methods that take it (:func:`check_shared`), and a shared
    ``--impl`` for every method not named with its own ``@IMPL``.
    """
    name, impl = method_and_impl(text)
    if impl is None and s.impl is not None:
        impls = implementations(name)
        if s.impl not in impls:
            raise CostclError(f"--impl {s.impl}: {name} has no such implementation (it has "
                              f"{', '.join(impls)}); name it as {name}@IMPL in --methods")
        impl = s.impl
    method = get(name, impl)
    if s.sparsity and not method.sparse:
        changes.setdefault("sparsity", None)
    changes.setdefault("options", {k: v for k, v in s.options.items()
                                   if k in method.options or k in TRAINER_OPTIONS})
    return s.replace(method=name, impl=impl, **changes)


def check_trains(s: Scenario, command: str = "costcl train") -> None:
    """A one-line error unless the bundled trainer runs ``s``'s method and implementation."""
    if get(s.method, s.impl).trains:
        return
    own = implementations(s.method).get("costcl")
    if own is not None and own.trains:
        raise CostclError(f"{command} runs {s.method}'s clean step, not {s.method}@{s.impl}'s "
                          "loop; use --impl costcl (impl = \"costcl\" in a file)")
    runnable = ", ".join(n for n in catalog() if implementations(n).get("costcl", get(n)).trains)
    raise CostclError(f"{command} runs {runnable}; {s.method!r} is costed and validated "
                      "(costcl validate) but not trained here")


def check_shared(s: Scenario, names: list[str] | tuple[str, ...]) -> None:
    """Every ``--option`` of a command over ``names`` is taken by one of them at least."""
    taken = set(TRAINER_OPTIONS).union(*(get(*method_and_impl(n)).options for n in names))
    unknown = sorted(set(s.options) - taken)
    if unknown:
        raise CostclError(f"--option {unknown[0]} is taken by none of {', '.join(names)}; "
                          "leave it out or add a method that takes it (see `costcl methods`)")


TRAINER_OPTIONS = {"lr": Option(0.01, "learning rate of the bundled trainer (costs do not depend on it)",
                          above=0.0)}
"""Options every method takes because the trainer, not the step, reads them."""


def check_options(s: Scenario, method: Method) -> dict[str, Any]:
    """The scenario's options, each checked against its declaration (type, range)."""
    known = {**method.options, **TRAINER_OPTIONS}
    unknown = sorted(set(s.options) - set(known))
    if unknown:
        takes = ", ".join(method.options) or "no options"
        raise CostclError(f"method {method.name!r} (--impl {method.impl}) takes no option "
                          f"{unknown[0]!r}; it takes: {takes} (and lr, for costcl train)")
    return {k: known[k].check(k, v) for k, v in s.options.items()}


def resolve(s: Scenario) -> Scenario:
    """Fill every field the user left open: method paper defaults, then dataset, then costcl's."""
    method = get(s.method, s.impl)
    s = s.replace(impl=method.impl, options=check_options(s, method))
    if s.sparsity and not method.sparse:
        sparse = ", ".join(n for n, m in catalog().items() if m.sparse)
        raise CostclError(f"method {method.name!r} has no sparse variant; --sparsity applies to "
                          f"{sparse} (leave it out for {method.name})")
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
    if out.batch_size > out.images_per_task():
        raise CostclError(f"batch {out.batch_size:,} is larger than a task's "
                          f"{out.images_per_task():,} training images; use --batch-size "
                          f"{out.images_per_task():,} or fewer")
    if out.classes % out.tasks:
        even = [t for t in range(2, out.classes + 1) if out.classes % t == 0 and t <= 20]
        raise CostclError(f"{out.tasks} tasks do not split {out.classes} classes evenly; use "
                          f"--tasks {' or '.join(map(str, even[:6])) or 1} (or --num-classes "
                          f"{out.classes - out.classes % out.tasks})")
    return out
