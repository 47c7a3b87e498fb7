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


PREFIXES = ("", "k", "M", "G", "T", "P", "E")


def si(value: float) -> str:
    """3 significant digits and an SI prefix (1.77G, 481M, 5.13k): for narrow tables."""
    v, i = abs(value), 0
    while v >= 999.5 and i < len(PREFIXES) - 1:
        v, i = v / 1000, i + 1
    return f"{'-' if value < 0 else ''}{v:.3g}{PREFIXES[i]}"
