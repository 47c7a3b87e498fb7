"""The LightCL repository (INV-WZQ/LightCL): what its LightCL.py does around the method.

Only LightCL lives there, so most of what it does is in the method's own
implementation (:class:`costmodel.methods.lightcl.LightCLRepository`); here is
what its loop does for every step and evaluation:

* ``torch.autograd.set_detect_anomaly(True)`` before each backward of a later
  task (LightCL.py:147): the engine then checks every gradient for NaN;
* ``test()`` (LightCL.py:94-104) runs the model in eval mode without
  ``no_grad``: each test batch builds a graph for the trainable part, and the
  previous batch's graph lives until its output is replaced; test batches are
  32 images (datasets/utils/continual_dataset.py:119-120);
* ``optimizer.zero_grad()`` at the top of each step (LightCL.py:85, 127), so
  the last step's gradients are alive during evaluation.
"""
from __future__ import annotations

from costmodel.codebases import Codebase, Evaluation

LIGHTCL_REPO = Codebase(
    name="lightcl",
    repository="INV-WZQ/LightCL",
    commit="62fda8b7cfe7216e594b3591f3d3dc0fe515430e",
    summary="the LightCL repository's LightCL.py and prune.py",
    evaluation=Evaluation(batch_size=32, no_grad=False, cite="LightCL.py:94-104"),
    anomaly_mode=True,
    cites=("LightCL.py:85", "LightCL.py:127", "LightCL.py:147", "LightCL.py:94-104",
           "datasets/utils/continual_dataset.py:119-120"),
)
