"""Your own method (issue 13): plugins by path and by entry point, the worked example of
docs/methods.md, latent replay, and the one-line errors a plugin can cause."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from costmodel import Scenario, methods, plugins
from costmodel.estimation import estimate
from lightcl.data import synthetic
from lightcl.trainer import RESULTS, Trainer
from lightcl.validate import validate

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
SMALL = dict(model="resnet14-cifar", input_size=(3, 16, 16), num_classes=10)
"""PyCIL's ResNet-14 on 16x16 inputs: a ResNet (stem, three stages, head) that validates
in seconds."""


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    sys.modules.pop("er_ace", None)


def assert_validates(s: Scenario) -> None:
    v = validate(s, steps=1)
    fl = v.predicted.step.forward_flops + v.predicted.step.backward_flops
    assert fl == v.measured["forward_flops"] + v.measured["backward_flops"]
    assert abs(v.peak_error) <= 0.005, (v.compared_peak_bytes, v.measured["peak_bytes"])


# -- the worked example ----------------------------------------------------------------
@pytest.mark.parametrize("batch", [4, pytest.param(16, marks=pytest.mark.slow)])
def test_the_worked_example_validates(examples, batch):
    assert_validates(Scenario(method="er_ace:ERACE", batch_size=batch, **SMALL))


def test_the_worked_example_estimates_and_trains(examples, tiny_factory, tmp_path):
    m = methods.get("er_ace:ERACE")
    assert (m.name, m.impl, type(m).__module__) == ("er-ace", "costcl", "er_ace")
    e = estimate(Scenario(method="er_ace:ERACE", batch_size=8, **SMALL))
    plain = estimate(Scenario(method="er_ace:ERACE", batch_size=8, options={"mask_past": False},
                              **SMALL))
    # two forwards of 8 samples each: twice ER's model FLOPs per sample; masking adds no matmul
    assert e.step.samples == 16 and e.step.forward_flops == plain.step.forward_flops
    assert e.memory.breakdown_bytes["buffer"] == 500 * (3 * 16 * 16 * 4 + 8)
    s = Scenario(method="er_ace:ERACE", model="tinymodels:make", input_size=(3, 16, 16),
                 num_classes=6, tasks=3, epochs=1, batch_size=4, buffer_size=20,
                 replay_batch=4, holdout=0.0)
    Trainer(s, synthetic(s, per_class=8), out=tmp_path).run()
    tasks = json.loads((tmp_path / RESULTS).read_text())["tasks"]
    assert [len(t["cil"]) for t in tasks] == [1, 2, 3]
    assert all(0 <= t["cil_mean"] <= 1 for t in tasks)


# -- latent replay ---------------------------------------------------------------------
@pytest.mark.parametrize("cut,bits,batch", [
    ("stage_1", 32, 4), ("stage_2", 8, 16),
    pytest.param("stage_1", 32, 16, marks=pytest.mark.slow),
    pytest.param("stage_2", 8, 4, marks=pytest.mark.slow)])
def test_latent_replay_validates_at_two_cuts_and_two_batches(cut, bits, batch):
    assert_validates(Scenario(method="latent-replay", batch_size=batch,
                              options={"cut": cut, "latent_bits": bits}, **SMALL))


def test_latent_replay_stores_the_cut_layers_activations():
    def buffer(cut: str, bits: int) -> int:
        e = estimate(Scenario(method="latent-replay", buffer_size=100,
                              options={"cut": cut, "latent_bits": bits}))
        return e.memory.breakdown_bytes["buffer"]

    # resnet18-cifar on 32x32: layer2 gives 128x16x16, layer3 256x8x8, stem 64x32x32
    assert buffer("layer2", 32) == 100 * (128 * 16 * 16 * 4 + 8)
    assert buffer("layer3", 32) == 100 * (256 * 8 * 8 * 4 + 8)
    assert buffer("layer3", 8) == 100 * (256 * 8 * 8 + 4 + 8)   # uint8 + a float32 scale
    assert buffer("stem", 32) == 100 * (64 * 32 * 32 * 4 + 8)   # 8x an image: a deep cut pays
    params = estimate(Scenario(method="latent-replay", options={"cut": "layer3"})).to_json()["params"]
    assert params == {"total": 11173962, "trainable": 8398858}  # layer4 and the head train


def test_latent_replay_trains_with_8_bit_latents(tmp_path):
    s = Scenario(method="latent-replay", model="resnet14-cifar", input_size=(3, 16, 16),
                 num_classes=6, tasks=3, epochs=1, batch_size=4, buffer_size=20,
                 replay_batch=4, holdout=0.0, options={"cut": "stage_2", "latent_bits": 8})
    t = Trainer(s, synthetic(s, per_class=8), out=tmp_path)
    t.run()
    kept = t.memory.tensors
    assert kept["latent"].dtype == torch.uint8 and kept["latent"].shape == (20, 32, 8, 8)
    assert kept["scale"].shape == (20,) and set(kept) == {"latent", "scale", "y"}


def test_the_report_sweeps_the_cut(tmp_path):
    from reports import charts
    from reports.report import cut_sweep

    s = Scenario(method="latent-replay", buffer_size=100, batch_size=8, **SMALL)
    rows = charts.cut_sweep(cut_sweep(s), tmp_path / "cut.png")
    assert [r["cut"] for r in rows] == ["stem", "stage_1", "stage_2", "stage_3"]
    # resnet14-cifar on 16x16: 16x16x16 after the stem and stage_1, 32x8x8, 64x4x4
    latents = [16 * 16 * 16, 16 * 16 * 16, 32 * 8 * 8, 64 * 4 * 4]
    assert [r["buffer_mib"] for r in rows] == [round(100 * (4 * n + 8) / 2**20, 2)
                                              for n in latents]
    flops = [r["step_flops"] for r in rows]
    assert flops == sorted(flops, reverse=True) and len(set(flops)) == 4  # less trains
    assert (tmp_path / "cut.png").stat().st_size > 10_000


def test_one_budget_beside_er_and_lightcl(costcl):
    r = costcl("budget", "--budget-mib", "200", "--methods", "er,lightcl,latent-replay",
               "--option", "cut=stage_1", "--convention", "runtime", "--json")
    rows = {row["method"]: row for row in json.loads(r.stdout)}
    # resnet32-cifar: a latent after stage_1 is 16x32x32 float32 and a label
    assert rows["latent-replay"]["exemplar_bytes"] == 16 * 32 * 32 * 4 + 8
    assert rows["er"]["exemplar_bytes"] == 3 * 32 * 32 * 4 + 8
    assert all(row["fits"] for row in rows.values())
    r = costcl("budget", "--budget-mib", "200", "--methods", "er,lightcl",
               "--option", "cut=stage_1", "--convention", "runtime")
    assert r.returncode == 2 and "--option cut is taken by none of er, lightcl" in r.stderr


# -- plugins: by path, by entry point ----------------------------------------------------
PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "costcl-test-plugin"
        version = "0.1"
        [project.entry-points."costcl.methods"]
        er-ace-test = "costcl_test_plugin.methods:ERACE"
        sgd = "costcl_test_plugin.methods:ERACE"
        [tool.setuptools]
        packages = ["costcl_test_plugin"]
        """,
    "costcl_test_plugin/__init__.py": "",
}


