"""The report's charts.  Each draws one PNG and returns the rows it plotted.

matplotlib with the Agg backend: no display is needed.  Every chart has a
title, axis labels with units and a legend placed outside the data.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from reports.units import MIB  # noqa: E402

TERMS = ("parameters", "gradients", "optimizer_state", "activations", "buffer", "method_state",
         "temporaries", "other")
COLORS = {"parameters": "#4c72b0", "gradients": "#dd8452", "optimizer_state": "#55a868",
          "activations": "#c44e52", "buffer": "#8172b3", "method_state": "#937860",
          "temporaries": "#da8bc3", "other": "#8c8c8c"}
DPI = 110


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _figure_legend(fig: Any, axes: Sequence[Any], outside: bool = False, **where: Any) -> None:
    """One legend for the figure, above the plots: each label once, whichever axes drew it.

    ``outside``: in a constrained-layout figure, a column of its own right of the plots,
    where it can meet neither the title nor a bar.
    """
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    loc = "outside right upper" if outside else "upper center"
    fig.legend(handles.values(), handles.keys(), loc=loc, frameon=False, **where)


def _terms(breakdown: dict[str, int]) -> dict[str, float]:
    out = {t: breakdown.get(t, 0) / MIB for t in TERMS if t != "other"}
    out["other"] = (breakdown.get("model_buffers", 0) + breakdown.get("inputs", 0)) / MIB
    return out


def _slant_if_crowded(ax: Any, names: Sequence[str]) -> None:
    """Slant the method names only when they could touch (many, or long ones)."""
    if len(names) > 6 or max(map(len, names), default=0) > 8:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")


def memory_breakdown(runtime: Sequence[Any], paper: Sequence[Any], path: Path) -> list[dict]:
    """Stacked bars of the peak's terms per method, runtime beside paper convention.

    Constrained layout gives the title, the panels and the legend (right of them)
    their own space, and the y axis leaves room above the tallest bar for its
    total, so no label sits on a title or an axis line.
    """
    names = [e.scenario.method for e in runtime]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True, layout="constrained")
    rows = []
    tallest = 0.0
    for ax, estimates, label in ((axes[0], runtime, "runtime (what PyTorch allocates)"),
                                 (axes[1], paper, "paper (the LightCL table's accounting)")):
        bottoms = [0.0] * len(estimates)
        terms = [_terms(e.memory.breakdown_bytes) for e in estimates]
        for term in TERMS:
            values = [t[term] for t in terms]
            if not any(values):
                continue
            ax.bar(names, values, bottom=bottoms, color=COLORS[term], label=term.replace("_", " "))
            bottoms = [b + v for b, v in zip(bottoms, values)]
        for i, total in enumerate(bottoms):
            ax.annotate(f"{total:.0f}", (i, total), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8)
        tallest = max([tallest, *bottoms])
        ax.set_title(label, fontsize=10, pad=8)
        ax.set_xlabel("method")
        _slant_if_crowded(ax, names)
        for e, t in zip(estimates, terms):
            rows.append({"convention": e.convention, "method": e.scenario.method,
                         "peak_mib": round(e.memory.peak_bytes / MIB, 2)}
                        | {f"{k}_mib": round(v, 2) for k, v in t.items()})
    axes[0].set_ylim(0, (tallest or 1) * 1.12)  # the totals' labels stay inside the axes
    axes[0].set_ylabel("peak memory of one step (MiB)")
    _figure_legend(fig, axes, outside=True, title="term", reverse=True)  # as stacked
    fig.suptitle("Peak memory per method, by term", fontsize=12)
    _save(fig, path)
    return rows


def _eng() -> EngFormatter:
    """3.5 G rather than 3.5e+09: an SI prefix, the unit left to the axis label."""
    return EngFormatter(sep=" ")


def flops(estimates: Sequence[Any], path: Path) -> list[dict]:
    """Per-step (forward, backward) and whole-run FLOPs per method."""
    names = [e.scenario.method for e in estimates]
    fwd = [e.step.forward_flops for e in estimates]
    bwd = [e.step.backward_flops for e in estimates]
    run = [e.run.total_flops for e in estimates]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.bar(names, fwd, color="#4c72b0", label="forward")
    a.bar(names, bwd, bottom=fwd, color="#dd8452", label="backward")
    a.set_title("one training step", fontsize=10)
    a.set_ylabel("FLOPs per step")
    a.yaxis.set_major_formatter(_eng())
    a.set_ylim(top=max(f + g for f, g in zip(fwd, bwd)) * 1.3)  # room for the legend
    a.legend(loc="upper left", frameon=False, ncol=2)
    b.bar(names, run, color="#55a868")
    b.set_title("the whole CL schedule", fontsize=10)
    b.set_ylabel("FLOPs over the run")
    b.yaxis.set_major_formatter(_eng())
    for ax in (a, b):
        ax.set_xlabel("method")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("Training FLOPs per method (FlopCounterMode's convention: 2 per MAC)", fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    return [{"method": n, "forward_flops": f, "backward_flops": g, "run_flops": r,
             "steps": e.run.steps} for n, f, g, r, e in zip(names, fwd, bwd, run, estimates)]


def equal_budget(points: dict[str, list[tuple[float, int | None]]],
                 devices: Sequence[tuple[str, float]], path: Path) -> list[dict]:
    """Exemplars each method may keep as the budget grows; device profiles as vertical lines."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for name, pts in points.items():
        xs = [x for x, y in pts if y]
        ys = [y for x, y in pts if y]
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
    grid = [x for x, _ in next(iter(points.values()), [])]
    rows = [{"budget_mib": x, **{name: dict(pts).get(x) for name, pts in points.items()}}
            for x in grid]
    for name, usable_mib in devices:  # labels above the axes, where no data is
        ax.axvline(usable_mib, color="#666666", linestyle="--", linewidth=1)
        ax.text(usable_mib, 1.01, name, rotation=30, va="bottom", ha="left", fontsize=8,
                color="#444444", transform=ax.get_xaxis_transform())
    ax.set_xlabel("memory budget (MiB)")
    ax.set_ylabel("exemplars that fit (log scale)")
    ax.set_yscale("log")
    ax.set_title("Exemplars each method may keep as the budget grows\n(runtime convention, "
                 "its own exemplar format; dashed: usable memory of the device profiles)",
                 fontsize=11, pad=42)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="method")
    ax.set_xlim(left=0)
    ax.grid(True, which="major", axis="y", color="#eeeeee")
    _save(fig, path)
    return rows


