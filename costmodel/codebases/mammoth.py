"""Mammoth (aimagelab/mammoth): what its training loop and buffer do for every method.

A method's own ``observe()`` is in its implementation (the ``impl = "mammoth"``
subclass in the method's file); here is what Mammoth does around it, for
every method (cited at the codebase's commit):

* every ``observe()`` starts with ``self.opt.zero_grad()`` (set_to_none, the
  default): the previous step's gradients are freed before the forward, as
  costcl's default assumes (models/sgd.py:28, er.py:52, der.py:31, derpp.py:34,
  ewc_on.py:72, lwf.py:71);
* the loop moves ``not_aug_inputs`` (the batch before augmentation, as
  ToTensor gives it) to the device beside the inputs and labels and hands all
  three to ``observe`` (utils/training.py:100-106): one more input of the
  batch's shape is alive through every step;
* the rehearsal ``Buffer`` lives on the CPU by default (utils/buffer.py:314):
  on a GPU its exemplars are host memory; it stores float32 images (the
  un-augmented ones), int64 labels and float32 logits (utils/buffer.py:407-411);
* ``Buffer.get_data`` draws without replacement, gathers the chosen rows,
  augments the images with the dataset's Kornia transform under ``no_grad``
  on the buffer's device, then copies the result to the training device
  (utils/buffer.py:529-547, utils/augmentations.py:35-40, utils/kornia_utils.py:78);
* ``evaluate()`` runs under ``@torch.no_grad()`` with ``net.eval()``
  (utils/evaluate.py:35,52) on test loaders whose batch is the training batch
  (datasets/utils/continual_dataset.py:531-534); the last step's gradients
  are alive during it (the next ``observe`` frees them).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from costmodel.codebases import Codebase, Evaluation

MAMMOTH = Codebase(
    name="mammoth",
    repository="aimagelab/mammoth",
    commit="e75a491c69fd729edeb01431afb753d9157d9a81",
    summary="Mammoth's models/*.py observe(), utils/training.py loop and utils/buffer.py Buffer",
    evaluation=Evaluation(batch_size=None, no_grad=True, train_mode=False,
                          cite="utils/evaluate.py:35,52"),
    cites=("utils/training.py:100-106", "utils/buffer.py:314", "utils/buffer.py:407-411",
           "utils/buffer.py:529-547", "utils/augmentations.py:35-40", "utils/kornia_utils.py:78",
           "utils/evaluate.py:35,52", "datasets/utils/continual_dataset.py:531-534",
           "models/derpp.py:56-60"),
    loop_holds_kept=False,  # observe() adds the logits to the buffer and returns loss.item()
)


NOT_AUG = "not_aug_inputs"
"""The loop's third batch tensor (utils/training.py:104-106)."""


def loop_inputs(s: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """What the loop hands every ``observe`` beside inputs and labels: the batch before
    augmentation, on the device (utils/training.py:104-106)."""
    return {NOT_AUG: (tuple(s.input_shape), s.torch_dtype)}


def on_host(stored: list[Any]) -> list[Any]:
    """The Buffer's tensors on the CPU (utils/buffer.py:314), kept as float32 images and
    logits and int64 labels (utils/buffer.py:407-411)."""
    return [replace(st, where="host",
                    dtype=torch.int64 if st.name.endswith("labels") else torch.float32)
            for st in stored]


def get_data(ctx: Any, n: int) -> dict[str, torch.Tensor]:
    """``Buffer.get_data(n, transform=self.transform, device=self.device)``
    (utils/buffer.py:529-547): ``n`` rows of every stored field gathered, the images
    augmented by the dataset's Kornia transform under ``no_grad`` (utils/kornia_utils.py:78;
    seq-cifar10: RandomCrop(32, padding=4), RandomHorizontalFlip, Normalize), then moved
    to the device.  The gathered images die once augmented; the augmented batch (on a
    GPU, its device copy) is what the step holds.

    Rows are drawn by the context's sampler (with replacement; Mammoth's
    ``np.random.choice`` draws without): the same allocations.  costcl counts no FLOPs
    for the augmentation kernels (Kornia's crop runs one small bmm: 8 FLOPs per image).
    """
    buf = ctx.replay(n)
    with torch.no_grad():
        buf["x"] = augment(buf["x"])
    return buf


def augment(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The augmentation's allocations: a zero-padded copy, then a new cropped batch.

    The crop is the centre one and the flip and normalisation are left out, so the values
    are the gathered ones: costcl's trainer keeps normalised images in its buffer, and
    the same step runs there.  Kornia's other transients (the flip, Normalize's
    intermediate) are the batch's size and gone before the forward, far below the peak.
    """
    h, w = x.shape[-2:]
    padded = F.pad(x, (padding,) * 4)
    return padded[..., padding:padding + h, padding:padding + w].contiguous()
