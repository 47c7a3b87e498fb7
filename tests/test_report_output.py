"""Output people can read: the report folder swapped whole, --out checked first, charts
whose labels do not collide, a per-layer table that fits 80 columns, a progress bar.

Everything here runs on tiny fake content (a fake report writer, fake chart inputs,
a depthwise toy model): no test builds a full report.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from rich.console import Console

from costmodel.errors import CostclError
from reports import outdir
from reports.outdir import MARKER, check_out, publish, remove_stale

DEAD_PID = 2**30  # above any pid_max: never a live process


def _writer(files: dict[str, str], calls: list | None = None):  # noqa: ANN202
    def write(stage: Path) -> str:
        if calls is not None:
            calls.append(stage)
        for name, text in files.items():
            (stage / name).write_text(text)
        return "done"
    return write


def _state(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    return {p.name: p.read_text() for p in folder.iterdir() if p.name != MARKER}


OLD = {"index.html": "old page", "a.png": "old chart"}
NEW = {"index.html": "new page", "b.png": "new chart"}


# -- the folder swap -----------------------------------------------------------------------

def test_a_new_report_folder_holds_the_files_and_the_marker(tmp_path):
    out = tmp_path / "deep" / "rep"
    assert publish(out, _writer(NEW)) == "done"
    assert _state(out) == NEW and (out / MARKER).is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["rep"]  # no staging left


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_the_old_report_is_replaced_whole_and_never_mixed(exchange, tmp_path, monkeypatch):
    """Every state of --out a reader could see: the whole old report, the whole new one,
    or (rename-aside only, between two renames) no folder; never old beside new."""
    out = tmp_path / "rep"
    publish(out, _writer(OLD))
    seen = []
    real_rename, real_exchange = os.rename, outdir._exchange

    def rename(a, b):  # noqa: ANN001, ANN202
        real_rename(a, b)
        seen.append(_state(out))

    def exchange_(a, b):  # noqa: ANN001, ANN202
        done = real_exchange(a, b) if exchange else False
        seen.append(_state(out))
        return done

    monkeypatch.setattr(outdir.os, "rename", rename)
    monkeypatch.setattr(outdir, "_exchange", exchange_)
    publish(out, _writer(NEW))
    assert _state(out) == NEW and not (out / "a.png").exists()
    assert all(s in (OLD, NEW, None) for s in seen), seen
    if exchange:
        assert seen == [NEW]  # one atomic step from old to new
    else:
        assert seen == [OLD, None, NEW]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_a_failed_or_interrupted_build_leaves_the_old_report(tmp_path):
    out = tmp_path / "rep"
    publish(out, _writer(OLD))
    for error in (RuntimeError("disk full"), KeyboardInterrupt()):
        def broken(stage: Path) -> None:
            (stage / "index.html").write_text("half")
            raise error
        with pytest.raises(type(error)):
            publish(out, broken)
        assert _state(out) == OLD
        assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_stale_staging_folders_of_dead_runs_are_removed(tmp_path):
    out = tmp_path / "rep"
    dead = [tmp_path / f".rep.costcl-staging-{DEAD_PID}", tmp_path / f".rep.costcl-old-{DEAD_PID}"]
    live = tmp_path / f".rep.costcl-staging-{os.getppid()}"  # a run still going
    other = tmp_path / f".notes.costcl-staging-{DEAD_PID}"  # another --out's: not ours to judge
    for d in (*dead, live, other):
        d.mkdir()
        (d / "index.html").write_text("partial")
    publish(out, _writer(NEW))
    assert not any(d.exists() for d in dead)
    assert live.exists() and other.exists()
    assert remove_stale(out) == []


def test_an_empty_folder_and_a_report_from_before_the_marker_are_replaced(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    publish(empty, _writer(NEW))
    assert _state(empty) == NEW
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "index.html").write_text("<p><small>Made by costcl. Predictions ...</small></p>")
    (legacy / "memory.png").write_text("chart")
    publish(legacy, _writer(NEW))
    assert _state(legacy) == NEW


@pytest.mark.parametrize("content,message", [
    ({"thesis.tex": "my work"}, "is a folder that is not a costcl report"),
    ({"index.html": "my own page"}, "is a folder that is not a costcl report"),
    ({"index.html": "Made by costcl.", "notes.txt": "mine"}, "holds 'notes.txt', which costcl did not write"),
], ids=["user-folder", "user-index", "legacy-plus-user-file"])
def test_a_users_folder_is_never_swapped_away(content, message, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in content.items():
        (out / name).write_text(text)
    calls: list = []
    with pytest.raises(CostclError, match=message):
        publish(out, _writer(NEW, calls))
    assert calls == [] and _state(out) == content  # refused before any work, nothing touched


def test_a_file_added_to_a_report_stops_the_swap(tmp_path):
    out = tmp_path / "rep"
    publish(out, _writer(OLD))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CostclError, match="holds 'notes.txt'"):
        check_out(out)
    calls: list = []

    def sneaky(stage: Path) -> None:  # the user adds a file while the report is computed
        calls.append(stage)
        (stage / "index.html").write_text("new")

    (out / "notes.txt").unlink()
    publish(out, _writer(OLD))  # allowed again
    with pytest.raises(CostclError, match="holds 'late.txt'"):
        publish(out, lambda stage: (sneaky(stage), (out / "late.txt").write_text("x")))
    assert (out / "late.txt").exists() and calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


# -- --out checked before any work ----------------------------------------------------------

BAD_OUT = [
    (lambda p: None, "", "--out is empty"),
    (lambda p: (p / "f").write_text("x"), "{p}/f/rep", "is a file, not a folder"),
    (lambda p: (p / "f").write_text("x"), "{p}/f", "is a file; give a folder"),
    (lambda p: ((p / "mine").mkdir(), (p / "mine" / "a.txt").write_text("x")), "{p}/mine",
     "is not a costcl report"),
    (lambda p: None, ".", "is the current folder"),
]


@pytest.mark.parametrize("make,out,message", BAD_OUT,
                         ids=["empty", "parent-is-a-file", "is-a-file", "user-folder", "cwd"])
def test_report_out_is_checked_before_any_work(make, out, message, tmp_path, costcl, monkeypatch):
    import budgets.curves

    def no_work(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the report started working before checking --out")

    monkeypatch.setattr(budgets.curves, "batch_curves", no_work)
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = costcl("report", "--out", out.format(p=tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_report_out_in_a_folder_without_write_permission(tmp_path, costcl):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        r = costcl("report", "--out", str(locked / "rep"))
    finally:
        locked.chmod(0o755)
    assert r.returncode == 2 and "permission denied" in r.stderr


# -- the progress bar ----------------------------------------------------------------------

def test_the_report_progress_bar_reaches_its_end_in_many_small_steps(tmp_path, costcl, monkeypatch):
    """The bar's total is what the command and build() tick; the LightCL table (most of a
    report's minute) ticks once per row and dataset, so the bar keeps moving."""
    import contextlib

    import budgets.curves
    import cli.cost_commands
    from reports import charts, paper_table
    from reports import report as report_module

    bars: list[dict] = []

    @contextlib.contextmanager
    def fake_progress(total: int, what: str):  # noqa: ANN202
        bar = {"total": total, "labels": []}
        bars.append(bar)
        yield bar["labels"].append

    def fake_curves(_s, names, *_a):  # noqa: ANN001, ANN202
        return budgets.curves.Curves("x", {n: [(1.0, 1)] for n in names})

    def fake_chart(*args, **_k):  # noqa: ANN002, ANN003, ANN202
        Path(args[-1]).write_bytes(b"png")
        return []

    def fake_cells(progress=None):  # noqa: ANN001, ANN202
        for _ in range(report_module._table_rows()):
            progress()
        return []

    def fake_estimate(s, convention="runtime", layers=False):  # noqa: ANN001, ANN202
        return NS(scenario=s.replace(model="resnet18-cifar"), convention=convention)

    monkeypatch.setattr(cli.cost_commands, "_progress", fake_progress)
    monkeypatch.setattr(budgets.curves, "batch_curves", fake_curves)
    monkeypatch.setattr(budgets.curves, "exemplar_curves", fake_curves)
    for name in ("memory_breakdown", "flops", "batch_memory", "equal_budget", "lightcl_table",
                 "layers"):
        monkeypatch.setattr(charts, name, fake_chart)
    monkeypatch.setattr(paper_table, "cells", fake_cells)
    monkeypatch.setattr(report_module, "estimate", fake_estimate)
    r = costcl("report", "--out", str(tmp_path / "rep"), "--methods", "sgd,er")
    assert r.returncode == 0, r.stderr
    (bar,) = bars
    assert len(bar["labels"]) == bar["total"] > 25
    assert sum("LightCL table" in label for label in bar["labels"]) >= 22
    assert "seed" not in " ".join(bar["labels"])
    assert (tmp_path / "rep" / "index.html").is_file()


