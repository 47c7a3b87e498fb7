"""costcl's predictions beside the public code's own steps, measured on this CPU.

    python benchmarks/public_code.py --lightcl PATH [--mammoth PATH] [--pycil PATH] [--json OUT]

Each PATH is a local checkout of the public repository (INV-WZQ/LightCL,
aimagelab/mammoth, G-U-N/PyCIL); nothing of theirs is committed here or
downloaded.  Each case runs in its own process (the repositories' top-level
module names clash) through the runner under benchmarks/public/, which drives
the repository's own step on synthetic data and reads the plain run's peak from
torch.profiler's memory events (op level: kernel scratch left out, as costcl
counts) and its FLOPs from FlopCounterMode's formulas.  The prediction is
``costcl estimate`` of the same scenario with ``--impl`` set to that codebase.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costmodel import Scenario, methods  # noqa: E402
from costmodel.estimation import estimate, peak_memory, trainable_set, variant_models  # noqa: E402
from costmodel.trace.records import at  # noqa: E402


@dataclass(frozen=True)
class Case:
    codebase: str
    label: str
    runner_args: tuple[str, ...]
    scenario: Scenario
    run_peak: bool = False
    variant: str | None = None
    """The step the runner measures when the schedule has more than one (BiC's 'main'
    training and 'bias' correction, FOSTER's 'main' boosting and 'compress'ion): compared
    with that step's own peak and FLOPs.  ``None``: the estimate's (the steady step's
    FLOPs, the highest peak of the schedule's steps, which is the runner's step)."""


def lightcl_cases() -> list[Case]:
    return [Case("lightcl", "lightcl dense", (), Scenario(method="lightcl", impl="lightcl"), True),
            Case("lightcl", "lightcl dense b8", ("--batch", "8"),
                 Scenario(method="lightcl", impl="lightcl", batch_size=8), True),
            Case("lightcl", "lightcl sparse", ("--sparse",),
                 Scenario(method="lightcl", impl="lightcl", sparsity=0.9), True)]


def mammoth_cases() -> list[Case]:
    """Mammoth's sgd, er, der, derpp, ewc_on, lwf on seq-cifar10, batch 32, buffer 500.

    The runner measures the second step of task 1 with Mammoth's best-args weights (which
    change neither memory nor FLOPs); costcl traces its steady step (the last task), which
    differs only in the few [B, classes seen] tensors of LwF's loss.  LwF's stored logits
    cover the task's training images: the runner's synthetic task has 64 (two batches),
    so its scenario holds out all but 64 images per task (50,000 x 0.0064 / 5).
    """
    def case(name: str, method: str, **kw: object) -> Case:
        s = Scenario(method=method, impl="mammoth", dataset="cifar10", batch_size=32, **kw)
        return Case("mammoth", f"{name}@mammoth", ("--case", name), s)

    rehearsal = {"buffer_size": 500, "replay_batch": 32}
    return [case("sgd", "sgd"),
            case("er", "er", **rehearsal),
            case("der", "der", options={"alpha": 0.3}, **rehearsal),
            case("derpp", "derpp", options={"alpha": 0.2, "beta": 0.5}, **rehearsal),
            case("ewc_on", "ewc", options={"lambda": 10.0, "gamma": 1.0}),
            case("lwf", "lwf", holdout=0.9936, options={"lamda": 3.0, "temperature": 2.0})]


def pycil_cases() -> list[Case]:
    """PyCIL's icarl, wa, replay, der, memo on CIFAR-100 B0Inc10, batch 128, at the last task.

    The runner's defaults: task 9 (90 known classes), batch 128, memory_size 2000, which
    PyCIL keeps as 2000 // 90 = 22 exemplars per known class: --buffer-size 1980.  Its
    learners keep them in host numpy, which the profiler does not see: the runner reports
    them as ``host_bytes`` and costcl's CPU peak counts them (``memory.host_bytes`` on cuda).
    """
    runs = {"icarl": "icarl", "wa": "wa", "replay": "replay", "der": "der-expand", "memo": "memo",
            "podnet": "podnet", "bic": "bic"}
    out = [Case("pycil", f"{case}@pycil", ("--case", case),
                Scenario(method=method, impl="pycil", buffer_size=1980))
           for case, method in runs.items()]
    # The runner's --loop picks which pass over the last task's loaders is measured.
    # FOSTER keeps 20 exemplars per class (foster.json's fixed memory): 1,800 at task 9.
    return out + [
        Case("pycil", "bic@pycil bias", ("--case", "bic", "--loop", "3"),
             Scenario(method="bic", impl="pycil", buffer_size=1980), variant="bias"),
        Case("pycil", "foster@pycil", ("--case", "foster"),
             Scenario(method="foster", impl="pycil", buffer_size=1800), variant="main"),
        Case("pycil", "foster@pycil compress", ("--case", "foster", "--loop", "2"),
             Scenario(method="foster", impl="pycil", buffer_size=1800), variant="compress")]


RUNNERS = {"lightcl": "lightcl_repo.py", "mammoth": "mammoth_repo.py", "pycil": "pycil_repo.py"}
CASES = {"lightcl": lightcl_cases, "mammoth": mammoth_cases, "pycil": pycil_cases}


def measure(case: Case, checkout: Path) -> dict:
    """One runner's JSON: memory and FLOPs (a runner that counts FLOPs in a run of its
    own, under ``--flops``, is run twice)."""
    def run(*extra: str) -> dict:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "public" / RUNNERS[case.codebase]),
               "--checkout", str(checkout), *case.runner_args, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{case.label}: the runner failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    out = run()
    if "forward_flops" not in out:
        out |= run("--flops")
    return out


def step_cost(case: Case) -> tuple[int, int, int]:
    """costcl's (peak bytes, forward FLOPs, backward FLOPs) of the case's step: the
    estimate's for 'main' (its peak is the highest of the schedule's steps, which the
    runner's step is for these cases), else that variant's own."""
    e = estimate(case.scenario)
    if case.variant is None:
        return e.memory.peak_bytes, e.step.forward_flops, e.step.backward_flops
    s = e.scenario
    method = methods.get(s.method, s.impl)
    models = variant_models(s, method)
    sm = models[case.variant]
    peak = peak_memory(s, method, {case.variant: sm}, s.batch_size, 0)
    fl = sm.plan(trainable_set(s, method, sm, case.variant), False, s.device,
                 (s.batch_size, 0)).flops
    b = s.batch_size
    return (peak.peak_bytes, at(fl.forward, b, 0),
            at(fl.grad_input, b, 0) + at(fl.grad_weight, b, 0))


def pct(pred: int, meas: int) -> str:
    return f"{100 * (pred - meas) / meas:+.3f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in RUNNERS:
        ap.add_argument(f"--{name}", type=Path, help=f"local checkout of the {name} codebase")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--cases", help="only the cases whose label contains one of these "
                                    "comma-separated words (e.g. podnet,bic,foster)")
    a = ap.parse_args()
    wanted = [w for w in (a.cases or "").split(",") if w]
    rows = []
    print(f"{'case':<18} {'measured MiB':>13} {'costcl MiB':>11} {'error':>9}   "
          f"{'fwd FLOPs':>16} {'bwd FLOPs':>16} flops")
    for codebase, cases in CASES.items():
        checkout = getattr(a, codebase)
        if checkout is None:
            continue
        for case in cases():
            if wanted and not any(w in case.label for w in wanted):
                continue
            mem = fl = measure(case, checkout)
            e = estimate(case.scenario)
            peak, fwd, bwd = step_cost(case)
            # What the process holds: the CPU allocator's peak and, where the code keeps
            # numpy arrays (PyCIL's exemplars), the bytes the profiler cannot see.
            measured = mem["step_peak_op_level_bytes"] + mem.get("host_bytes", 0)
            mem["step_peak_op_level_bytes"] = measured
            row = {"case": case.label, "impl": e.scenario.impl, "commit": mem["commit"],
                   "measured_step_peak_bytes": measured,
                   "measured_host_numpy_bytes": mem.get("host_bytes", 0),
                   "measured_step_peak_with_scratch_bytes": mem["step_peak_with_scratch_bytes"],
                   "variant": case.variant or "main",
                   "predicted_step_peak_bytes": peak,
                   "measured_forward_flops": fl["forward_flops"],
                   "measured_backward_flops": fl["backward_flops"],
                   "predicted_forward_flops": fwd,
                   "predicted_backward_flops": bwd}
            flops_ok = (fl["forward_flops"], fl["backward_flops"]) == (fwd, bwd)
            print(f"{case.label + ' step':<18} {mem['step_peak_op_level_bytes'] / 2**20:>13.2f} "
                  f"{peak / 2**20:>11.2f} "
                  f"{pct(peak, mem['step_peak_op_level_bytes']):>9}   "
                  f"{fl['forward_flops']:>16,} {fl['backward_flops']:>16,} "
                  f"{'equal' if flops_ok else 'DIFFER'}")
            if case.run_peak:
                row |= {"measured_run_peak_bytes": mem["run_peak_op_level_bytes"],
                        "predicted_run_peak_bytes": e.memory.run_peak_bytes,
                        "predicted_run_peak_where": e.memory.run_peak_where}
                print(f"{case.label + ' run':<18} {mem['run_peak_op_level_bytes'] / 2**20:>13.2f} "
                      f"{e.memory.run_peak_bytes / 2**20:>11.2f} "
                      f"{pct(e.memory.run_peak_bytes, mem['run_peak_op_level_bytes']):>9}   "
                      f"(at {e.memory.run_peak_where})")
            rows.append(row)
    if a.json:
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2))
        tmp.replace(a.json)


if __name__ == "__main__":
    main()
