"""The one exception type a user can cause.

Every layer raises :class:`CostclError` for bad input; the CLI turns it into a
single line on stderr and exit code 2.  Keeping the fix next to the problem in
the message is the point: "unknown model 'resnet19'; did you mean resnet18?".
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class CostclError(ValueError):
    """Bad input, with a message that names the problem and the fix."""


def suggest(name: str, choices: Iterable[str], what: str) -> CostclError:
    """An 'unknown X' error that lists the nearest valid names."""
    choices = sorted(choices)
    near = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if near:
        hint = "did you mean " + " or ".join(near) + "?"
    else:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        hint = f"choose one of: {shown}"
    return CostclError(f"unknown {what} {name!r}; {hint}")