def batch_memory(points: dict[str, list[tuple[float, int | None]]],
                 devices: Sequence[tuple[str, float]], path: Path) -> list[dict]:
    """Runtime peak of one step as the batch grows; device profiles as horizontal lines."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for name, pts in points.items():
        ax.plot([x for x, _ in pts], [y / MIB for _, y in pts], marker="o", markersize=4,
                label=name)
    top = max((y for pts in points.values() for _, y in pts), default=0) / MIB
    for name, usable_mib in devices:  # only the profiles inside the plotted range
        if usable_mib <= top * 1.05:
            ax.axhline(usable_mib, color="#666666", linestyle="--", linewidth=1)
            ax.text(1.01, usable_mib, name, va="center", ha="left", fontsize=8, color="#444444",
                    transform=ax.get_yaxis_transform())
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_xlabel("batch size (samples per step)")
    ax.set_ylabel("peak memory of one step (MiB, log scale)")
    ax.set_title("Peak memory as the batch grows (runtime convention; "
                 "dashed: usable memory of the device profiles)", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.16, 1.0), frameon=False, title="method")
    ax.grid(True, which="major", color="#eeeeee")
    _save(fig, path)
    grid = [x for x, _ in next(iter(points.values()), [])]
    return [{"batch_size": x, **{f"{name}_peak_mib": round(dict(pts)[x] / MIB, 2)
                                 for name, pts in points.items()}} for x in grid]


def lightcl_table(cells: Sequence[Any], path: Path) -> list[dict]:
    """Published, paper-convention and runtime Mem and FLOPs of the LightCL table."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    rows = []
    for col, ds in enumerate(("cifar10", "tinyimagenet")):
        for row, q in enumerate(("mem", "flops")):
            ax = axes[row][col]
            sel = [c for c in cells if c.dataset == ds and c.quantity == q]
            labels = [c.label for c in sel]
            x = range(len(sel))
            w = 0.27
            ax.bar([i - w for i in x], [c.published for c in sel], w, label="published", color="#8c8c8c")
            ax.bar(list(x), [c.paper for c in sel], w, label="costcl paper", color="#4c72b0")
            ax.bar([i + w for i in x], [c.runtime for c in sel], w, label="costcl runtime", color="#c44e52")
            ax.set_xticks(list(x))
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
            unit = "MiB" if q == "mem" else (r"$10^{15}$ FLOPs" if ds == "cifar10"
                                             else r"$10^{16}$ FLOPs")
            ax.set_ylabel(f"{'memory' if q == 'mem' else 'FLOPs'} ({unit})")
            ax.set_title(f"{'Split CIFAR-10' if ds == 'cifar10' else 'Split TinyImageNet'}: "
                         f"{'Mem' if q == 'mem' else 'FLOPs'}", fontsize=10)
            rows += [{"method": c.label, "dataset": ds, "quantity": q, "published": c.published,
                      "paper": round(c.paper, 2), "runtime": round(c.runtime, 2),
                      "reproduced": c.reproduced} for c in sel]
    _figure_legend(fig, [axes[0][0]], ncol=3, bbox_to_anchor=(0.5, 1.02))
    fig.suptitle("The LightCL table beside costcl", y=1.05, fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    return rows


def validation_scatter(items: Sequence[dict], path: Path, band: float = 0.05) -> list[dict]:
    """Predicted against measured peak memory and FLOPs, with y = x and an error band.

    The FLOPs axes are logarithmic: ticks at 1, 2 and 5 of each decade, written with
    an SI prefix (20 G), and the x labels slanted, so they never run into each other
    (matplotlib's default labels every minor tick as 3x10^10, which overlap).
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    rows = list(items)
    mem = [(r["measured_peak_mib"], r["predicted_peak_mib"]) for r in rows if r["measured_peak_mib"]]
    fl = [(r["measured_flops"], r["predicted_flops"]) for r in rows if r["measured_flops"]]
    for ax, pts, unit, log in ((a, mem, "MiB", False), (b, fl, "FLOPs", True)):
        if not pts:  # e.g. a CPU run measures no peak memory
            ax.text(0.5, 0.5, f"no measured {'peak memory' if unit == 'MiB' else 'FLOPs'} "
                    "in these results", ha="center", va="center", transform=ax.transAxes,
                    color="#666666")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        lo = min(min(p) for p in pts) * 0.8
        hi = max(max(p) for p in pts) * 1.2
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="y = x")
        ax.fill_between([lo, hi], [lo * (1 - band), hi * (1 - band)], [lo * (1 + band), hi * (1 + band)],
                        color="#4c72b0", alpha=0.15, label=f"±{band:.0%}")
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="#c44e52", zorder=3,
                   label="a validated step")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            decades = math.log10(hi / lo)
            subs = (1.0,) if decades > 4 else (1.0, 2.0, 5.0) if decades > 1 else range(1, 10)
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_locator(LogLocator(base=10, subs=tuple(map(float, subs))))
                axis.set_major_formatter(_eng())
                axis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
        ax.set_xlabel(f"measured ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.legend(loc="upper left", frameon=False)
    a.set_title("peak memory of a step", fontsize=10)
    b.set_title("FLOPs of a step (log scale)", fontsize=10)
    fig.suptitle("costcl's prediction against measured training steps", fontsize=12)
    _save(fig, path)
    return rows


def layers(estimate: Any, path: Path) -> list[dict]:
    """Forward FLOPs and activation bytes kept for backward per layer; frozen layers shaded."""
    table = [r for r in estimate.layers if r.forward_flops or r.saved_bytes]
    names = [r.name for r in table]
    x = range(len(table))
    fig, (a, b) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    a.bar(list(x), [r.forward_flops for r in table], color="#4c72b0", label="forward FLOPs")
    a.yaxis.set_major_formatter(_eng())
    a.set_ylabel("forward FLOPs")
    b.bar(list(x), [r.saved_bytes / MIB for r in table], color="#c44e52",
          label="activations kept for backward")
    b.set_ylabel("kept for backward (MiB)")
    for ax in (a, b):
        first = True
        for i, r in enumerate(table):
            if r.frozen:
                ax.axvspan(i - 0.5, i + 0.5, color="#cccccc", alpha=0.5,
                           label="frozen (no backward)" if first else None)
                first = False
    _figure_legend(fig, (a, b), ncol=3, bbox_to_anchor=(0.5, 0.965))
    b.set_xticks(list(x))
    b.set_xticklabels(names, rotation=90, fontsize=7)
    b.set_xlabel("layer (forward order)")
    s = estimate.scenario
    fig.suptitle(f"Per layer: {s.method} on {s.model}, batch {s.batch_size}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    _save(fig, path)
    return [{"layer": r.name, "type": r.type, "forward_flops": r.forward_flops,
             "saved_mib": round(r.saved_bytes / MIB, 3), "frozen": r.frozen} for r in table]


def cut_sweep(estimates: Sequence[Any], path: Path) -> list[dict]:
    """Latent replay at every cut layer: the step's peak by term, and its FLOPs.

    A deeper cut trains less (fewer FLOPs, no activations kept below it) but its latents
    may be larger per sample than the image: the buffer term shows it.
    """
    cuts = [e.scenario.options["cut"] for e in estimates]
    fig, (ax, flops_ax) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained",
                                       width_ratios=(2, 1))
    terms = [_terms(e.memory.breakdown_bytes) for e in estimates]
    bottoms = [0.0] * len(estimates)
    for term in TERMS:
        values = [t[term] for t in terms]
        if any(values):
            ax.bar(cuts, values, bottom=bottoms, color=COLORS[term], label=term.replace("_", " "))
            bottoms = [b + v for b, v in zip(bottoms, values)]
    for i, total in enumerate(bottoms):
        ax.annotate(f"{total:.0f}", (i, total), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, (max(bottoms) or 1) * 1.12)
    ax.set_xlabel("cut (it and every layer before it frozen)")
    ax.set_ylabel("peak memory of one step (MiB)")
    ax.set_title("peak by term", fontsize=10)
    step_flops = [e.step.forward_flops + e.step.backward_flops for e in estimates]
    flops_ax.bar(cuts, step_flops, color="#2f4b7c")
    flops_ax.yaxis.set_major_formatter(_eng())
    flops_ax.set_xlabel("cut")
    flops_ax.set_ylabel("FLOPs of one step")
    flops_ax.set_title("forward + backward FLOPs", fontsize=10)
    _slant_if_crowded(ax, cuts)
    _slant_if_crowded(flops_ax, cuts)
    _figure_legend(fig, [ax], outside=True, title="term", reverse=True)
    s = estimates[0].scenario
    fig.suptitle(f"Latent replay on {s.model} as the cut moves deeper\n"
                 f"({s.buffer_size:,} latents; batch {s.batch_size} + {s.replay_batch} replayed)",
                 fontsize=11)
    _save(fig, path)
    return [{"cut": cut, "peak_mib": round(e.memory.peak_bytes / MIB, 2), "step_flops": fl}
            | {f"{k}_mib": round(v, 2) for k, v in t.items()}
            for cut, e, fl, t in zip(cuts, estimates, step_flops, terms)]
