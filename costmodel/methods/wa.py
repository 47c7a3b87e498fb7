"""WA, Weight Aligning (Zhao et al., CVPR 2020), as PyCIL trains it.

iCaRL's step with the two losses weighed by the share of old classes; after
each task the new classes' classifier weights are rescaled (no FLOPs to speak of).
"""
from __future__ import annotations

from costmodel.methods.icarl import ICaRL, ICaRLPyCIL


class WA(ICaRL):
    name = "wa"
    summary = "Weight Aligning: distillation, then rescale the new classes' weights"
    paper = "Zhao et al., CVPR 2020; PyCIL wa"
    weigh = True


class WAPyCIL(ICaRLPyCIL, WA):
    """WA as PyCIL's models/wa.py trains it: iCaRL's PyCIL step with the losses weighed
    by ``known / total`` (wa.py:161-178); the weight alignment after each task
    (wa.py:36-41) rescales the new rows in place."""

    cites = ("models/wa.py:36-41", "models/wa.py:160-182", "models/wa.py:214-217",
             "utils/inc_net.py:60-140", "convs/cifar_resnet.py:57-152")
