"""WA, Weight Aligning (Zhao et al., CVPR 2020), as PyCIL trains it.

iCaRL's step with the two losses weighed by the share of old classes; after
each task the new classes' classifier weights are rescaled (no FLOPs to speak of).
"""
from __future__ import annotations

from costmodel.methods.icarl import ICaRL


class WA(ICaRL):
    name = "wa"
    summary = "Weight Aligning: distillation, then rescale the new classes' weights"
    paper = "Zhao et al., CVPR 2020; PyCIL wa"
    weigh = True
