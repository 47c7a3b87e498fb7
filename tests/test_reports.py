"""Reports: CSV that equals the JSON, the HTML/Markdown report, and its failure modes."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from PIL import Image


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _get(obj, path: str):  # noqa: ANN001, ANN202
    for key in path.split("."):
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


def _same(cell: str, value) -> bool:  # noqa: ANN001
    """A CSV cell holds the JSON value: integers exactly, floats to the last digit."""
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell == str(value)
    if isinstance(value, int):
        return int(cell) == value
    if isinstance(value, float):
        return float(cell) == value
    return cell == str(value)


def _check(rows: list[dict[str, str]], obj, columns: dict[str, str]) -> None:  # noqa: ANN001
    """Each row i: column -> JSON path, with '{i}' standing for the row's index."""
    for i, row in enumerate(rows):
        for col, path in columns.items():
            want = _get(obj, path.format(i=i))
            assert _same(row[col], want), (i, col, row[col], want)


def both(costcl, *args: str):  # noqa: ANN001, ANN201
    j = costcl(*args, "--format", "json")
    c = costcl(*args, "--format", "csv")
    assert j.returncode == 0 and c.returncode == 0, (j.stderr, c.stderr)
    return json.loads(j.stdout), _csv(c.stdout)


def test_estimate_csv_equals_json(costcl):
    d, rows = both(costcl, "estimate", "--method", "er", "-b", "8")
    assert len(rows) == 1
    _check(rows, d, {"method": "scenario.method", "step_forward_flops": "step.forward_flops",
                     "step_backward_flops": "step.backward_flops",
                     "run_total_flops": "run.total_flops", "run_steps": "run.steps",
                     "memory_peak_bytes": "memory.peak_bytes",
                     "memory_activations_bytes": "memory.breakdown_bytes.activations",
                     "memory_buffer_bytes": "memory.breakdown_bytes.buffer",
                     "params_trainable": "params.trainable", "scenario_batch_size": "scenario.batch_size",
                     "scenario_buffer_size": "scenario.buffer_size"})
    assert rows[0]["scenario_input_size"] == "3x32x32"
    assert int(rows[0]["step_forward_flops"]) == 16 * 1_110_845_440  # 8 + 8 replayed


def test_layer_csv_has_one_row_per_layer(costcl):
    d, rows = both(costcl, "estimate", "--method", "lightcl", "-b", "4", "--layers")
    assert len(rows) == len(d["layers"]) > 20
    _check(rows, d, {"layer": "layers.{i}.name", "forward_flops": "layers.{i}.forward_flops",
                     "backward_weight_flops": "layers.{i}.backward_weight_flops",
                     "saved_bytes": "layers.{i}.saved_bytes", "frozen": "layers.{i}.frozen"})
    assert sum(int(r["forward_flops"]) for r in rows) > 0
    assert {r["frozen"] for r in rows} == {"True", "False"}


def test_compare_csv_equals_json(costcl):
    d, rows = both(costcl, "compare", "--methods", "sgd,er,lightcl", "-b", "4")
    assert [r["method"] for r in rows] == ["sgd", "er", "lightcl"]
    _check(rows, d, {"memory_peak_bytes": "{i}.memory.peak_bytes",
                     "step_forward_flops": "{i}.step.forward_flops",
                     "relative_peak": "{i}.relative_to_first.peak"})
    assert float(rows[0]["relative_peak"]) == 1.0


@pytest.mark.parametrize("args,columns", [
    (["--protocol", "fair"], {"method": "methods", "exemplars": "methods", "model_bytes": "methods"}),
    (["--budget-mib", "30", "--methods", "icarl,memo"],
     {"method": "{i}.method", "exemplars": "{i}.exemplars", "model_bytes": "{i}.model_bytes"}),
], ids=["fair", "budget-mib"])
def test_budget_csv_equals_json(args, columns, costcl):
    d, rows = both(costcl, "budget", *args)
    if isinstance(d, dict):  # the fair table: rows follow the methods mapping
        assert [r["method"] for r in rows] == list(d["methods"])
        for r in rows:
            m = d["methods"][r["method"]]
            assert (int(r["exemplars"]), int(r["model_bytes"])) == (m["exemplars"], m["model_bytes"])
            assert float(r["budget_mib"]) == d["budget_mib"]
        assert int(next(r for r in rows if r["method"] == "icarl")["exemplars"]) == 7431
    else:
        _check(rows, d, columns)


