"""A device's speeds, as the time model reads them: one affine rate per op class.

Every class of work takes ``seconds = fixed_s + amount / per_s``: ``amount`` is
FLOPs for matrix products and convolutions, bytes moved for element-wise,
normalisation, reduction and copy ops, parameter elements for the optimizer,
and nothing for a view or an autograd node (``fixed_s`` only).  The fixed part
is what an op costs however small it is (dispatch, a kernel launch, threads
waking); with it, the rate of a small op falls the way a real one does, and the
step's time stays affine in the batch, so one plan answers every batch in
microseconds.

A profile comes from ``costcl calibrate`` (measured on the machine,
``calibrated = true``) or from a device's datasheet (peak FLOP/s and memory
bandwidth times a documented efficiency, ``calibrated = false``).  The TOML
file is the profile: :func:`load` refuses one that does not parse or lacks a
field, naming it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costmodel.errors import CostclError

CONV_BUCKETS = ("first", "narrow", "mid", "wide", "pointwise", "downsample", "strided",
                "grouped")
"""Convolutions by output channels (see :func:`costmodel.timing.conv_bucket`)."""
MATMUL_PHASES = ("fwd", "bwd_in", "bwd_w")
MEMORY_CLASSES = ("eltwise", "norm", "reduce", "copy")
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")


def rate_keys() -> tuple[str, ...]:
    """Every rate a complete profile holds."""
    keys = [f"conv.{b}.{p}" for b in CONV_BUCKETS for p in MATMUL_PHASES]
    keys += [f"linear.{p}" for p in MATMUL_PHASES]
    keys += [f"{c}.{p}" for c in MEMORY_CLASSES for p in ("fwd", "bwd")]
    keys += ["view", "node", "step", "alloc"]
    keys += [f"optimizer.{o}" for o in OPTIMIZERS]
    return tuple(keys)


@dataclass(frozen=True)
class Rate:
    """``seconds = fixed_s + amount / per_s`` (``per_s`` 0: a fixed cost only)."""

    fixed_s: float
    per_s: float = 0.0

    def seconds(self, amount: float) -> float:
        return self.fixed_s + (amount / self.per_s if self.per_s else 0.0)


OPTIONAL_RATES = {"alloc": Rate(0.0)}
"""Rates a profile may lack, and what is read then.  ``alloc``: bytes per second of
faulting in a fresh allocation's pages (:mod:`costmodel.large_allocations`); profiles
written before it existed, and datasheets, which give no such figure, leave it out."""


@dataclass(frozen=True)
class TimeProfile:
    name: str
    device: str
    """'cpu' or 'cuda'."""
    calibrated: bool
    """Measured on the machine (``costcl calibrate``), or a datasheet's figures."""
    source: str
    """Where the numbers come from: the machine and date, or the datasheet and efficiency."""
    rates: dict[str, Rate] = field(default_factory=dict)
    threads: int = 0
    """CPU threads the calibration ran with (0: not a CPU measurement)."""
    step_scale: float = 1.0
    """What the amount part of every op's seconds (``amount / per_s``) is multiplied by,
    fitted with :attr:`fixed_scale` to real training steps.  Micro-benchmarks time each
    op alone, at its fastest; in a real step the same ops run at other speeds (caches the
    layers between evict, the allocator, autograd's bookkeeping).  1: not measured (a
    datasheet profile)."""
    fixed_scale: float = 1.0
    """What the fixed part of every op's seconds (``fixed_s``) is multiplied by."""
    step_scale_source: str = ""
    """The reference steps and what they measured."""

    def rate(self, key: str) -> Rate:
        return self.rates[key]

    def digest(self) -> tuple:
        """What an answer computed with this profile depends on (cache keys)."""
        return (self.name, self.device, self.calibrated, self.step_scale, self.fixed_scale,
                tuple(sorted((k, r.fixed_s, r.per_s) for k, r in self.rates.items())))

    def to_toml(self) -> str:
        lines = [f"# costcl device profile: {self.name}",
                 "# seconds of an op = fixed_s + amount / per_s (amount: FLOPs for conv and "
                 "linear, bytes moved for", "# eltwise/norm/reduce/copy, parameter elements for "
                 "optimizer.*, bytes of each allocation of 32 MiB or more",
                 "# for alloc; view, node and step are fixed costs)",
                 f"name = {_q(self.name)}", f"device = {_q(self.device)}",
                 f"calibrated = {'true' if self.calibrated else 'false'}",
                 f"source = {_q(self.source)}", f"threads = {self.threads}",
                 "# each op's amount / per_s and fixed_s times these: fitted to real steps",
                 f"step_scale = {self.step_scale!r}", f"fixed_scale = {self.fixed_scale!r}",
                 f"step_scale_source = {_q(self.step_scale_source)}", "", "[rates]"]
        for key in rate_keys():
            r = self.rates[key]
            lines.append(f'"{key}" = {{ fixed_s = {r.fixed_s!r}, per_s = {r.per_s!r} }}')
        return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def datasheet(name: str, device: str, peak_flops: float, bandwidth_bytes_s: float,
              flops_efficiency: float, bandwidth_efficiency: float, op_overhead_s: float,
              source: str) -> TimeProfile:
    """An uncalibrated profile from a datasheet: every FLOP rate is the peak times
    ``flops_efficiency`` (first layers and grouped convolutions a quarter of it: they
    reach little of any device's peak), every byte rate the bandwidth times
    ``bandwidth_efficiency``; each op pays ``op_overhead_s``."""
    flop_rate = peak_flops * flops_efficiency
    byte_rate = bandwidth_bytes_s * bandwidth_efficiency
    rates: dict[str, Rate] = {}
    for b in CONV_BUCKETS:
        slow = 4 if b in ("first", "grouped") else 1
        for p in MATMUL_PHASES:
            rates[f"conv.{b}.{p}"] = Rate(op_overhead_s, flop_rate / slow)
    for p in MATMUL_PHASES:
        rates[f"linear.{p}"] = Rate(op_overhead_s, flop_rate)
    for c in MEMORY_CLASSES:
        rates[f"{c}.fwd"] = Rate(op_overhead_s, byte_rate)
        rates[f"{c}.bwd"] = Rate(op_overhead_s, byte_rate / 2)  # grad, saved input and grad in
    rates["view"] = Rate(op_overhead_s / 4)
    rates["node"] = Rate(op_overhead_s)
    rates["step"] = Rate(20 * op_overhead_s)
    rates["alloc"] = OPTIONAL_RATES["alloc"]  # a datasheet says nothing of page faults
    bytes_per_element = {"sgd": 12, "sgd-momentum": 24, "adam": 52, "adamw": 56}
    for o in OPTIMIZERS:  # per parameter element: reads and writes of float32 state
        rates[f"optimizer.{o}"] = Rate(op_overhead_s * (1 if o.startswith("sgd") else 4),
                                       byte_rate / bytes_per_element[o])
    return TimeProfile(name, device, False, source, rates)