# -- charts ----------------------------------------------------------------------------------

def _drawn(monkeypatch):  # noqa: ANN001, ANN202
    """Keep each figure a chart draws (drawn, so text extents are final)."""
    from reports import charts

    figs = []
    real = charts._save

    def save(fig, path):  # noqa: ANN001, ANN202
        fig.canvas.draw()
        figs.append((fig, fig.canvas.get_renderer()))
        real(fig, path)

    monkeypatch.setattr(charts, "_save", save)
    return figs


def _overlap(a, b) -> bool:  # noqa: ANN001
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_memory_chart_totals_stay_clear_of_titles_and_axes(tmp_path, monkeypatch):
    from reports import charts

    figs = _drawn(monkeypatch)
    mib = 2**20

    def est(method, conv, activations):  # noqa: ANN001, ANN202
        b = {"parameters": 43 * mib, "gradients": 43 * mib, "activations": activations * mib}
        return NS(scenario=NS(method=method), convention=conv,
                  memory=NS(breakdown_bytes=b, peak_bytes=sum(b.values())))

    names = ["sgd", "er", "derpp", "lightcl"]
    runtime = [est(n, "runtime", a) for n, a in zip(names, (130, 270, 420, 60))]
    paper = [est(n, "paper", a) for n, a in zip(names, (70, 140, 200, 8))]
    rows = charts.memory_breakdown(runtime, paper, tmp_path / "memory.png")
    assert len(rows) == 8
    ((fig, renderer),) = figs
    legend = fig.legends[0].get_window_extent(renderer)
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        panel_title = ax.title.get_window_extent(renderer)
        assert not _overlap(panel_title, title) and not _overlap(legend, box)
        for text in ax.texts:  # the totals above the bars
            t = text.get_window_extent(renderer)
            assert box.y0 <= t.y0 and t.y1 < box.y1, text.get_text()  # inside, under the top
            assert not _overlap(t, panel_title)


