"""PyCIL (G-U-N/PyCIL): what its learners' loops do around every method.

The implementations (``impl = "pycil"``) of iCaRL, WA, Replay, DER and MEMO
share :class:`costmodel.methods.pycil.PyCILCode`; here is what every PyCIL
learner does (cited at the commit below):

* one forward, the losses, then ``optimizer.zero_grad()``, backward and step
  (icarl.py:169, wa.py:180, replay.py:162, der.py:194, memo.py:227): the
  previous step's gradients are alive through the forward;
* the loop's variables (the logits or the network's whole output dict, the
  losses, the predictions) stay referenced into the next step until they are
  reassigned (icarl.py:156-176);
* the exemplar memory is host numpy: uint8 images and int64 labels,
  ``memory_size // classes seen`` per class (base.py:39-45, 180-230), and the
  class means as float64 (base.py:185);
* every 5 epochs ``_compute_accuracy`` runs the test set in eval mode under
  ``no_grad`` at the learner's batch size (base.py:121-132, icarl.py:180);
* ``_extract_vectors`` (herding after each task, NME in ``eval_task``) runs in
  eval mode *without* ``no_grad`` (base.py:161-178): each batch builds a graph
  over the trainable part, dropped when its features are copied to numpy.
"""
from __future__ import annotations

from costmodel.codebases import Codebase, Evaluation

PYCIL = Codebase(
    name="pycil",
    repository="G-U-N/PyCIL",
    commit="87cc4110d60765dc3f64af7ef7a693efed8418ff",
    summary="PyCIL's learners (models/*.py), networks (utils/inc_net.py, convs/) and BaseLearner",
    evaluation=Evaluation(batch_size=None, no_grad=True, cite="models/base.py:121-132"),
    cites=("models/icarl.py:156-176", "models/base.py:39-45", "models/base.py:121-132",
           "models/base.py:161-178", "models/base.py:180-230"),
)
