"""Number formatting shared by every report: MiB with two decimals, FLOPs in
engineering notation, so tables read the same everywhere."""
from __future__ import annotations

MIB = 2**20


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:,.2f}"


def flops(value: float) -> str:
    """1.07e+11 style; exact integers stay available in JSON."""
    return f"{value:.3e}" if value else "0"


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"