def test_an_installed_plugin_is_listed_and_costs_what_its_path_does(costcl, tmp_path,
                                                                    monkeypatch):
    src = tmp_path / "src"
    for name, text in PACKAGE.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(textwrap.dedent(text))
    (src / "costcl_test_plugin" / "methods.py").write_text((EXAMPLES / "er_ace.py").read_text())
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-build-isolation", "--no-index", "--target", str(target),
                           str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    monkeypatch.syspath_prepend(str(target))
    plugins.forget()
    try:
        listed = costcl("methods")
        assert listed.returncode == 0 and "er-ace-test" in listed.stdout
        rows = {row[0]: row for row in methods.method_rows() if "plugin" in row[2]}
        assert rows["er-ace-test"][1] == "costcl (default)"
        assert rows["er-ace-test"][2].endswith(
            "plugin costcl_test_plugin.methods:ERACE of costcl-test-plugin 0.1")
        assert "not used, the catalog's sgd has this name" in rows["sgd"][2]
        args = ["--model", "resnet18-cifar", "--input-size", "3,16,16", "--batch-size", "8",
                "--json"]
        by_name = costcl("estimate", "--method", "er-ace-test", *args)
        by_path = costcl("estimate", "--method", "costcl_test_plugin.methods:ERACE", *args)
        assert by_name.returncode == by_path.returncode == 0
        a, b = json.loads(by_name.stdout), json.loads(by_path.stdout)
        assert a["scenario"].pop("method") == "er-ace-test"
        assert b["scenario"].pop("method") == "costcl_test_plugin.methods:ERACE"
        assert a == b and a["step"]["samples"] == 16
        assert methods.get("sgd").name == "sgd" and type(methods.get("sgd")).__module__ != \
            "costcl_test_plugin.methods"  # a catalog name keeps meaning the catalog's
    finally:
        sys.modules.pop("costcl_test_plugin.methods", None)
        sys.modules.pop("costcl_test_plugin", None)
        plugins.forget()
        methods._plugin.cache_clear()


# -- one-line errors ----------------------------------------------------------------------
BAD = """
import torch, torch.nn.functional as F
from costmodel.methods.base import Method

class Item(Method):
    def step(self, ctx, x, y):
        out = ctx.model(x)
        if out.sum().item() > 0:
            pass
        loss = F.cross_entropy(out, y)
        ctx.backward(loss)
        return loss.detach()

class Square(Method):
    def step(self, ctx, x, y):
        f = ctx.model(x)
        loss = (f @ f.T).sum()
        ctx.backward(loss)
        return loss.detach()

class NoStep(Method):
    pass

def make():
    return None
"""


@pytest.mark.parametrize("method,expected", [
    ("nosuchpkg_costcl:M", "method plugin nosuchpkg_costcl:M: no module named 'nosuchpkg_costcl'"),
    ("badplugin:Missing", "module badplugin has no 'Missing'; check the class name"),
    ("badplugin:make", "is a function, not a subclass of costmodel.methods.base.Method"),
    ("badplugin:NoStep", "has no step(ctx, x, y)"),
    ("badplugin:Item", "its step fails on meta tensors (badplugin.py:8): RuntimeError"),
    ("badplugin:Square", "holds 64 bytes at batch 4, not the 56 an affine size would"),
    ("brokenplugin:M", "importing brokenplugin failed: ZeroDivisionError"),
    ("not a path:", "is not a class path; write it as package.module:ClassName"),
])
def test_a_bad_plugin_is_one_line(costcl, tmp_path, monkeypatch, tiny_factory, method, expected):
    (tmp_path / "badplugin.py").write_text(BAD)
    (tmp_path / "brokenplugin.py").write_text("x = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    try:
        r = costcl("estimate", "--method", method, "--model", "tinymodels:make",
                   "--input-size", "3,8,8", "--no-cache")
    finally:
        for name in ("badplugin", "brokenplugin"):
            sys.modules.pop(name, None)
        methods._plugin.cache_clear()
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("costcl: error: ") and expected in lines[0], \
        r.stderr
    assert not list(tmp_path.glob("*.json"))
