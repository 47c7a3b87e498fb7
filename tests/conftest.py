"""Shared helpers: run a method's real step and measure it, the way `validate` does."""
from __future__ import annotations

import contextlib
import dataclasses
import sys

import pytest
import torch

from costmodel import methods
from costmodel.models.registry import build_model
from lightcl.context import TrainContext
from lightcl.measure import fake_cpu, memtracker_peak
from lightcl.optim import build_optimizer


def measured_flops(e) -> tuple[int, int]:
    """FlopCounterMode's forward and backward FLOPs of one real step of e's scenario (meta tensors)."""
    from lightcl.validate import measure_flops

    counts = measure_flops(e.scenario)
    return counts["forward_flops"], counts["backward_flops"]


def measured_memory(e):
    """MemTracker's peak of two real steps of e's scenario (fake CPU tensors)."""
    s = e.scenario
    with fake_cpu():
        model = build_model(s.model, s.classes, s.input_shape[0], "cpu", s.torch_dtype)
        model.train()
        for name, p in model.named_parameters():
            p.requires_grad_(name in e.trainable)
        x = torch.randn((s.batch_size, *s.input_shape), dtype=s.torch_dtype)
        y = torch.randint(0, s.classes, (s.batch_size,))
        opt = build_optimizer(s.optimizer, model.parameters())
        method = methods.get(s.method, s.impl)
        ctx = TrainContext(model)
        return memtracker_peak(model, opt, lambda: method.step(ctx, x, y), externals=(x, y))


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch's CPU ops on ``n`` threads for a while (a pytest-xdist worker runs one):
    some of oneDNN's buffers are per thread, and an estimate's kernel scratch is for the
    threads it is made with."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


if "PYTEST_XDIST_WORKER" in __import__("os").environ:  # two workers share the 2 cores
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def costcl_cache_dir(tmp_path_factory):
    """The suite's trace and answer cache (and device profiles): session folders, never
    ~/.cache or ~/.config.

    Subprocesses inherit it, so a step one test traced is read back by the next
    process instead of traced again (tests/test_cache.py uses its own folders).
    """
    import os

    d = tmp_path_factory.mktemp("costcl-cache")
    saved = {k: os.environ.get(k) for k in ("COSTCL_CACHE_DIR", "COSTCL_NO_CACHE",
                                            "COSTCL_PROFILE_DIR")}
    os.environ["COSTCL_CACHE_DIR"] = str(d)
    os.environ.pop("COSTCL_NO_CACHE", None)
    # `costcl calibrate` (a README example) writes its profile here, not to ~/.config, and
    # no estimate reads this machine's own profile: another worker's calibration would
    # change the answer cache's key in the middle of a test
    os.environ["COSTCL_PROFILE_DIR"] = str(tmp_path_factory.mktemp("costcl-profiles"))
    yield d
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def importable(tmp_path_factory, module: str, source: str):
    """A user's module (model factories, a method plugin) written to a temporary folder
    on the import path, as ``costcl --model module:callable`` finds it from the cwd."""
    d = tmp_path_factory.mktemp(module)
    (d / f"{module}.py").write_text(source)
    sys.path.insert(0, str(d))
    try:
        yield module
    finally:
        sys.path.remove(str(d))
        sys.modules.pop(module, None)


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory):
    """A user model factory importable as tinymodels:make (for registry tests)."""
    with importable(tmp_path_factory, "tinymodels", (
        "import torch.nn as nn\n"
        "def make(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
        "def broken():\n"
        "    raise ValueError('no weights here')\n")) as module:
        yield module


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def costcl(capsys):
    """Run the costcl entry point in this process (as the console script does)."""
    from cli.main import run

    def call(*args: str) -> Result:
        try:
            with torch_threads(torch.get_num_threads()):  # --threads sets the process's
                run(list(args))
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return Result(code, out.out, out.err)
    return call
