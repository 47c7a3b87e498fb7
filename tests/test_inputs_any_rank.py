"""Inputs of any rank and dtype: 1 to 4 sizes, and int64 token ids with a vocabulary.

Five small user factories, one per kind of input people bring: a 1-D conv net for
keyword spotting (1 x 16000 audio), an MLP on flat 784-vectors, a Transformer
encoder classifier on 32 token ids, a Conv3d net on a 1 x 8 x 16 x 16 clip, and an
LSTM over 50 steps of 16 features.
Each is costed through the real entry point, its step FLOPs checked against
FlopCounterMode's on the same step, and its predicted peak against the plain run.
"""
from __future__ import annotations

import json

import pytest
import torch

from costmodel import engine, methods
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.methods.base import exemplars
from costmodel.scenario import Scenario, load_toml, parse_input_size
from lightcl import data
from lightcl.runner import build_runner
from lightcl.validate import measure_flops, validate
from tests.conftest import importable

NETS = '''
from torch import nn


def kws(num_classes=10):
    return nn.Sequential(nn.Conv1d(1, 8, 80, stride=16), nn.ReLU(), nn.Conv1d(8, 16, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, num_classes))


class TinyLSTM(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):  # (B, 800) -> 50 steps of 16 features
        out, _ = self.lstm(x.view(x.shape[0], -1, 16))
        return self.fc(out[:, -1])


def lstm(num_classes=10):
    return TinyLSTM(num_classes)


def mlp(num_classes=10):
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, num_classes))


class TinyText(nn.Module):
    def __init__(self, num_classes=10, vocab=1000, dim=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def text(num_classes=10):
    return TinyText(num_classes)


def clip(num_classes=10):
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))
'''

MODULE = "anyrank_nets"
TEXT = ["--input-size", "32", "--input-dtype", "int64", "--vocab", "1000"]
CASES = {  # name: (flags, peak checked within 0.5%)
    "kws": (["--input-size", "1,16000"], True),
    "mlp": (["--input-size", "784"], True),
    "clip": (["--input-size", "1,8,16,16"], True),
    # The encoder's attention runs on the CPU's fused flash kernel, traced as such.
    "text": (TEXT, True),
    # One oneDNN kernel per layer on the CPU, traced as such (tests/test_onednn_lstm.py).
    "lstm": (["--input-size", "800"], True),
}
COMMON = ["--num-classes", "10", "--batch-size", "8"]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    with importable(tmp_path_factory, MODULE, NETS) as module:
        yield module


def scenario(name: str, **changes) -> Scenario:
    flags = dict(model=f"{MODULE}:{name}", num_classes=10, batch_size=8,
                 input_size=parse_input_size(CASES[name][0][1]))
    if name == "text":
        flags.update(input_dtype="int64", vocab=1000)
    return Scenario(**{**flags, **changes})


