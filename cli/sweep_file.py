"""The sweep file: a base scenario, axes to cross, and the job each point runs.

```toml
[base]                       # a scenario, as a --config file holds it (or base = "scenario.toml")
model = "resnet18-cifar"
[axes]                       # crossed in this order; each is a list
method = ["sgd", "er", {method = "lightcl", sparsity = 0.9}]   # a table sets several keys at once
seed = [0, 1]
[job]
kind = "train"               # estimate, validate or train
data_root = "synthetic:20"
[device_memory_mib]          # optional: what each device holds (default: this machine's)
cuda = 24576
```

Everything a file can get wrong is found here or in planning, before any point
runs, as one :class:`~costmodel.errors.CostclError` that names the key and the fix.
Parsing needs no torch: a point is plain values until :mod:`cli.sweep` resolves it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costmodel import checks
from costmodel.errors import CostclError, suggest
from costmodel.files import read_toml
from costmodel.scenario import DEVICES, FIELDS, build, load_toml, parse_input_size
from reports.sweep_results import point_label

SCENARIO_AXES = frozenset(FIELDS - {"options", "trainable"})
EXTRA_AXES = frozenset({"seed", "budget_mib"})
"""``seed``: the trainer's seed; ``budget_mib``: a memory budget that sets the buffer size
(the exemplars that fit, as ``costcl budget --budget-mib`` shares it out)."""
AXES = SCENARIO_AXES | EXTRA_AXES
TOP_KEYS = ("base", "axes", "job", "device_memory_mib")
KINDS = ("estimate", "validate", "train")
COMMON_JOB_KEYS = {"kind": None, "seed": 0, "cpus": 1, "budget_counting": "memo"}
JOB_DEFAULTS: dict[str, dict[str, Any]] = {
    "estimate": {"convention": "runtime", "flops_convention": "torch"},
    "validate": {"steps": 3, "fake": False},
    "train": {"data_root": "synthetic", "checkpoint": None},
}
"""Each job's own options and their defaults: the flags of ``costcl estimate|validate|train``."""