def test_fit_csv_equals_json(costcl):
    # costcl's LightCL: the repository's stored samples are a slice of one batch, so there
    # a larger buffer changes nothing and fit reports no largest buffer
    d, rows = both(costcl, "fit", "--method", "lightcl", "--impl", "costcl", "--device",
                   "jetson-nano", "--methods", "sgd,er")
    assert [r["method"] for r in rows] == ["lightcl", "sgd", "er"]
    assert int(rows[0]["largest_batch"]) == d["largest_batch"]
    assert int(rows[0]["largest_buffer"]) == d["largest_buffer"]
    assert int(rows[0]["usable_bytes"]) == d["usable_bytes"] == 2304 * 2**20
    _check(rows[1:], d["methods"], {"peak_bytes": "{i}.peak_bytes", "fits": "{i}.fits",
                                    "short_by_bytes": "{i}.short_by_bytes"})


def test_validate_csv_equals_json(costcl):
    args = ("validate", "--method", "sgd", "-b", "2", "--fake", "--steps", "1")
    d, rows = both(costcl, *args)
    _check(rows, d, {"predicted_peak_bytes": "predicted.memory.peak_bytes",
                     "measured_peak_bytes": "measured.peak_bytes",
                     "predicted_forward_flops": "predicted.step.forward_flops",
                     "measured_forward_flops": "measured.forward_flops",
                     "measured_backward_flops": "measured.backward_flops",
                     "relative_error_peak": "relative_error.peak_bytes"})
    assert int(rows[0]["predicted_forward_flops"]) == int(rows[0]["measured_forward_flops"])


# -- the report -------------------------------------------------------------------------------

def test_report_on_the_defaults(tmp_path, costcl):
    out = tmp_path / "rep"
    r = costcl("report", "--out", str(out))
    assert r.returncode == 0, r.stderr
    page, md = (out / "index.html").read_text(), (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 6, pngs
    for name in pngs:
        assert f"src='{name}'" in page and f"]({name})" in md, name
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300
    referenced = set(re.findall(r"src='([^']+)'", page)) | set(re.findall(r"\]\(([^)]+)\)", md))
    assert referenced == set(pngs)  # nothing referenced that is not there
    # the numbers behind each chart are in a table below it
    assert page.count("<table>") >= len(pngs) and md.count("| --- |") >= len(pngs)
    assert "| lightcl | resnet18-cifar | cifar10 | 5 | 50 | 32 |" in md
    assert not list(tmp_path.glob(".rep.costcl-*"))  # the staging folder is gone
    assert (out / ".costcl-report").is_file()  # the marker: a later report may replace it


def test_validation_chart_from_results(tmp_path, costcl):
    from reports import charts
    from reports.report import _validation_rows, load_validations

    v = costcl("validate", "--method", "sgd", "-b", "2", "--fake", "--steps", "1", "--json")
    assert v.returncode == 0, v.stderr
    (tmp_path / "sgd.json").write_text(v.stdout)
    (tmp_path / "notes.json").write_text('{"unrelated": 1}')  # ignored, not an error
    rows = _validation_rows(load_validations(tmp_path))
    assert len(rows) == 1 and rows[0]["method"] == "sgd"
    assert rows[0]["predicted_flops"] == rows[0]["measured_flops"] == 2_221_690_880 + 4_436_303_872  # no input grad for the stem
    charts.validation_scatter(rows, tmp_path / "v.png")
    with Image.open(tmp_path / "v.png") as im:
        assert im.format == "PNG"


@pytest.mark.parametrize("make,args,message", [
    (lambda p: (p / "f").write_text("x"), ["--out", "{p}/f"], "is a file; give a folder"),
    (lambda p: (p / "v").mkdir(), ["--out", "{p}/o", "--validation", "{p}/v"],
     "no validation results in"),
    (lambda p: None, ["--out", "{p}/o", "--validation", "{p}/missing"], "is not a folder of validation"),
    (lambda p: None, ["--out", "{p}/o", "--methods", "sgd,derp"], "unknown method 'derp'"),
], ids=["out-is-a-file", "empty-validation", "missing-validation", "unknown-method"])
def test_report_bad_input(make, args, message, tmp_path, costcl):
    make(tmp_path)
    r = costcl("report", *[a.format(p=tmp_path) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["estimate", "compare", "budget", "fit", "validate"])
def test_unknown_format(command, costcl):
    r = costcl(command, "--format", "xml")
    assert r.returncode == 2
    assert r.stderr.strip() == "costcl: error: unknown format 'xml'; choose one of: csv, json, table"


def test_a_failed_report_leaves_the_old_index(tmp_path, monkeypatch):
    from costmodel.scenario import Scenario
    from reports import charts
    from reports.report import Sweeps, build

    out = tmp_path / "rep"
    out.mkdir()
    old = "the previous report. Made by costcl."  # a report from before the marker file
    (out / "index.html").write_text(old)

    def broken(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("disk full")

    monkeypatch.setattr(charts, "flops", broken)
    sweeps = Sweeps({}, [], {}, [])
    with pytest.raises(RuntimeError, match="disk full"):
        build(Scenario(method="sgd", batch_size=2), ["sgd"], out, sweeps)
    assert (out / "index.html").read_text() == old
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # no chart, no report.md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no staging folder left
