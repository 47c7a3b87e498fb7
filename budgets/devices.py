"""Edge devices as memory budgets, with what the system keeps for itself.

``usable = total - os_reserve - runtime_reserve``.  The reserves are costcl's
documented estimates, not measurements of any one board: the operating system
with its services, and the runtime (CUDA context, cuDNN/cuBLAS handles,
PyTorch's own allocations and allocator slack).  On the Jetsons the CPU and
the GPU share one memory, so both come out of the same total.  Give
``--memory-mib`` for a device not listed or to use your own measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

from budgets.accounting import MIB
from costmodel import checks
from costmodel.errors import CostclError, suggest
from costmodel.time_profile import TimeProfile, datasheet


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    total_mib: int
    os_reserve_mib: int
    runtime_reserve_mib: int
    runs_on: str
    """'cuda' or 'cpu': the code path the runtime convention models."""
    note: str
    unified: bool = False
    """CPU and GPU share one memory (Jetson): what an implementation keeps on the host
    (PyCIL's numpy exemplars, Mammoth's CPU buffer) takes from the same budget."""
    peak_flops: float = 0.0
    """Datasheet peak fp32 FLOP/s (0: unknown; the time model then uses a generic profile)."""
    bandwidth_bytes_s: float = 0.0
    """Datasheet memory bandwidth."""
    flops_efficiency: float = 0.35
    """Share of the peak a training step's convolutions reach: costcl's documented guess,
    uncalibrated (cuDNN/oneDNN training kernels on small CIFAR-sized layers)."""
    bandwidth_efficiency: float = 0.6
    """Share of the bandwidth element-wise kernels reach (uncalibrated, as above)."""
    op_overhead_s: float = 10e-6
    """Fixed cost of one op: a kernel launch or a CPU dispatch (uncalibrated)."""
    speed_note: str = ""
    calibrated: bool = False
    """The speeds are datasheet figures, never measured here: run costcl calibrate on the
    device and pass --device-profile FILE for its own."""

    def time_profile(self) -> TimeProfile:
        """The device's speeds for the time model, from its datasheet figures."""
        if not self.peak_flops:
            from costmodel.time_profile import generic
            return generic(self.runs_on)
        return datasheet(self.name, self.runs_on, self.peak_flops, self.bandwidth_bytes_s,
                         self.flops_efficiency, self.bandwidth_efficiency, self.op_overhead_s,
                         f"{self.speed_note}; efficiency {self.flops_efficiency:.0%} of the FLOP "
                         f"peak and {self.bandwidth_efficiency:.0%} of the bandwidth (costcl's "
                         "assumption): uncalibrated")

    @property
    def usable_mib(self) -> int:
        return self.total_mib - self.os_reserve_mib - self.runtime_reserve_mib

    @property
    def usable_bytes(self) -> int:
        return self.usable_mib * MIB


DEVICES: dict[str, DeviceProfile] = {
    d.name: d
    for d in (
        DeviceProfile("jetson-nano", 4096, 1024, 768, "cuda",
                      "Jetson Nano (4 GB LPDDR4 shared by CPU and GPU); headless L4T ~1 GB, "
                      "CUDA context and libraries ~0.75 GB", unified=True,
                      peak_flops=236e9, bandwidth_bytes_s=25.6e9, op_overhead_s=20e-6,
                      speed_note="128 Maxwell CUDA cores at 921.6 MHz: 236 GFLOP/s fp32; "
                                 "64-bit LPDDR4-3200: 25.6 GB/s (NVIDIA datasheet)"),
        DeviceProfile("jetson-orin-nano", 8192, 1024, 1024, "cuda",
                      "Jetson Orin Nano 8 GB (shared); headless L4T ~1 GB, CUDA/cuDNN runtime ~1 GB",
                      unified=True, peak_flops=1.28e12, bandwidth_bytes_s=68e9,
                      op_overhead_s=12e-6,
                      speed_note="1024 Ampere CUDA cores at 625 MHz: 1.28 TFLOP/s fp32; 128-bit "
                                 "LPDDR5: 68 GB/s (NVIDIA datasheet, 15 W mode)"),
        DeviceProfile("raspberry-pi-4", 4096, 512, 256, "cpu",
                      "Raspberry Pi 4 Model B 4 GB, CPU only; Raspberry Pi OS Lite ~0.5 GB, "
                      "Python and PyTorch libraries ~0.25 GB", peak_flops=48e9,
                      bandwidth_bytes_s=12.8e9, flops_efficiency=0.25, bandwidth_efficiency=0.4,
                      op_overhead_s=15e-6,
                      speed_note="4 Cortex-A72 cores at 1.5 GHz, one 128-bit NEON FMA a cycle: "
                                 "48 GFLOP/s fp32; 32-bit LPDDR4-3200: 12.8 GB/s (Raspberry Pi "
                                 "4 product brief)"),
        DeviceProfile("laptop-gpu-8gb", 8192, 256, 512, "cuda",
                      "an 8 GB laptop GPU (e.g. RTX 4060 Laptop); display ~0.25 GB, CUDA context "
                      "and libraries ~0.5 GB", peak_flops=14.6e12, bandwidth_bytes_s=256e9,
                      flops_efficiency=0.4, bandwidth_efficiency=0.7, op_overhead_s=8e-6,
                      speed_note="RTX 4060 Laptop: 3072 CUDA cores at up to 2.37 GHz: 14.6 "
                                 "TFLOP/s fp32; 128-bit GDDR6 at 16 Gbps: 256 GB/s (NVIDIA "
                                 "specifications)"),
    )
}


def device(name: str | None, memory_mib: float | None = None) -> DeviceProfile:
    """A named profile, or ``--memory-mib`` usable memory for any other device."""
    if memory_mib is not None:
        mib = int(checks.number(memory_mib, "--memory-mib", minimum=1))
        if name is None:
            return DeviceProfile("custom", mib, 0, 0, "cuda", "usable memory given with --memory-mib")
        if name not in DEVICES:
            raise suggest(name, DEVICES, "device")
        known = DEVICES[name]
        if mib > known.total_mib:
            raise CostclError(f"--memory-mib {mib:,} is more than {name}'s {known.total_mib:,} MiB "
                              f"in all; give at most {known.total_mib:,} (or leave it out for the "
                              f"profile's {known.usable_mib:,} usable)")
        import dataclasses
        return dataclasses.replace(known, name=f"{name} with --memory-mib", total_mib=mib,
                                   os_reserve_mib=0, runtime_reserve_mib=0,
                                   note=f"usable memory given with --memory-mib, in place of "
                                        f"the profile's {known.usable_mib:,} MiB")
    if name is None:
        raise CostclError("give --device NAME (see costcl devices) or --memory-mib X")
    if name not in DEVICES:
        raise suggest(name, DEVICES, "device")
    return DEVICES[name]
