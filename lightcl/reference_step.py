"""The last part of ``costcl calibrate``: real training steps anchor the time model.

The micro-benchmarks time each op alone, at its fastest, with caches evicted; they
fix how the op classes compare.  In a training step the same ops run at other speeds
(the allocator, autograd's bookkeeping, operands the layers between evicted, the
scheduler's slices), and the two parts of an op's predicted seconds err differently:
the fixed part (dispatch, threads waking), which a narrow network's step is half made
of, and the amount part (FLOPs and bytes over their rates), nearly all of a wide one's.
So calibration ends by timing SGD steps of a wide and a narrow network (the CIFAR
ResNet-18 of the LightCL table and the ResNet-32 of PyCIL's), each at batches 8 and
32, interleaved round after round as ``benchmarks/step_time.py`` times steps (fresh
random batches, the median after a warm-up), and fits the profile's ``fixed_scale``
and ``step_scale`` (amount) to them: least squares on the relative error, so every
reference step weighs alike.  Page faults of large allocations are a term of their
own (:mod:`costmodel.large_allocations`), left out of the fit.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from costmodel import Scenario
from costmodel.estimation import estimate
from costmodel.time_profile import Rate, TimeProfile

REFERENCE_METHOD = "sgd"
REFERENCE_MODELS = ("resnet18-cifar", "resnet32-cifar")
REFERENCE_BATCHES = (8, 32)
ROUNDS, WARMUP = 7, 2


def parts(s: Scenario, profile: TimeProfile) -> tuple[float, float, float]:
    """(fixed, amount, page-fault) seconds of a step under ``profile``, unscaled."""
    unscaled = dataclasses.replace(profile, step_scale=1.0, fixed_scale=1.0)
    fixed_only = dataclasses.replace(unscaled, rates={k: Rate(r.fixed_s, 0.0)
                                                      for k, r in profile.rates.items()})
    t = estimate(s, profile=unscaled).time
    fixed = estimate(s, profile=fixed_only).time.step_s
    faults = t.share["alloc"] * t.step_s
    return fixed, t.step_s - fixed - faults, faults


def fit_scales(points: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(fixed, amount) scales minimising the relative error over (fixed s, amount s,
    measured s) points: measured = a * fixed + b * amount.  Falls back to one scale
    for both parts when the fit gives a part no positive weight."""
    sff = sfa = saa = sfm = sam = 0.0
    for f, a, m in points:
        f, a = f / m, a / m
        sff, sfa, saa, sfm, sam = sff + f * f, sfa + f * a, saa + a * a, sfm + f, sam + a
    det = sff * saa - sfa * sfa
    if det > 0:
        fixed = (sfm * saa - sam * sfa) / det
        amount = (sam * sff - sfm * sfa) / det
        if fixed > 0 and amount > 0:
            return fixed, amount
    one = sum(m / (f + a) for f, a, m in points) / len(points)
    return one, one


def measure_scale(profile: TimeProfile, device: str,
                  progress: Callable[[str], None] = lambda key: None,
                  rounds: int = ROUNDS) -> TimeProfile:
    """``profile`` with its ``fixed_scale`` and ``step_scale`` fitted to the reference steps."""
    from lightcl.runner import build_runner
    from lightcl.step_timing import measured_medians

    predicted, runners = {}, {}
    for model in REFERENCE_MODELS:
        for batch in REFERENCE_BATCHES:
            s = Scenario(method=REFERENCE_METHOD, model=model, batch_size=batch, device=device)
            predicted[model, batch] = parts(s, profile)
            runners[model, batch] = build_runner(s, device)
    measured = measured_medians(runners, rounds, WARMUP,
                                lambda i: progress(f"reference steps, round {i + 1}"))
    points = [(f, a, measured[k] - faults) for k, (f, a, faults) in predicted.items()]
    fixed, amount = fit_scales(points)
    said = ", ".join(f"{model} b{batch} {measured[model, batch] / sum(predicted[model, batch]):.3f}"
                     for model, batch in predicted)
    return dataclasses.replace(
        profile, step_scale=amount, fixed_scale=fixed,
        step_scale_source=f"{REFERENCE_METHOD} steps, median of {rounds} interleaved rounds, "
                          f"measured/predicted before scaling: {said}")
