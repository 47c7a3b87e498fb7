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
                      "CUDA context and libraries ~0.75 GB", unified=True),
        DeviceProfile("jetson-orin-nano", 8192, 1024, 1024, "cuda",
                      "Jetson Orin Nano 8 GB (shared); headless L4T ~1 GB, CUDA/cuDNN runtime ~1 GB",
                      unified=True),
        DeviceProfile("raspberry-pi-4", 4096, 512, 256, "cpu",
                      "Raspberry Pi 4 Model B 4 GB, CPU only; Raspberry Pi OS Lite ~0.5 GB, "
                      "Python and PyTorch libraries ~0.25 GB"),
        DeviceProfile("laptop-gpu-8gb", 8192, 256, 512, "cuda",
                      "an 8 GB laptop GPU (e.g. RTX 4060 Laptop); display ~0.25 GB, CUDA context "
                      "and libraries ~0.5 GB"),
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
        return DeviceProfile(f"{name} with --memory-mib", mib, 0, 0, known.runs_on,
                             f"usable memory given with --memory-mib, in place of the profile's "
                             f"{known.usable_mib:,} MiB", known.unified)
    if name is None:
        raise CostclError("give --device NAME (see costcl devices) or --memory-mib X")
    if name not in DEVICES:
        raise suggest(name, DEVICES, "device")
    return DEVICES[name]
