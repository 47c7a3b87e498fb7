"""Every torchvision classification model (and five user factories), costed and checked.

For each name in ``torchvision.models.list_models(module=torchvision.models)``:
cost one plain SGD step at batch 2 (3x224x224, or the model's minimum size when
larger) with costcl, and count the same step's forward and backward FLOPs with
FlopCounterMode on meta tensors (:func:`lightcl.validate.measure_flops`).  Says
whether the model built on meta or needed a fallback route
(:data:`costmodel.models.registry.ROUTES`).  Why: "any torchvision model" is a
claim; this checks it model by model, and says where the count differs.  Then the
same for five factories of other inputs (:mod:`benchmarks.user_factories`: audio, flat
vectors, token ids, clips, an LSTM), at their own input sizes.

With ``--peak``, each model whose predicted peak fits ``--peak-limit-gib`` also runs two
real SGD steps on the CPU, and the second step's peak is read from torch.profiler's
memory events (:func:`lightcl.validate.measure_cpu_plain_peak`, no dispatch mode in
the run): op level and with kernel scratch (what the CPU allocator handed out inside
the kernels), each against costcl's prediction.

Run: python benchmarks/torchvision_sweep.py [--models a,b,c,factory:lstm] [--peak]
[--threads N] [--json OUT] (all 80 on 2 CPU cores: several minutes; with --peak about 15).
``--threads``: the torch threads the estimates are for and the runs use (oneDNN keeps
some buffers per thread).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torchvision  # noqa: E402

from costmodel import Scenario  # noqa: E402
from costmodel.errors import CostclError  # noqa: E402
from costmodel.estimation import estimate  # noqa: E402
from costmodel.models.registry import build_route  # noqa: E402
from lightcl.validate import measure_cpu_plain_peak, measure_flops  # noqa: E402
from benchmarks.user_factories import FACTORIES  # noqa: E402

BATCH = 2
SIZE = 224
CLASSES = 10


@dataclass
class Row:
    model: str
    input_size: str
    """The side of a torchvision model's square image; a factory's whole input size."""
    route: str | None
    costcl_flops: int | None
    counter_flops: int | None
    seconds: float
    error: str | None = None
    predicted_peak: int | None = None
    measured_peak: int | None = None
    """The plain run's op-level peak (torch.profiler), with ``--peak``."""
    scratch_peak: int | None = None
    """The same with kernel scratch."""
    predicted_scratch_peak: int | None = None

    @property
    def peak_error(self) -> float | None:
        if self.measured_peak is None or self.predicted_peak is None:
            return None
        return (self.predicted_peak - self.measured_peak) / self.measured_peak

    @property
    def scratch_error(self) -> float | None:
        if self.scratch_peak is None or self.predicted_scratch_peak is None:
            return None
        return (self.predicted_scratch_peak - self.scratch_peak) / self.scratch_peak

    @property
    def equal(self) -> bool:
        return self.error is None and self.costcl_flops == self.counter_flops


def input_side(name: str) -> int:
    """224, or the model's minimum side when larger: the smallest ``min_size`` of its
    weights (a ViT's SWAG weights say 384, its ImageNet-1k ones 224)."""
    weights = torchvision.models.get_model_weights(name)
    sides = [max(w.meta.get("min_size", (0, 0))) for w in weights]
    return max(SIZE, min(sides, default=0))


FACTORY = "factory:"


def scenario(name: str) -> Scenario:
    """SGD at batch 2 on a torchvision model's smallest input, or on a factory's own."""
    common = dict(method="sgd", optimizer="sgd", num_classes=CLASSES, batch_size=BATCH)
    if name.startswith(FACTORY):
        factory = name[len(FACTORY):]
        return Scenario(model=f"benchmarks.user_factories:{factory}", **FACTORIES[factory],
                        **common)
    side = input_side(name)
    return Scenario(model=f"torchvision:{name}", input_size=(3, side, side), **common)


