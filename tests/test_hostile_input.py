"""Hostile input: every bad flag, file, factory or budget is one line on stderr, exit 2.

Each case runs the real entry point in this process, from an empty working
folder, and checks the three promises of the CLI: status 2, exactly one line
naming the problem (no traceback), and no file left behind.  The cases fail
before any trace where they can, so the module runs in seconds.
"""
from __future__ import annotations

import sys

import pytest

TOML = {
    "sparsity_text": 'sparsity = "abc"\n',
    "options_text": 'options = "x"\n',
    "method_int": "method = 3\n",
    "tasks_bool": "tasks = true\n",
    "batch_zero": "batch_size = 0\n",
    "batch_float": "batch_size = 1.5\n",
    "holdout_big": "holdout = 1.5\n",
    "input_text": 'input_size = "3,x,32"\n',
    "input_two": "input_size = [3, 32]\n",
    "unknown_key": "batchsize = 32\n",
    "bad_syntax": "batch_size = = 3\n",
    "dtype_fp8": 'dtype = "fp8"\n',
    "device_tpu": 'device = "tpu"\n',
    "lean_maybe": 'method = "lightcl@costcl"\n[options]\nlean = "maybe"\n',
    "ratio_text": 'method = "lightcl"\n[options]\nratio = "abc"\n',
    "sparsity_nan": 'method = "lightcl"\nsparsity = nan\n',
    "epochs_negative": "epochs = -1\n",
    "scenario_not_table": "scenario = 3\n",
    "options_unknown": 'method = "sgd"\n[options]\nlean = true\n',
}

FACTORIES = {
    "badsyn.py": "def make(:\n",
    "badimp.py": "raise RuntimeError('boom at import')\n",
    "okmod.py": ("import torch.nn as nn\n"
                 "def make(num_classes=10):\n"
                 "    return nn.Sequential(nn.Flatten(), nn.Linear(10, num_classes))\n"
                 "def notmodel(num_classes=10):\n"
                 "    return 3\n"
                 "x = 5\n"),
}

