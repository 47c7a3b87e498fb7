"""costcl's analytic engine: what a continual-learning method costs, before training it.

The public entry points::

    from costmodel import Scenario, estimate
    e = estimate(Scenario(method="lightcl", sparsity=0.9))

``costmodel`` imports none of costcl's other packages.
"""
from costmodel.errors import CostclError
from costmodel.scenario import Scenario

__all__ = ["CostclError", "Scenario", "estimate"]


def __getattr__(name: str):  # lazy: importing costmodel stays cheap
    if name == "estimate":
        from costmodel.estimation import estimate
        return estimate
    raise AttributeError(name)
