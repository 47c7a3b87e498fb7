"""The codebases costcl's implementations reproduce, and what each does for every method.

A method's cost depends on the code that runs it, not only on the method: where
``zero_grad`` sits, what the training loop keeps referenced, whether anomaly
detection is on, where the exemplars live, how evaluation runs.  What a
codebase does for every method is said once, in one module here; a method's
implementation (a small subclass in the method's own file, see
:mod:`costmodel.methods.base`) names its codebase and adds only what is its own.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Evaluation:
    """How a codebase evaluates the tasks seen so far between training steps."""

    batch_size: int | None
    """Test batch (``None``: the training batch)."""
    no_grad: bool
    """Run under ``torch.no_grad()``?  Without it, each batch builds a graph for the
    trainable part, and the previous batch's graph lives until its output is replaced."""
    train_mode: bool = False
    """Batch norms left in training mode (the codebase never calls ``eval()``)."""
    cite: str = ""


@dataclass(frozen=True)
class Codebase:
    name: str
    """What ``--impl`` calls it."""
    repository: str
    """``owner/name`` on GitHub, or '' for costcl's own trainer."""
    commit: str
    """The commit every citation of this codebase refers to."""
    summary: str
    evaluation: Evaluation
    anomaly_mode: bool = False
    """``torch.autograd.set_detect_anomaly(True)`` is on during backward."""
    cites: tuple[str, ...] = ()
    """``file:line`` of what this module reproduces for every method."""
    loop_holds_kept: bool = True
    """What a step leaves in ``ctx.keep`` is still referenced when the next step runs
    (PyCIL's loop variables); ``False``: the loop lets it go before (costcl's trainer
    builds a fresh context for every step)."""

    @property
    def source(self) -> str:
        if not self.repository:
            return "costcl's bundled trainer (lightcl/)"
        return f"{self.repository}@{self.commit[:10]}"


COSTCL = Codebase(
    "costcl", "", "", "costcl's bundled trainer: the method's clean step, evaluation under "
    "no_grad in eval mode",
    Evaluation(batch_size=None, no_grad=True, cite="lightcl/trainer.py"), loop_holds_kept=False)