def _number(table: dict, key: str, field_name: str, path: str) -> float:
    value = table.get(field_name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise CostclError(f"device profile {path!r}: rates.{key}.{field_name} must be a "
                          f"non-negative number, got {value!r}; run costcl calibrate to write a "
                          "complete profile")
    return float(value)


def from_dict(data: dict[str, Any], path: str) -> TimeProfile:
    """A profile from its TOML tables; a missing or mistyped field is named."""
    def need(key: str, tp: type) -> Any:
        if key not in data:
            raise CostclError(f"device profile {path!r} lacks the field {key!r}; run costcl "
                              "calibrate --out FILE to write a complete profile")
        value = data[key]
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise CostclError(f"device profile {path!r}: {key} must be a {tp.__name__}, got "
                              f"{value!r}")
        return value

    device = need("device", str)
    if device not in ("cpu", "cuda"):
        raise CostclError(f"device profile {path!r}: device must be 'cpu' or 'cuda', got "
                          f"{device!r}")
    rates_table = need("rates", dict)
    rates = {}
    for key in rate_keys():
        entry = rates_table.get(key)
        if entry is None and key in OPTIONAL_RATES:
            rates[key] = OPTIONAL_RATES[key]
            continue
        if not isinstance(entry, dict):
            raise CostclError(f"device profile {path!r} lacks the field rates.{key!r}; run "
                              "costcl calibrate --out FILE to write a complete profile")
        rates[key] = Rate(_number(entry, key, "fixed_s", path), _number(entry, key, "per_s", path))
    threads = data.get("threads", 0)
    scales = []
    for key in ("step_scale", "fixed_scale"):
        scale = data.get(key, 1.0)  # profiles written before they existed: 1
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not math.isfinite(scale) or scale <= 0:
            raise CostclError(f"device profile {path!r}: {key} must be a positive number, got "
                              f"{scale!r}; run costcl calibrate to measure it")
        scales.append(float(scale))
    scale_source = data.get("step_scale_source", "")
    return TimeProfile(need("name", str), device, need("calibrated", bool), need("source", str),
                       rates, threads if isinstance(threads, int) else 0, scales[0], scales[1],
                       scale_source if isinstance(scale_source, str) else "")


def load(path: str | os.PathLike[str]) -> TimeProfile:
    """Read a profile file (``--device-profile FILE``)."""
    from costmodel.files import read_toml

    return from_dict(read_toml(path, "device profile"), str(path))


def default_dir() -> Path:
    """Where ``costcl calibrate`` writes when no ``--out`` is given, and estimates look:
    ``COSTCL_PROFILE_DIR``, else ``$XDG_CONFIG_HOME/costcl``, else ``~/.config/costcl``."""
    explicit = os.environ.get("COSTCL_PROFILE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "costcl"


def default_path(device: str) -> Path:
    return default_dir() / f"device-{device}.toml"


def generic(device: str) -> TimeProfile:
    """What an estimate uses when nothing was calibrated: a modest machine's datasheet
    figures, said to be uncalibrated (run ``costcl calibrate`` for this machine's)."""
    if device == "cuda":
        return datasheet("generic-cuda", "cuda", 10e12, 300e9, 0.4, 0.6, 10e-6,
                         "generic GPU (10 TFLOP/s fp32, 300 GB/s), uncalibrated: run costcl "
                         "calibrate --device cuda")
    return datasheet("generic-cpu", "cpu", 100e9, 20e9, 0.5, 0.5, 5e-6,
                     "generic 2-core CPU (100 GFLOP/s fp32, 20 GB/s), uncalibrated: run costcl "
                     "calibrate")


def for_device(device: str, path: str | os.PathLike[str] | None = None) -> TimeProfile:
    """``path`` if given; else this machine's calibrated profile for ``device`` if
    ``costcl calibrate`` wrote one; else :func:`generic`."""
    if path is not None:
        return load(path)
    own = default_path(device)
    if own.is_file():
        return load(own)
    return generic(device)
