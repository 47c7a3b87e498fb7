"""The command line: documented JSON shape, and one-line errors with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

COSTCL = [sys.executable, "-m", "cli.main"]


def costcl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*COSTCL, *args], capture_output=True, text=True, cwd=cwd)


def test_estimate_json_has_the_documented_shape():
    r = costcl("estimate", "--json", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["convention"] == "runtime"
    assert d["scenario"]["batch_size"] == 8 and d["scenario"]["model"] == "resnet18-cifar"
    assert set(d["step"]) >= {"forward_flops", "backward_flops", "elementwise_flops"}
    assert set(d["run"]) >= {"steps", "total_flops"}
    assert set(d["memory"]["breakdown_bytes"]) >= {"parameters", "gradients", "optimizer_state",
                                                   "activations", "buffer", "method_state",
                                                   "temporaries"}
    assert d["memory"]["peak_bytes"] == sum(d["memory"]["breakdown_bytes"].values())
    assert d["step"]["forward_flops"] == 8 * 1_110_845_440


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('batch_size = 4\noptimizer = "adam"\n')
    d = json.loads(costcl("estimate", "--json", "--config", str(cfg), "--batch-size", "2").stdout)
    assert (d["scenario"]["batch_size"], d["scenario"]["optimizer"]) == (2, "adam")


BAD = [
    (["estimate", "--model", "resnet19"], "unknown model 'resnet19'; did you mean resnet18"),
    (["estimate", "--dataset", "cifar1000"], "unknown dataset 'cifar1000'; did you mean"),
    (["estimate", "--optimizer", "adamx"], "unknown optimizer 'adamx'; did you mean adam"),
    (["estimate", "--input-size", "3x32"], "malformed --input-size '3x32'; write C,H,W"),
    (["estimate", "--batch-size", "0"], "batch-size must be a whole number >= 1"),
    (["estimate", "--train-from", "layer9"], "names no module of CifarResNet18; valid names include: conv1"),
    (["estimate", "--bogus"], "No such option: --bogus"),
    (["estimate", "--option", "beta"], "malformed --option 'beta'; write KEY=VALUE"),
    (["estimate", "--convention", "papr"], "did you mean paper"),
    (["estimate", "--model", "tinymodels:broken"], "model factory 'tinymodels:broken' raised ValueError"),
    (["estimate", "--model", "nosuchpkg.mod:make"], "cannot load model factory"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(args, message, tiny_factory, tmp_path):
    import os
    env_path = os.pathsep.join(sys.path)
    r = subprocess.run([*COSTCL, *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": env_path})
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("content,message", [
    ("batch_size = [", "is not valid TOML"),
    ("batch_sise = 4", "did you mean batch_size"),
])
def test_bad_config_file(tmp_path, content, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    r = costcl("estimate", "--config", str(cfg))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_listings():
    for cmd, word in (("models", "resnet18-cifar"), ("datasets", "tinyimagenet"), ("methods", "sgd")):
        r = costcl(cmd)
        assert r.returncode == 0 and word in r.stdout