@pytest.mark.parametrize("name", list(CASES))
def test_estimate_runs_and_flops_equal_flop_counter(costcl, nets, name):
    r = costcl("estimate", "--model", f"{nets}:{name}", *COMMON, *CASES[name][0], "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    s = scenario(name)
    assert out["scenario"]["input_size"] == list(s.input_shape)
    assert out["scenario"]["input_dtype"] == s.input_dtype
    measured = measure_flops(estimate(s).scenario)
    assert (out["step"]["forward_flops"], out["step"]["backward_flops"]) == (
        measured["forward_flops"], measured["backward_flops"])


@pytest.mark.parametrize("name", [n for n, (_, peak) in CASES.items() if peak])
def test_validate_predicts_the_plain_run_peak(nets, name):
    v = validate(scenario(name), steps=1)
    assert abs(v.peak_error) <= 0.005, (name, v.compared_peak_bytes, v.measured["peak_bytes"])
    assert v.flops_error == 0


def test_token_ids_are_int64_in_range_and_stored_as_ids(nets):
    s = methods.resolve(scenario("text", method="er", impl="costcl", buffer_size=20, replay_batch=4))
    stored = {st.name: st for st in exemplars(s, 20, True, "")}
    assert stored["buffer.images"].dtype == torch.int64
    r = build_runner(s)
    assert r.x.dtype == torch.int64 and 0 <= int(r.x.min()) and int(r.x.max()) < 1000
    buffered = r.context.buffer["x"]
    assert buffered.dtype == torch.int64 and int(buffered.max()) < 1000
    r.step()  # an embedding indexing out of range would raise here
    assert validate(s, steps=1).flops_error == 0


@pytest.mark.parametrize("argv,fragment", [
    (["--input-size", "1,2,3,4,5"], "malformed --input-size '1,2,3,4,5'; write 1 to 4"),
    (["--input-size", "32", "--input-dtype", "int64"], "--input-dtype int64 needs --vocab"),
    (["--input-size", "784", "--vocab", "1000"], "--vocab 1000 applies to token ids only"),
    (["--input-dtype", "int32", "--vocab", "10"], "unknown input dtype 'int32'"),
    (["--input-dtype", "int64", "--vocab", "0"], "vocab must be a whole number >= 1"),
])
def test_bad_input_is_one_line_exit_2(costcl, argv, fragment):
    r = costcl("estimate", *argv)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.stderr


def test_sizes_json_and_cache_key_carry_the_new_fields(tmp_path):
    assert parse_input_size("784") == (784,)
    assert parse_input_size("1x16000") == (1, 16000)
    assert parse_input_size("1,8,16,16") == (1, 8, 16, 16)
    for bad in ("", "1,2,3,4,5", "0", "a"):
        with pytest.raises(CostclError, match="malformed --input-size"):
            parse_input_size(bad)
    f = tmp_path / "s.toml"
    f.write_text('input_size = 32\ninput_dtype = "int64"\nvocab = 500\n')
    s = Scenario(**load_toml(f))
    assert (s.input_shape, s.in_channels, s.input_torch_dtype) == ((32,), 1, torch.int64)
    assert s.to_json()["vocab"] == 500
    assert Scenario(input_size=(1, 16000)).in_channels == 1
    assert Scenario(input_size=(2, 8, 16, 16)).in_channels == 2
    sgd = methods.get("sgd")
    keys = {engine._structure_key(x, sgd, "main") for x in
            (s, s.replace(vocab=501), s.replace(input_dtype="float", vocab=None))}
    assert len(keys) == 3


def test_synthetic_training_data_of_any_rank():
    ids = data.synthetic(methods.resolve(Scenario(input_size=(32,), input_dtype="int64",
                                                  vocab=50, num_classes=10)), per_class=2)
    batch, _ = next(ids.batches(ids.train, torch.arange(4), 4, "cpu", torch.float32))
    assert batch.dtype == torch.int64 and batch.shape == (4, 32) and int(batch.max()) < 50
    for size in ((784,), (1, 16000), (1, 4, 8, 8)):
        d = data.synthetic(methods.resolve(Scenario(input_size=size, num_classes=10)), per_class=2)
        batch, _ = next(d.batches(d.train, torch.arange(4), 4, "cpu", torch.float32))
        assert batch.dtype == torch.float32 and batch.shape == (4, *size)
    with pytest.raises(CostclError, match="folders hold images"):
        data.load(Scenario(input_size=(784,), num_classes=10), "/nonexistent")


def test_train_runs_on_synthetic_token_ids(costcl, nets, tmp_path):
    r = costcl("train", "--method", "er", "--impl", "costcl", "--model", f"{nets}:text", *TEXT,
               "--num-classes", "4", "--tasks", "2", "--epochs", "1", "--batch-size", "4",
               "--data-root", "synthetic:4", "--out", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["tasks"]) == 2


@pytest.mark.parametrize("argv,fragment", [
    (["estimate", "--convention", "paper"], "a 1-number --input-size has no image: use "
                                            "--convention runtime"),
    (["budget", "--protocol", "fair"], "has no stages to split"),
])
def test_image_only_accounting_refuses_other_inputs_in_one_line(costcl, nets, argv, fragment):
    r = costcl(*argv, "--model", f"{nets}:mlp", "--input-size", "784", "--num-classes", "10")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr


def test_a_memory_budget_counts_one_byte_per_stored_value(costcl, nets):
    r = costcl("budget", "--budget-mib", "64", "--methods", "er", "--model", f"{nets}:mlp",
               "--input-size", "784", "--num-classes", "10", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["exemplar_bytes"] == 784


def test_attention_math_keeps_the_attention_matrix(nets):
    """--attention math traces bmm, softmax, bmm (what meta would do) and keeps each
    head's L x L weights: more than the fused kernel's output and log-sum-exp rows."""
    fused = estimate(scenario("text"))
    math_path = estimate(scenario("text", attention="math"))
    # 2 heads x 32 x 32 fp32 softmax output per sample, at least, kept for backward
    assert math_path.memory.peak_bytes - fused.memory.peak_bytes >= 8 * 2 * 32 * 32 * 4
    assert fused.step.forward_flops == math_path.step.forward_flops  # QK^T and PV either way


def test_a_cuda_estimate_names_the_library_workspaces_it_leaves_out():
    cuda = estimate(Scenario(device="cuda", batch_size=8)).notes
    assert any(n.startswith("cuda: the prediction includes no cuBLAS workspace") for n in cuda)
    assert not any("cuBLAS" in n for n in estimate(Scenario(batch_size=8)).notes)
