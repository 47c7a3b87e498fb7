"""The sweep report's own charts: accuracy against memory, and seconds against FLOPs.

Same conventions as :mod:`reports.charts` (Agg backend, units on the axes, the
numbers plotted returned as rows for the table under the chart).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.ticker import FuncFormatter

from reports.charts import _eng, _save, plt

MARKERS = "osD^vP*Xh<>"


def accuracy_memory(groups: Sequence[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Final CIL accuracy (mean over seeds, bars from the lowest to the highest seed)
    against each configuration's peak memory: what a method buys with its memory."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for i, g in enumerate(groups):
        lo, hi = g["cil_min"], g["cil_max"]
        ax.errorbar([g["peak_mib"]], [100 * g["cil_mean"]],
                    yerr=[[100 * (g["cil_mean"] - lo)], [100 * (hi - g["cil_mean"])]],
                    fmt=MARKERS[i % len(MARKERS)], capsize=4, markersize=8, label=g["point"])
    ax.set_xlabel(f"peak memory of the run (MiB, {groups[0]['memory'] if groups else 'predicted'})")
    ax.set_ylabel("final class-IL accuracy (%), mean over seeds")
    ax.set_title("Accuracy against memory (bars: lowest to highest seed)", fontsize=11)
    fig.legend(loc="outside right upper", frameon=False, fontsize=8)
    _save(fig, path)
    return list(groups)


def seconds_flops(points: Sequence[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Measured seconds against predicted FLOPs, per job kind: what a time model would be
    fitted to (costcl predicts no time yet)."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    kinds = sorted({p["job"] for p in points})
    for i, kind in enumerate(kinds):
        pts = [p for p in points if p["job"] == kind]
        what = "a run" if kind == "train" else "a step"
        ax.scatter([p["predicted_flops"] for p in pts], [p["seconds"] for p in pts],
                   marker=MARKERS[i % len(MARKERS)], s=50, zorder=3,
                   label=f"{kind}: seconds of {what}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    seconds = FuncFormatter(lambda v, _: f"{v:.3g}")
    for axis, fmt in ((ax.xaxis, _eng()), (ax.yaxis, seconds)):  # minor ticks labelled too: a
        axis.set_major_formatter(fmt)                             # narrow range may hold no decade
        axis.set_minor_formatter(fmt)
    plt.setp(ax.get_xticklabels(minor=True), rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlabel("predicted FLOPs (log scale)")
    ax.set_ylabel("measured seconds (log scale)")
    ax.set_title("Measured time against predicted FLOPs", fontsize=11)
    fig.legend(loc="outside right upper", frameon=False)
    _save(fig, path)
    return list(points)