@dataclass(frozen=True)
class Job:
    kind: str
    options: dict[str, Any]
    seed: int = 0
    """The seed of every point, unless a ``seed`` axis gives one."""
    cpus: int = 1
    """CPUs a point takes (Ray's ``num_cpus``) and the torch threads it runs with."""
    budget_counting: str = "memo"
    """How a ``budget_mib`` axis counts: memo (model bytes) or runtime (whole peak)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "options": self.options, "cpus": self.cpus}


@dataclass(frozen=True)
class Point:
    index: int
    coordinates: dict[str, Any]
    """The axis values of this point, as the file gives them."""
    values: dict[str, Any]
    """Scenario keys: the base, then each axis value (``options`` merged)."""
    seed: int
    budget_mib: float | None
    job: Job

    @property
    def key(self) -> str:
        """What identifies the point across runs: its scenario, seed, budget and job (not its
        position, so reordering the axes or adding values keeps finished points finished)."""
        ident = {"values": self.values, "seed": self.seed, "budget_mib": self.budget_mib,
                 "job": self.job.kind, "options": self.job.options}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return point_label(self.coordinates)


@dataclass
class Sweep:
    path: Path
    base: dict[str, Any]
    axes: list[tuple[str, list[Any]]]
    job: Job
    device_memory_mib: dict[str, float] = field(default_factory=dict)

    def points(self) -> list[Point]:
        """The axes crossed, in file order (the last axis varies fastest)."""
        names = [name for name, _ in self.axes]
        out: list[Point] = []
        seen: dict[str, int] = {}
        for i, combo in enumerate(itertools.product(*(values for _, values in self.axes))):
            p = self._point(i, dict(zip(names, combo)))
            if p.key in seen:
                raise CostclError(f"{self.path.name}: points {seen[p.key] + 1} and {i + 1} are the "
                                  f"same ({p.label}); remove the repeated axis value")
            seen[p.key] = i
            out.append(p)
        return out

    def _point(self, index: int, coords: dict[str, Any]) -> Point:
        values = {k: v for k, v in self.base.items() if k != "options"}
        options = dict(self.base.get("options") or {})
        seed, budget = self.job.seed, None
        for axis, value in coords.items():
            entries = value if isinstance(value, dict) else {axis: value}
            for key, v in entries.items():
                if key == "seed":
                    seed = checks.count(v, f"{self.path.name}: seed")
                elif key == "budget_mib":
                    budget = checks.number(v, f"{self.path.name}: budget_mib", above=0,
                                           fix="a memory budget in MiB, e.g. 64")
                elif key == "options":
                    options.update(v)
                else:
                    values[key] = v
        if budget is not None and values.get("buffer_size") is not None:
            raise CostclError(f"{self.path.name}: budget_mib sets the buffer size; give "
                              "budget_mib or buffer_size, not both")
        if options:
            values["options"] = options
        return Point(index, coords, values, seed, budget, self.job)


def load(path: str | Path) -> Sweep:
    """Read and check a sweep file; every mistake is one line naming it."""
    p = Path(path)
    data = read_toml(p, "sweep file")
    for key in data:
        if key not in TOP_KEYS:
            raise suggest(key, TOP_KEYS, f"table in {p.name}:")
    base = _base(p, data.get("base", {}))
    axes = _axes(p, data.get("axes", {}))
    job = _job(p, data.get("job"))
    memory = _memory(p, data.get("device_memory_mib", {}))
    sweep = Sweep(p, base, axes, job, memory)
    sweep.points()  # repeated points and bad axis values fail now, not midway
    return sweep


def _table(p: Path, value: Any, name: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CostclError(f"{p.name}: [{name}] must be a table of key = value lines, got "
                          f"{value!r}; e.g. [{name}] then {example}")
    return value


def _base(p: Path, value: Any) -> dict[str, Any]:
    """The base scenario: a table of scenario keys, or the path of a scenario file."""
    if isinstance(value, str):
        return load_toml(p.parent / value)
    base = dict(_table(p, value, "base", 'model = "resnet18-cifar"'))
    for key in base:
        if key not in FIELDS:
            raise suggest(key, sorted(FIELDS), f"key in [base] of {p.name}:")
    if isinstance(base.get("input_size"), str):
        base["input_size"] = parse_input_size(base["input_size"])
    try:
        build(base)  # each value typed and in range, named with the file
    except CostclError as e:
        raise CostclError(f"{p.name} [base]: {e}") from None
    return base


def _axes(p: Path, value: Any) -> list[tuple[str, list[Any]]]:
    axes = []
    for name, values in _table(p, value, "axes", 'method = ["sgd", "er"]').items():
        if name not in AXES:
            raise suggest(name, sorted(AXES), f"axis in {p.name}:")
        if not isinstance(values, list):
            raise CostclError(f"{p.name}: axis {name} must be a list, got {values!r}; write "
                              f"{name} = [{json.dumps(values)}]")
        if not values:
            raise CostclError(f"{p.name}: axis {name} is empty; give it at least one value or "
                              "remove it")
        for v in values:
            if isinstance(v, dict):
                _check_entry(p, name, v)
        if name == "input_size":  # "3,32,32" as --input-size takes it
            values = [list(parse_input_size(v)) if isinstance(v, str) else v for v in values]
        axes.append((name, values))
    return axes


def _check_entry(p: Path, axis: str, entry: dict[str, Any]) -> None:
    """A table in an axis sets several keys at once: scenario keys, seed, options."""
    if not entry:
        raise CostclError(f"{p.name}: axis {axis} has an empty table; give its keys, e.g. "
                          f'{{{axis} = ..., sparsity = 0.9}}')
    for key, v in entry.items():
        if key not in AXES | {"options"}:
            raise suggest(key, sorted(AXES | {"options"}), f"key in axis {axis} of {p.name}:")
        if key == "options" and not isinstance(v, dict):
            raise CostclError(f"{p.name}: options in axis {axis} must be a table, e.g. "
                              "options = {lr = 0.05}")


def _job(p: Path, value: Any) -> Job:
    if value is None:
        raise CostclError(f'{p.name} has no [job]; add [job] with kind = "estimate", '
                          '"validate" or "train"')
    job = dict(_table(p, value, "job", 'kind = "train"'))
    kind = job.get("kind")
    if kind is None:
        raise CostclError(f'{p.name}: [job] has no kind; add kind = "estimate", "validate" or "train"')
    if kind not in KINDS:
        raise suggest(str(kind), KINDS, f"job kind in {p.name}:")
    allowed = {**COMMON_JOB_KEYS, **JOB_DEFAULTS[kind]}
    for key in job:
        if key not in allowed:
            raise suggest(key, sorted(allowed), f"option of a {kind} job in {p.name}:")
    options = {k: job.get(k, d) for k, d in JOB_DEFAULTS[kind].items()}
    where = f"{p.name} [job]"
    if kind == "validate":
        options["steps"] = checks.count(options["steps"], f"{where} steps", minimum=1)
        options["fake"] = checks.boolean(options["fake"], f"{where} fake")
    elif kind == "train":
        checks.text(options["data_root"], f"{where} data_root")
        if options["checkpoint"] is None:
            del options["checkpoint"]
        else:
            checks.text(options["checkpoint"], f"{where} checkpoint")
    else:
        from costmodel.conventions import check as check_flops
        from costmodel.estimation import CONVENTIONS

        if options["convention"] not in CONVENTIONS:
            raise suggest(str(options["convention"]), CONVENTIONS, f"convention in {where}:")
        check_flops(options["flops_convention"])
    counting = job.get("budget_counting", "memo")
    if counting not in ("memo", "runtime"):
        raise suggest(str(counting), ("memo", "runtime"), f"budget_counting in {where}:")
    return Job(kind, options, checks.count(job.get("seed", 0), f"{where} seed"),
               checks.count(job.get("cpus", 1), f"{where} cpus", minimum=1), counting)


def _memory(p: Path, value: Any) -> dict[str, float]:
    table = _table(p, value, "device_memory_mib", "cuda = 24576")
    for key, v in table.items():
        if key not in DEVICES:
            raise suggest(key, DEVICES, f"device in [device_memory_mib] of {p.name}:")
        checks.number(v, f"{p.name} [device_memory_mib] {key}", above=0, fix="MiB, e.g. 24576")
    return {k: float(v) for k, v in table.items()}
