"""Outputs made from a record or a rule are the ones torch's meta kernels make."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from costmodel.trace import meta_outputs

aten = torch.ops.aten


def _meta(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.dtype, t.storage_offset(), t.untyped_storage().nbytes())


def _outputs(out: object) -> list[tuple]:
    return [_meta(t) for t in meta_outputs.flat(out, []) if isinstance(t, torch.Tensor)]


def _input(shape: tuple[int, ...], dtype: torch.dtype, fmt: torch.memory_format) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta").contiguous(memory_format=fmt)


LAYOUTS = [((4, 6), torch.contiguous_format), ((4, 6, 5), torch.contiguous_format),
           ((4, 6, 5, 3), torch.contiguous_format), ((4, 6, 5, 3), torch.channels_last),
           ((2, 6, 3, 4, 5), torch.contiguous_format), ((2, 6, 3, 4, 5), torch.channels_last_3d)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,fmt", LAYOUTS)
def test_relu_rule_is_the_reference(shape, fmt, dtype) -> None:
    x = _input(shape, dtype, fmt)
    assert _outputs(meta_outputs._relu(x)) == _outputs(aten.relu.default(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,fmt", LAYOUTS)
@pytest.mark.parametrize("training,affine,stats", [(True, True, True), (True, False, False),
                                                   (False, True, True), (False, False, True)])
def test_batch_norm_rule_is_the_reference(shape, fmt, dtype, training, affine, stats) -> None:
    c = shape[1]
    x = _input(shape, dtype, fmt)
    w, b = (torch.empty(c, device="meta"), torch.empty(c, device="meta")) if affine else (None, None)
    rm, rv = (torch.empty(c, device="meta"), torch.empty(c, device="meta")) if stats else (None, None)
    args = (x, w, b, rm, rv, training, 0.1, 1e-5)
    want = _outputs(aten.native_batch_norm.default(*args))
    assert _outputs(meta_outputs._native_batch_norm(*args)) == want
    assert want[1][0] == (c,)  # the statistics are per channel, in training and out of it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,m,p,bias", [(4, 5, 3, (3,)), (4, 5, 3, (4, 3)), (1, 5, 1, (1,)),
                                        (4, 5, 1, (1, 1)), (1, 7, 6, ())])
@pytest.mark.parametrize("transposed", [False, True])
def test_addmm_rule_is_the_reference(dtype, n, m, p, bias, transposed) -> None:
    b = torch.empty(bias, dtype=dtype, device="meta")
    a = torch.empty(n, m, dtype=dtype, device="meta")
    w = torch.empty(p, m, dtype=dtype, device="meta").t() if transposed else \
        torch.empty(m, p, dtype=dtype, device="meta")
    assert _outputs(meta_outputs._addmm(b, a, w)) == _outputs(aten.addmm.default(b, a, w))


@pytest.mark.parametrize("dtype,half_to_float", [(torch.float32, False), (torch.float16, False),
                                                 (torch.float16, True), (torch.bfloat16, False)])
@pytest.mark.parametrize("shape,dim", [((4, 10), 1), ((4, 10), -1), ((1, 3), 0), ((2, 3, 5), 1),
                                       ((7,), 0)])
@pytest.mark.parametrize("transposed", [False, True])
def test_log_softmax_rule_is_the_reference(dtype, half_to_float, shape, dim, transposed) -> None:
    x = torch.empty(shape, dtype=dtype, device="meta")
    if transposed and x.dim() >= 2:
        x = torch.empty(tuple(reversed(shape)), dtype=dtype, device="meta").t() if x.dim() == 2 \
            else x.transpose(0, 2).contiguous().transpose(0, 2)
    assert _outputs(meta_outputs._log_softmax(x, dim, half_to_float)) == \
        _outputs(aten._log_softmax.default(x, dim, half_to_float))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n", [1, 6])
def test_nll_loss_rule_is_the_reference(dtype, reduction, weighted, n) -> None:
    x = torch.empty(n, 10, dtype=dtype, device="meta")
    y = torch.empty(n, dtype=torch.int64, device="meta")
    w = torch.empty(10, dtype=dtype, device="meta") if weighted else None
    assert _outputs(meta_outputs._nll_loss_forward(x, y, w, reduction, -100)) == \
        _outputs(aten.nll_loss_forward.default(x, y, w, reduction, -100))


def test_rules_decline_what_they_do_not_cover() -> None:
    strided = torch.empty(4, 6, 5, device="meta").transpose(1, 2)
    assert meta_outputs._relu(strided) is None
    assert meta_outputs._relu(torch.empty(3, dtype=torch.int64, device="meta")) is None
    assert meta_outputs._native_batch_norm(strided, None, None, None, None, False, 0.1, 1e-5) is None
    a, w = torch.empty(4, 5, device="meta"), torch.empty(6, 3, device="meta")
    assert meta_outputs._addmm(torch.empty(3, device="meta"), a, w) is None  # 5 != 6: torch says so
    y = torch.empty(3, dtype=torch.int64, device="meta")
    assert meta_outputs._nll_loss_forward(a, y, None, 1, -100) is None  # 4 samples, 3 targets
    with pytest.raises(RuntimeError):
        meta_outputs.run(aten.addmm.default, (torch.empty(3, device="meta"), a, w), {})
    # ...and the op still runs, through torch's kernel
    assert _outputs(meta_outputs.run(aten.relu.default, (strided,), {})) == \
        _outputs(aten.relu.default(strided))


def test_a_signature_seen_before_gets_new_storages_of_the_same_metadata() -> None:
    x = torch.empty(3, 5, device="meta")
    w = torch.empty(7, 5, device="meta")
    first = meta_outputs.run(aten.mm.default, (x, w.t()), {})
    again = meta_outputs.run(aten.mm.default, (x, w.t()), {})
    assert _meta(first) == _meta(again) == ((3, 7), (7, 1), torch.float32, 0, 84)
    assert first.untyped_storage()._cdata != again.untyped_storage()._cdata


def test_views_in_place_ops_and_other_devices_always_run() -> None:
    x = torch.empty(6, 4, device="meta")
    # _unsafe_view's schema names no alias, but its output shares the input's storage
    for _ in range(2):
        v = meta_outputs.run(aten._unsafe_view.default, (x, [24]), {})
        assert v.untyped_storage()._cdata == x.untyped_storage()._cdata
    assert meta_outputs.run(aten.add_.Tensor, (x, x), {}) is x
    for _ in range(2):  # a factory on the CPU makes real values: never made from a record
        r = meta_outputs.run(aten.arange.default, (5,), {"device": torch.device("cpu")})
        assert r.tolist() == [0, 1, 2, 3, 4]


def test_a_cold_trace_of_a_cnn_does_not_import_dynamo() -> None:
    """The rules' point: a ResNet's trace needs no Python reference behind torch._disable_dynamo."""
    code = ("import sys; from costmodel.scenario import Scenario; "
            "from costmodel.estimation import estimate; "
            "estimate(Scenario(method='sgd', model='resnet18-cifar')); "
            "print('torch._dynamo' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "COSTCL_NO_CACHE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