E = "estimate"
CASES: list[tuple[str, list[str], str]] = [
    # (id, argv, a fragment the one line must contain)
    *[(f"toml-{name}", [E, "--config", f"{{cfg}}/{name}.toml"], "") for name in TOML],
    ("toml-missing", [E, "--config", "{cfg}/nope.toml"], "does not exist"),
    ("toml-directory", [E, "--config", "{cfg}"], "config file"),
    ("toml-binary", [E, "--config", "{cfg}/binary.toml"], "config file"),
    ("batch-zero", [E, "--batch-size", "0"], "batch-size"),
    ("batch-huge", [E, "--batch-size", "1000000000"], "batch-size"),
    ("batch-over-task", [E, "--batch-size", "20000"], "larger than a task"),
    ("tasks-uneven", [E, "--tasks", "3"], "do not split"),
    ("tasks-over-classes", [E, "--tasks", "11"], "cannot split"),
    ("sparsity-one", [E, "--method", "lightcl", "--sparsity", "1.0"], "sparsity"),
    ("sparsity-nan", [E, "--method", "lightcl", "--sparsity", "nan"], "finite"),
    ("sparsity-not-sparse", [E, "--method", "sgd", "--sparsity", "0.9"], "no sparse variant"),
    ("holdout-negative", [E, "--holdout", "-0.1"], "holdout"),
    ("input-two", [E, "--input-size", "3,32"], "--input-size"),
    ("input-words", [E, "--input-size", "a,b,c"], "--input-size"),
    ("input-zero", [E, "--input-size", "0,32,32"], "--input-size"),
    ("option-bool-maybe", [E, "--method", "lightcl@costcl", "--option", "lean=maybe"], "true or false"),
    ("option-ratio-text", [E, "--method", "lightcl", "--option", "ratio=abc"], "ratio"),
    ("option-ratio-range", [E, "--method", "lightcl", "--option", "ratio=2"], "ratio"),
    ("option-lr-zero", [E, "--option", "lr=0"], "lr"),
    ("option-lr-nan", [E, "--option", "lr=nan"], "finite"),
    ("option-no-equals", [E, "--option", "nokey"], "KEY=VALUE"),
    ("option-no-key", [E, "--option", "=5"], "KEY=VALUE"),
    ("option-unknown", [E, "--option", "unknown=1"], "takes no option"),
    ("option-choice", [E, "--method", "joint", "--option", "retrain=sometimes"], "one of"),
    ("method-unknown", [E, "--method", "nosuch"], "unknown method"),
    ("impl-unknown-at", [E, "--method", "lightcl@nosuch"], "no implementation"),
    ("impl-two", [E, "--method", "lightcl@costcl", "--impl", "lightcl"], "two"),
    ("impl-unknown", [E, "--impl", "nosuch"], "no implementation"),
    ("dtype", [E, "--dtype", "fp8"], "dtype"),
    ("device", [E, "--device", "tpu"], "device"),
    ("setting", [E, "--setting", "domain-il"], "setting"),
    ("optimizer", [E, "--optimizer", "sgdd"], "optimizer"),
    ("dataset", [E, "--dataset", "cifar11"], "cifar10"),
    ("model-unknown", [E, "--model", "resnet19"], "resnet18"),
    ("model-torchvision-unknown", [E, "--model", "torchvision:resnet19"], "torchvision"),
    ("factory-no-module", [E, "--model", "nomod_costcl_test:make"], "nomod_costcl_test"),
    ("factory-syntax", [E, "--model", "badsyn:make"], "SyntaxError"),
    ("factory-raises-on-import", [E, "--model", "badimp:make"], "boom at import"),
    ("factory-no-attribute", [E, "--model", "okmod:nothere"], "nothere"),
    ("factory-not-callable", [E, "--model", "okmod:x"], "okmod:x"),
    ("factory-not-module", [E, "--model", "okmod:notmodel"], "nn.Module"),
    ("factory-forward-fails", [E, "--model", "okmod:make"], "layer 1 (Linear)"),
    ("train-from-unknown", [E, "--train-from", "layer9"], "layer9"),
    ("json-and-csv", [E, "--json", "--format", "csv"], "two formats"),
    ("format-unknown", [E, "--format", "xml"], "xml"),
    ("convention", [E, "--convention", "nosuch"], "convention"),
    ("flops-convention", [E, "--flops-convention", "nosuch"], "nosuch"),
    ("fit-memory-nan", ["fit", "--memory-mib", "nan"], "finite"),
    ("fit-memory-inf", ["fit", "--memory-mib", "inf"], "finite"),
    ("fit-memory-zero", ["fit", "--memory-mib", "0"], "--memory-mib"),
    ("fit-memory-over-device", ["fit", "--device", "jetson-nano", "--memory-mib", "5000"], "4,096"),
    ("fit-device-unknown", ["fit", "--device", "jetson-nanoo"], "jetson-nano"),
    ("fit-nothing", ["fit"], "--device"),
    ("budget-nan", ["budget", "--budget-mib", "nan"], "finite"),
    ("budget-negative", ["budget", "--budget-mib", "-1"], "--budget-mib"),
    ("flops-budget-nan", ["budget", "--flops-budget", "nan"], "finite"),
    ("flops-budget-inf", ["budget", "--flops-budget", "inf"], "finite"),
    ("budget-nothing", ["budget"], "exactly one"),
    ("budget-two", ["budget", "--protocol", "fair", "--budget-mib", "5"], "exactly one"),
    ("protocol-unknown", ["budget", "--protocol", "fiar"], "fair"),
    ("convert-mib-inf", ["convert", "--mib", "inf"], "finite"),
    ("convert-exemplars-zero", ["convert", "--exemplars", "0"], "--exemplars"),
    ("convert-both", ["convert", "--exemplars", "5", "--mib", "5"], "not both"),
    ("compare-empty", ["compare", "--methods", " , "], "--methods"),
    ("compare-unknown", ["compare", "--methods", "sgd,nosuch"], "nosuch"),
    ("paper-unknown", ["paper", "lightcl2"], "lightcl"),
    ("unknown-command", ["estimat"], "estimat"),
    ("unknown-flag", [E, "--batchsize", "3"], "--batchsize"),
    ("int-flag-text", [E, "--batch-size", "many"], "--batch-size"),
]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    d = tmp_path_factory.mktemp("configs")
    for name, text in TOML.items():
        (d / f"{name}.toml").write_text(text)
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00garbage\x80")
    for name, text in FACTORIES.items():
        (d / name).write_text(text)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    for mod in ("badsyn", "badimp", "okmod"):
        sys.modules.pop(mod, None)


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("argv,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(costcl, cfg, tmp_path, monkeypatch,
                                                         argv, fragment):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = costcl(*[a.replace("{cfg}", str(cfg)) for a in argv])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("costcl: error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert fragment in lines[0], lines[0]
    assert list(work.iterdir()) == []
    assert r.stdout == ""


def test_booleans_are_true_or_false_in_any_case():
    """`lean=False` was the string "False", which counted as on (117.60 MiB, as lean=true)."""
    from costmodel import Scenario, estimate

    def peak(value):
        s = Scenario(method="lightcl", impl="costcl", batch_size=8, options={"lean": value})
        return estimate(s).memory.peak_bytes

    assert peak("False") == peak(False) == peak("false")
    assert peak("TRUE") == peak(True) != peak(False)


def test_a_shared_sparsity_applies_to_the_sparse_methods_only():
    from costmodel import Scenario, methods

    s = Scenario(sparsity=0.9, batch_size=8)
    assert methods.resolve(methods.named(s, "lightcl")).sparsity == 0.9
    assert methods.resolve(methods.named(s, "sgd")).sparsity == 0.0


def test_the_runtime_budget_counts_what_lightcl_forwards(costcl):
    """LightCL forwards every stored sample in every step: at runtime an exemplar costs its
    activations too: over ten times the 12,296 bytes ER keeps per (float) exemplar."""
    import json

    # costcl's LightCL: the repository's stored samples are a slice of one batch, so its
    # runtime budget has no exemplars to share out
    r = costcl("budget", "--budget-mib", "200", "--methods", "lightcl@costcl", "--convention",
               "runtime", "--model", "resnet18-cifar", "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["method"]: row for row in json.loads(r.stdout)}
    assert rows["lightcl@costcl"]["fits"] and rows["lightcl@costcl"]["exemplars"] > 0
    assert rows["lightcl@costcl"]["exemplar_bytes"] > 10 * 12_296


def test_an_input_too_small_for_the_model_is_said():
    """A CIFAR ResNet runs on 3x1x1 (padding keeps it legal); the estimate says what it costs."""
    from costmodel import Scenario, estimate

    small = [n for n in estimate(Scenario(input_size=(3, 1, 1), batch_size=8)).notes
             if n.startswith("input 3x1x1")]
    assert len(small) == 1 and "17 convolution(s)" in small[0] and "conv1, 1x1 under a 3x3" in small[0]
    assert not any(n.startswith("input") for n in estimate(Scenario(batch_size=8)).notes)
