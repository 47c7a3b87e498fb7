"""Rich tables for the terminal.  Each function takes a result object and a console."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from costmodel.conventions import TOOL_UNITS
from costmodel.estimation import BREAKDOWN_KEYS, Estimate
from reports.compare import label
from reports.terminal_layers import layer_table
from reports.terminal_time import compare_time_table, time_table
from reports.units import flops, mib


def scenario_line(e: Estimate) -> str:
    s = e.scenario
    replay = f", replay {s.replay_batch}" if s.replay_batch else ""
    frozen = f", {e.trainable_params:,} of {e.total_params:,} parameters train"
    return (f"{s.method}@{s.impl} on {s.model}, {s.dataset} {tuple(s.input_shape)}, batch {s.batch_size}"
            f"{replay}, {s.optimizer}, {s.dtype}, {s.device}{frozen}")


def estimate_table(e: Estimate, console: Console, layers: bool = False) -> None:
    unit = TOOL_UNITS[e.flops_convention]
    console.print(f"[bold]costcl estimate[/bold] ({e.convention} convention, "
                  f"{e.flops_convention} {unit})")
    console.print(scenario_line(e))
    t = Table(title="One training step", show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row(f"forward {unit}", flops(e.step.forward_flops))
    t.add_row(f"backward {unit}", flops(e.step.backward_flops))
    t.add_row("  of which input gradients", flops(e.step.backward_input_flops))
    t.add_row("  of which weight gradients", flops(e.step.backward_weight_flops))
    excess = e.step.grouped_weight_grad_excess_flops
    if excess:
        t.add_row("    of which grouped-conv rule (note)", flops(excess))
    t.add_row("element-wise (estimate, not in the totals)", flops(e.step.elementwise_flops))
    t.add_row(f"whole run: {e.run.steps:,} steps", flops(e.run.total_flops))
    console.print(t)
    m = Table(title=f"Peak memory: {mib(e.memory.peak_bytes)} MiB", header_style="bold")
    m.add_column("term")
    m.add_column("MiB", justify="right")
    m.add_column("share", justify="right")
    for key in BREAKDOWN_KEYS:
        value = e.memory.breakdown_bytes.get(key, 0)
        if value or key in ("parameters", "gradients", "optimizer_state", "activations"):
            share = f"{100 * value / e.memory.peak_bytes:.1f}%" if e.memory.peak_bytes else "-"
            m.add_row(key.replace("_", " "), mib(value), share)
    m.add_row("[bold]peak[/bold]", f"[bold]{mib(e.memory.peak_bytes)}[/bold]", "100%")
    console.print(m)
    if e.convention == "runtime":
        console.print(f"The step's peak comes in the {e.memory.phase}, at {e.memory.where}.")
        if e.memory.peak_with_scratch_bytes is not None:
            console.print(f"With the CPU kernels' own buffers ({e.memory.scratch_threads} "
                          f"threads): {mib(e.memory.peak_with_scratch_bytes)} MiB")
        console.print(f"Whole run: [bold]{mib(e.memory.run_peak_bytes)} MiB[/bold] at "
                      f"{e.memory.run_peak_where}"
                      + (f"; kept on the host: {mib(e.memory.host_bytes)} MiB"
                         if e.memory.host_bytes else ""))
    time_table(e, console)
    for note in e.notes:
        console.print(f"[dim]note: {note}[/dim]")
    if excess:
        console.print(f"note: {grouped_excess_note(e)}")
    if layers and e.layers:
        layer_table(e, console)


def grouped_excess_note(e: Estimate) -> str:
    """Why a step with depthwise convolutions has a backward tens of times its forward."""
    step, unit = e.step, TOOL_UNITS[e.flops_convention]
    excess, fwd = step.grouped_weight_grad_excess_flops, step.forward_flops
    ratio = (f" (the backward is {step.backward_flops / fwd:.1f}x the forward; without the rule "
             f"{(step.backward_flops - excess) / fwd:.1f}x)" if fwd else "")
    where = ("The per-layer table below names the layers." if e.layers
             else "--layers names the layers.")
    return (f"{flops(excess)} of the backward's {flops(step.backward_flops)} {unit} "
            f"({100 * excess / step.backward_flops:.0f}%) come from FlopCounterMode's rule for "
            "grouped (e.g. depthwise) convolutions: it counts such a layer's weight gradient at "
            "groups times the layer's forward, though the arithmetic is about 1x the forward"
            f"{ratio}. {where}")


def compare_table(c, console: Console) -> None:  # noqa: ANN001
    b = c.base
    unit = TOOL_UNITS[b.flops_convention]
    console.print(f"[bold]costcl compare[/bold] ({b.convention} convention; "
                  f"{b.scenario.model} on {b.scenario.dataset}; relative to {b.scenario.method})")
    t = Table(header_style="bold")
    for col in ("method@impl", "samples\nper step", f"step\n{unit}", f"run\n{unit}", "peak\nMiB",
                "run peak\nMiB", "host\nMiB", "peak\nx", "run\nx"):
        t.add_column(col, justify="left" if col == "method@impl" else "right", no_wrap=True)
    for e in c.estimates:
        r = c.relative(e)
        t.add_row(label(e), str(e.step.samples),
                  flops(e.step.forward_flops + e.step.backward_flops), flops(e.run.total_flops),
                  mib(e.memory.peak_bytes), mib(e.memory.run_peak_bytes), mib(e.memory.host_bytes),
                  f"{r['peak']:.2f}", f"{r['run_flops']:.2f}")
    console.print(t)
    compare_time_table(c.estimates, console)
    for line in c.differences():
        console.print(line)
    m = Table(title="Peak memory by term (MiB)", header_style="bold")
    terms = ("parameters", "gradients", "optimizer_state", "activations", "buffer", "method_state",
             "temporaries")
    m.add_column("method", no_wrap=True)
    for term in terms:
        m.add_column(term.replace("optimizer_state", "optimizer").replace("method_state", "method")
                     .replace("temporaries", "temps").replace("parameters", "params")
                     .replace("activations", "acts").replace("gradients", "grads"),
                     justify="right", no_wrap=True)
    for e in c.estimates:
        m.add_row(label(e), *(mib(e.memory.breakdown_bytes[k]) for k in terms))
    console.print(m)