def run_one(name: str, peak_limit_bytes: int = 0) -> Row:
    """costcl's step FLOPs and FlopCounterMode's (and, under ``peak_limit_bytes``, the plain
    run's peak); an error is kept in the row, not raised."""
    s = scenario(name)
    factory = name.startswith(FACTORY)
    side = "x".join(map(str, s.input_size)) if factory else str(s.input_size[1])
    route = None if factory else build_route(f"torchvision:{name}")
    t = time.perf_counter()
    try:
        e = estimate(s)
        ours = e.step.forward_flops + e.step.backward_flops
        counted = measure_flops(e.scenario)
        theirs = counted["forward_flops"] + counted["backward_flops"]
        row = Row(name, side, route, ours, theirs, 0.0,
                  predicted_peak=e.memory.peak_bytes,
                  predicted_scratch_peak=e.memory.peak_with_scratch_bytes)
        if e.memory.peak_bytes <= peak_limit_bytes:
            got = measure_cpu_plain_peak(e.scenario)
            row.measured_peak, row.scratch_peak = got["peak_bytes"], got["peak_with_scratch_bytes"]
    except (CostclError, Exception) as err:  # noqa: BLE001 - report every failure, go on
        line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return Row(name, side, route, None, None,
                   time.perf_counter() - t, f"{type(err).__name__}: {line}")
    row.seconds = time.perf_counter() - t
    return row


def _fmt(v: int | None) -> str:
    return "-" if v is None else f"{v:.4e}"


def print_row(r: Row) -> None:
    diff = ""
    if r.error is None and not r.equal:
        diff = f" ({100 * (r.costcl_flops - r.counter_flops) / r.counter_flops:+.3f}%)"
    status = r.error or ("yes" if r.equal else "NO" + diff)
    peak = ""
    if r.peak_error is not None:
        peak = (f"  peak {r.predicted_peak / 2**20:9.2f} MiB vs {r.measured_peak / 2**20:9.2f} "
                f"({100 * r.peak_error:+.3f}%); with scratch {r.predicted_scratch_peak / 2**20:9.2f}"
                f" vs {r.scratch_peak / 2**20:9.2f} ({100 * r.scratch_error:+.3f}%)")
    print(f"{r.model:24} {r.input_size:>9} {str(r.route):>11} {_fmt(r.costcl_flops):>11} "
          f"{_fmt(r.counter_flops):>11} {r.seconds:>6.1f}s  {status}{peak}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated subset of torchvision names")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the rows as JSON")
    p.add_argument("--peak", action="store_true", help="also measure the plain run's peak")
    p.add_argument("--peak-limit-gib", type=float, default=8.0,
                   help="measure only models predicted to peak below this (default 8)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for the estimates and the runs (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = torchvision.models.list_models(module=torchvision.models)
    print(f"{len(names)} torchvision classification models (torchvision {torchvision.__version__})"
          f" and {len(FACTORIES)} factories; {torch.get_num_threads()} threads")
    factories = [FACTORY + f for f in FACTORIES]
    if args.models:
        wanted = args.models.split(",")
        unknown = [n for n in wanted if n not in names + factories]
        if unknown:
            p.error(f"not torchvision classification models: {', '.join(unknown)}")
        names = wanted
    else:
        names = names + factories
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"{'model':24} {'input':>9} {'built':>11} {'costcl':>11} {'FlopCounter':>11} "
          f"{'time':>7}  equal?")
    rows = []
    for name in names:
        rows.append(run_one(name, int(args.peak_limit_gib * 2**30) if args.peak else 0))
        print_row(rows[-1])
    ok = sum(r.error is None for r in rows)
    equal = sum(r.equal for r in rows)
    fallback = sum(r.route not in (None, "meta") for r in rows)
    print(f"{ok} of {len(rows)} cost without error; {equal} of {len(rows)} FLOPs equal; "
          f"{fallback} built with a fallback route")
    peaks = [r for r in rows if r.peak_error is not None]
    if peaks:
        for label, err in (("op level", "peak_error"), ("with kernel scratch", "scratch_error")):
            within = sum(abs(getattr(r, err)) <= 0.001 for r in peaks)
            worst = max(peaks, key=lambda r: abs(getattr(r, err)))
            errors = sorted(abs(getattr(r, err)) for r in peaks)
            print(f"peak {label} (plain run): {within} of {len(peaks)} measured within 0.1%; "
                  f"median |error| {100 * errors[len(errors) // 2]:.3f}%; worst {worst.model} "
                  f"{100 * getattr(worst, err):+.3f}%")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"torchvision": torchvision.__version__, "batch": BATCH,
                       "threads": torch.get_num_threads(),
                       "rows": [asdict(r) | {"equal": r.equal} for r in rows],
                       "summary": {"models": len(rows), "ok": ok, "equal": equal}}, f, indent=1)
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
