"""Every `costcl` command shown in the README runs as written.

The commands are read from the README's fenced blocks, so a new example is
tested the day it is written.  They run through the real entry point, in README
order, in one folder that holds what the README says exists beside them
(scenario.toml, sweep.toml, the `mypkg.nets:make_net` factory, docs/examples/er_ace.py, a
`results/` folder).  A command that needs
what a test machine lacks (a dataset folder, a CUDA device) is skipped with its
reason; the long ones (the LightCL table, a report, a crosscheck at 224x224)
run with ``-m slow``.  A command neither run nor listed here fails the test.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

NEEDS = {
    "~/data": "needs a dataset folder (the trainer tests run it on synthetic data)",
    "--device cuda": "needs a CUDA device (validation/run_cuda.py runs it)",
    "--address": "needs a Ray cluster (tests/test_sweep.py runs a local one)",
}
SLOW = ("costcl paper lightcl", "costcl report", "costcl crosscheck", "costcl validate",
        "costcl train", "costcl budget --flops-budget", "costcl fit --device jetson-nano",
        "costcl budget --budget-mib 64 --methods der-expand", "costcl sweep",
        "costcl budget --budget-mib 200 --methods er,lightcl,latent-replay")
"""Commands of more than ~20 s on 2 cores: run with ``-m slow``."""


def readme_commands() -> list[str]:
    """The `costcl ...` lines inside the README's fenced blocks, comments removed."""
    out, fenced = [], False
    for line in README.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        command = line.split("&&")[-1].strip()
        if fenced and command.startswith("costcl "):
            out.append(re.sub(r"\s+#.*$", "", command))
    return out


def _toml_block(name: str) -> str:
    """The README's ```toml block whose first line is ``# name``."""
    for block in re.findall(r"```toml\n(.*?)```", README.read_text(), re.S):
        if block.startswith(f"# {name}"):
            return block
    raise AssertionError(f"the README shows no {name}")


def _param(command: str):  # noqa: ANN202
    need = next((why for key, why in NEEDS.items() if key in command), None)
    if need:
        return pytest.param(command, marks=pytest.mark.skip(reason=need), id=command)
    if command.startswith(SLOW):
        return pytest.param(command, marks=pytest.mark.slow, id=command)
    return pytest.param(command, id=command)


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert len(commands) >= 30
    assert "costcl estimate --method lightcl --sparsity 0.9" in commands  # the quick start


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One folder for all the examples, run in README order as a reader types them (the
    report reads the validation JSON an earlier example wrote), holding what the README
    says is beside them."""
    d = tmp_path_factory.mktemp("readme")
    (d / "scenario.toml").write_text(_toml_block("scenario.toml"))
    (d / "sweep.toml").write_text(_toml_block("sweep.toml"))
    examples = README.parent / "docs" / "examples"  # the README runs it from there
    (d / "er_ace.py").write_text((examples / "er_ace.py").read_text())
    (d / "results").mkdir()
    pkg = d / "pkgs" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def make_net(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                         nn.Flatten(), nn.Linear(8 * 14 * 14, num_classes))\n")
    yield d
    for name in ("mypkg.nets", "mypkg", "er_ace"):
        sys.modules.pop(name, None)


@pytest.fixture
def beside(folder, monkeypatch):
    monkeypatch.syspath_prepend(str(folder / "pkgs"))
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("command", [_param(c) for c in readme_commands()])
def test_readme_command_runs_as_written(costcl, beside, command):
    argv = shlex.split(command)[1:]
    redirect = None
    if ">" in argv:
        at = argv.index(">")
        argv, redirect = argv[:at], argv[at + 1]
    r = costcl(*argv)
    assert r.returncode == 0, f"{command}\n{r.stderr}"
    assert r.stdout.strip() or redirect is None and "--out" in argv, command
    if redirect:
        (beside / redirect).write_text(r.stdout)
