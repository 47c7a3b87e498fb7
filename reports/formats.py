"""Files other tools read: JSON (the documented shapes) and CSV (one row per method or layer).

CSV columns carry their units in their names (``peak_bytes``, ``forward_flops``,
``budget_mib``), and every number in a CSV row is the number the JSON output
holds for it (a test parses both and compares).  Rows are flattened from the
JSON objects, so the two cannot drift apart.
"""
from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from costmodel.errors import suggest

FORMATS = ("table", "json", "csv")


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise suggest(name, FORMATS, "format")
    return name


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys joined with '_'; lists of plain values joined ('x' for shapes)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= _flatten(value, f"{name}_")
        elif isinstance(value, (list, tuple)):
            out[name] = ("x" if name.endswith(("shape", "size")) else ";").join(map(str, value))
        else:
            out[name] = value
    return out


def estimate_rows(estimate_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row: the scenario, the step, the run and the memory, flattened."""
    d = estimate_json
    row: dict[str, Any] = {"method": d["scenario"]["method"], "convention": d["convention"],
                           "flops_convention": d["flops_convention"]}
    row |= {f"scenario_{k}": v for k, v in _flatten(d["scenario"]).items() if k != "method"}
    row |= {f"step_{k}": v for k, v in d["step"].items()}
    row |= {"run_steps": d["run"]["steps"], "run_total_flops": d["run"]["total_flops"]}
    m = d["memory"]
    row |= {"memory_peak_bytes": m["peak_bytes"], "memory_peak_mib": m["peak_mib"],
            "memory_phase": m["phase"], "memory_where": m["where"]}
    row |= {f"memory_{k}_bytes": v for k, v in m["breakdown_bytes"].items()}
    row |= {"params_total": d["params"]["total"], "params_trainable": d["params"]["trainable"]}
    if "time" in d:
        t = d["time"]
        row |= {"time_profile": t["profile"], "time_calibrated": t["calibrated"],
                "time_step_s": t["step_s"], "time_forward_s": t["forward_s"],
                "time_backward_s": t["backward_s"], "time_optimizer_s": t["optimizer_s"],
                "time_run_h": t["run_h"]}
        row |= {f"time_share_{k}": v for k, v in t["share"].items()}
    return [row]


def layer_rows(estimate_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per layer, units in the names."""
    rows = []
    for layer in estimate_json.get("layers", []):
        row = {"layer": layer["name"], "type": layer["type"], "params": layer["params"],
               "trainable_params": layer["trainable_params"],
               "input_shape": "x".join(map(str, layer["input_shape"])),
               "output_shape": "x".join(map(str, layer["output_shape"])),
               "forward_flops": layer["forward_flops"],
               "backward_input_flops": layer["backward_input_flops"],
               "backward_weight_flops": layer["backward_weight_flops"],
               "saved_bytes": layer["saved_bytes"], "elementwise_flops": layer["elementwise_flops"],
               "frozen": layer["frozen"],
               "grouped_weight_grad_excess_flops": layer.get("grouped_weight_grad_excess_flops", 0)}
        rows.append(row)
    return rows


def compare_rows(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for d in items:
        row = estimate_rows(d)[0]
        row |= {f"relative_{k}": v for k, v in d["relative_to_first"].items()}
        rows.append(row)
    return rows


def budget_rows(obj: Any) -> list[dict[str, Any]]:
    """Fair: a row per method; auc: a row per (point, method); equal/flops budgets: a row per method."""
    tables = obj if isinstance(obj, list) else [obj]
    rows = []
    for t in tables:
        if "methods" not in t:  # --budget-mib / --flops-budget rows
            row = dict(t)
            for k in ("model_bytes", "short_by_bytes"):
                if k in row:
                    row[k.replace("_bytes", "_mib")] = row[k] / 2**20
            rows.append(row)
            continue
        for name, m in t["methods"].items():
            rows.append({"protocol": t["protocol"], "dataset": t["dataset"], "point": t["point"],
                         "tasks": t["tasks"], "init": t["init"], "increment": t["increment"],
                         "budget_bytes": t["budget_bytes"], "budget_mib": t["budget_mib"],
                         "method": name, "backbone": m["backbone"], "exemplars": m["exemplars"],
                         "model_bytes": m["model_bytes"],
                         "exemplars_per_class": m["exemplars_per_class"]})
    return rows


def fit_rows(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    head = {"device": d["device"]["name"], "usable_bytes": d["usable_bytes"],
            "usable_mib": d["device"]["usable_mib"]}
    rows = [head | {"method": d["scenario"]["method"], "largest_batch": d["largest_batch"],
                    "peak_at_largest_bytes": d["peak_at_largest_bytes"],
                    "peak_at_next_bytes": d["peak_at_next_bytes"],
                    "largest_buffer": d["largest_buffer"]}]
    for m in d["methods"]:
        rows.append(head | {"method": m["method"], "batch_size": m["batch_size"],
                            "buffer_size": m["buffer_size"], "peak_bytes": m["peak_bytes"],
                            "fits": m["fits"], "short_by_bytes": m["short_by_bytes"]})
    for i, r in enumerate(d.get("time", [])):  # --time-budget: the scenario, then the methods
        rows[i] |= {f"time_{k}": v for k, v in r.items() if k != "method"} | {
            "time_budget_s": d["time_budget_s"]}
    return rows


def validation_rows(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    p, m = d["predicted"], d["measured"]
    return [{"method": p["scenario"]["method"], "model": p["scenario"]["model"],
             "batch_size": p["scenario"]["batch_size"], "device": m["device"],
             "compared_with": d["compared_with"],
             "compared_peak_bytes": d["compared_peak_bytes"],
             "predicted_peak_bytes": p["memory"]["peak_bytes"],
             "predicted_instrumented_peak_bytes": d["predicted_instrumented_peak_bytes"],
             "measured_peak_bytes": m["peak_bytes"], "measured_reserved_bytes": m["reserved_bytes"],
             "predicted_forward_flops": p["step"]["forward_flops"],
             "predicted_backward_flops": p["step"]["backward_flops"],
             "measured_forward_flops": m["forward_flops"], "measured_backward_flops": m["backward_flops"],
             "seconds_per_step": m.get("seconds_per_step"),
             "predicted_seconds_per_step": (p.get("time") or {}).get("step_s"),
             "relative_error_peak": d["relative_error"]["peak_bytes"],
             "relative_error_flops": d["relative_error"]["flops"]}]


def write_csv(rows: list[dict[str, Any]], stream: TextIO | None = None) -> str:
    """CSV with the union of the rows' columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    text = buf.getvalue()
    (stream or sys.stdout).write(text)
    return text
