"""Methods from outside the catalog: ``package.module:ClassName`` or an installed entry point.

A user's method is named on any command the way a user's model is: by the path
of its class (``--method mypkg.methods:MyReplay``), or by the name an installed
package registers under the entry-point group ``costcl.methods``::

    [project.entry-points."costcl.methods"]
    my-replay = "mypkg.methods:MyReplay"

This module finds and imports them; :mod:`costmodel.methods` checks what it got
is a :class:`~costmodel.methods.base.Method` and builds its implementations.  It
imports neither torch nor the catalog, so the answer cache can fingerprint a
plugin's source without starting torch.  A catalog name always means the
catalog's method: an entry point of the same name is listed as shadowed.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from costmodel.errors import CostclError

GROUP = "costcl.methods"


@dataclass(frozen=True)
class Registered:
    """A method an installed package registers under :data:`GROUP`."""

    name: str
    target: str
    """``package.module:ClassName``."""
    distribution: str
    """The package that registers it, with its version ('mypkg 0.1')."""


def is_path(name: str) -> bool:
    return ":" in name


@functools.cache
def registered() -> dict[str, Registered]:
    """Every method registered by an installed package, by name (first one wins)."""
    found: dict[str, Registered] = {}
    for ep in entry_points(group=GROUP):
        if ep.name not in found:
            found[ep.name] = Registered(ep.name, ep.value, _distribution(ep))
    return found


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def target(name: str) -> str | None:
    """The class path a method name stands for; ``None``: not a plugin (the catalog's)."""
    if is_path(name):
        return name
    reg = registered().get(name)
    return reg.target if reg is not None else None


def load(name: str) -> type:
    """The class a plugin name stands for, imported; a one-line error if it cannot be.

    ``name`` is a class path or a registered name (:func:`target` is not ``None``).
    """
    path = target(name)
    if path is None:
        raise CostclError(f"method {name!r} is neither in the catalog nor registered by an "
                          f"installed package; see `costcl methods`")
    label = path if path == name else f"{name} ({path})"
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in
                                               (*module_name.split("."), *attr.split("."))):
        raise CostclError(f"method plugin {name!r} is not a class path; write it as "
                          "package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise CostclError(f"method plugin {label}: no module named {module_name!r}; install "
                              "its package, or run costcl from the folder that holds it") from None
        raise CostclError(f"method plugin {label}: importing {module_name} failed: "
                          f"{_first_line(e)}; install what it needs") from None
    except Exception as e:  # noqa: BLE001 - a user's module can raise anything at import
        raise CostclError(f"method plugin {label}: importing {module_name} failed: "
                          f"{_first_line(e)}; fix the module") from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CostclError(f"method plugin {label}: module {module_name} has no {attr!r}; "
                              "check the class name after the colon")
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def forget() -> None:
    """Forget the registered methods and imported plugins (after installing a package)."""
    registered.cache_clear()
    importlib.invalidate_caches()