def test_validation_chart_flops_labels_do_not_overlap(tmp_path, monkeypatch):
    from reports import charts

    figs = _drawn(monkeypatch)
    rows = [{"method": m, "model": "m", "device": "cuda", "predicted_peak_mib": p,
             "measured_peak_mib": p * 1.02, "predicted_flops": f, "measured_flops": f * 0.98,
             "peak_error": 0.02}
            for m, p, f in (("sgd", 150, 6.6e9), ("er", 190, 1.3e10), ("derpp", 230, 2e10),
                            ("lightcl", 90, 7.5e10))]
    charts.validation_scatter(rows, tmp_path / "v.png")
    ((fig, renderer),) = figs
    flops_ax = fig.axes[1]
    for axis in (flops_ax.xaxis, flops_ax.yaxis):
        labels = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
        assert len(labels) >= 2
        assert all("G" in t.get_text() and "10^" not in t.get_text() for t in labels)  # SI
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


# -- the per-layer table -----------------------------------------------------------------------

def _lines(e, console_kw) -> list[str]:  # noqa: ANN001
    from reports.terminal_layers import layer_table

    buf = io.StringIO()
    layer_table(e, Console(file=buf, **console_kw))
    return re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue()).splitlines()  # no colour codes


@pytest.fixture(scope="module")
def lightcl_layers():  # noqa: ANN201
    from costmodel import Scenario, estimate

    return estimate(Scenario(method="lightcl", batch_size=4), layers=True)


