"""Typed, range-checked values from any input: flags, TOML files, options, budgets.

Every check returns the value in its canonical type or raises one
:class:`~costmodel.errors.CostclError` naming the input and the fix.  Python's
own coercions are the trap here: ``bool`` is an ``int`` (``tasks = true`` would be
one task), ``float("nan")`` compares false with every bound (so ``nan <= 0`` lets
it through), and ``"False"`` is a true string.  Each check below closes one.
"""
from __future__ import annotations

import math
import operator
from typing import Any

from costmodel.errors import CostclError

BOOL_WORDS = {"true": True, "false": False}
"""Booleans are true or false, in any case; yes/no/1/0/maybe are refused."""

MAX_COUNT = 2**24
"""Largest batch, buffer or sample count accepted (16,777,216): beyond it the
costs leave int64 and nothing an edge device runs comes near it."""


def boolean(value: Any, name: str) -> bool:
    """``value`` as a bool: a bool, or the words true/false in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    raise CostclError(f"{name} must be true or false, got {value!r}")


def number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None, fix: str = "") -> float:
    """A finite real number within the bounds given (``above``/``below``: strict)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CostclError(f"{name} must be a number, got {value!r}{_fix(fix)}")
    if not math.isfinite(value):
        raise CostclError(f"{name} must be a finite number, got {value}{_fix(fix)}")
    for bound, op, holds in ((above, ">", operator.gt), (minimum, ">=", operator.ge),
                             (below, "<", operator.lt), (maximum, "<=", operator.le)):
        if bound is not None and not holds(value, bound):
            raise CostclError(f"{name} must be {op} {bound:g}, got {value:g}{_fix(fix)}")
    return float(value)


def count(value: Any, name: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    """A whole number in [minimum, maximum] (``True`` is not 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CostclError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise CostclError(f"{name} must be a whole number >= {minimum}, got {value:,}")
    if value > maximum:
        raise CostclError(f"{name} must be at most {maximum:,}, got {value:,}")
    return value


def text(value: Any, name: str) -> str:
    """A non-empty string (a TOML ``method = 3`` is refused here, not deep inside)."""
    if not isinstance(value, str) or not value.strip():
        raise CostclError(f"{name} must be a name (a non-empty string), got {value!r}")
    return value


def _fix(fix: str) -> str:
    return f"; {fix}" if fix else ""