@pytest.mark.parametrize("console_kw", [dict(width=80, force_terminal=True), dict(width=80),
                                        dict(width=200)],
                         ids=["terminal-80", "pipe-80", "wide"])
def test_layer_table_is_whole_at_any_width(console_kw, lightcl_layers):
    lines = _lines(lightcl_layers, console_kw)
    text = "\n".join(lines)
    assert "…" not in text  # nothing cut short
    assert max(len(line) for line in lines) <= console_kw["width"]
    for row in lightcl_layers.layers:  # every name whole, on its line
        assert any(line.startswith(row.name + " ") for line in lines), row.name
    assert ("Conv2d" in text) == (console_kw["width"] >= 120)  # the type column when room


def test_layer_table_at_80_columns_through_the_cli(costcl, monkeypatch):
    import cli.cost_commands

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(cli.cost_commands, "console", Console())
    r = costcl("estimate", "--method", "lightcl", "-b", "4", "--layers")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in r.stdout
    assert any(line.startswith("layer4.0.shortcut.0 ") for line in lines)


def test_lightcl_trains_exactly_its_last_stage_and_head(lightcl_layers):
    """The block before the trained stage keeps its output for layer4's weight gradient;
    that is not training, so it is frozen like the rest of the trunk."""
    rows = {r.name: r for r in lightcl_layers.layers}
    trained = [r.name for r in lightcl_layers.layers if not r.frozen]
    assert trained == ["<step>", "<model>", "layer4.0.conv1", "layer4.0.bn1", "layer4.0",
                       "layer4.0.conv2", "layer4.0.bn2", "layer4.0.shortcut.0",
                       "layer4.0.shortcut.1", "layer4.1.conv1", "layer4.1.bn1", "layer4.1",
                       "layer4.1.conv2", "layer4.1.bn2", "linear"]
    assert {n for n, r in rows.items() if r.trainable_params} == {
        n for n in trained if n.startswith("layer4.") and n not in ("layer4.0", "layer4.1")
    } | {"linear"}
    assert rows["layer3.1"].frozen and rows["layer3.1"].saved_bytes > 0


def test_grouped_convolution_excess_is_named_under_the_tables(tmp_path, monkeypatch, costcl):
    """A depthwise conv's weight gradient counts groups (8) x its forward in FlopCounterMode's
    convention: the per-layer note names the layer and the factor, the estimate note the share."""
    (tmp_path / "dwmodels.py").write_text(
        "import torch.nn as nn\n"
        "def make(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),\n"
        "                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import cli.cost_commands

    monkeypatch.setattr(cli.cost_commands, "console", Console(width=100))
    r = costcl("estimate", "--model", "dwmodels:make", "--input-size", "3,8,8",
               "--num-classes", "10", "-b", "2", "--layers")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "grouped-conv rule" in text and "1 (8x)" in text, r.stdout
    assert "groups times the layer's forward" in text
    d = costcl("estimate", "--model", "dwmodels:make", "--input-size", "3,8,8",
               "--num-classes", "10", "-b", "2", "--layers", "--format", "json")
    layers = {x["name"]: x for x in __import__("json").loads(d.stdout)["layers"]}
    dw = layers["1"]
    assert dw["grouped_weight_grad_excess_flops"] == 7 * dw["forward_flops"] > 0
    assert layers["0"]["grouped_weight_grad_excess_flops"] == 0


def test_no_internal_labels_in_what_people_read():
    from reports.paper_table import published

    assert "seed" not in published()["source"]
