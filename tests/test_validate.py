"""Issue 5 acceptance on the CPU: predicted step FLOPs equal measured exactly, predicted
peak within 3% of the measured one, for the methods the trainer shares with the engine."""
from __future__ import annotations

import pytest
import torch

from costmodel import CostclError, Scenario
from lightcl import validate as V

CASES = [("sgd", {}), ("er", {}), ("derpp", {}), ("ewc", {}), ("lwf", {}),
         ("lightcl", {"impl": "costcl"}), ("lightcl", {"impl": "costcl", "sparsity": 0.9}),
         ("odil-freeze", {})]


@pytest.mark.parametrize("method,kw", CASES, ids=[f"{m}{kw}" for m, kw in CASES])
def test_validate_on_cpu_at_batch_32(method, kw):
    v = V.validate(Scenario(method=method, batch_size=32, **kw), fake=True)
    m = v.measured
    assert v.predicted.step.forward_flops == m["forward_flops"]
    assert v.predicted.step.backward_flops == m["backward_flops"]
    assert abs(v.peak_error) <= 0.03
    # the uninstrumented prediction is no further than the branch-gradient effect
    assert abs(v.predicted.memory.peak_bytes - m["peak_bytes"]) <= 0.1 * m["peak_bytes"]


@pytest.mark.parametrize("method,kw", [("sgd", {}), ("lightcl", {"impl": "lightcl"})])
def test_validate_measures_the_plain_run(method, kw):
    """Real tensors on the CPU: the profiler's op-level peak of the second step, against
    the plain prediction (LightCL's repository step: kept graphs, anomaly checks, masks)."""
    v = V.validate(Scenario(method=method, batch_size=32, **kw), steps=1)
    assert v.compared_with == "runtime"
    assert v.flops_error == 0.0
    assert abs(v.peak_error) < 1e-6
    assert v.measured["peak_with_scratch_bytes"] > v.measured["peak_bytes"]


def test_fake_tensors_measure_the_bytes_of_real_ones():
    s = Scenario(method="der", batch_size=8, buffer_size=20, replay_batch=8)
    assert V.measure_cpu_peak(s, fake=True)["peak_bytes"] == V.measure_cpu_peak(s)["peak_bytes"]


def test_validate_json_shape():
    d = V.validate(Scenario(method="sgd", batch_size=4), steps=1).to_json()
    assert set(d["measured"]) >= {"peak_bytes", "reserved_bytes", "forward_flops", "backward_flops",
                                  "seconds_per_step", "device"}
    assert d["measured"]["seconds_per_step"] > 0 and d["measured"]["reserved_bytes"] is None
    assert d["relative_error"]["flops"] == 0.0 and abs(d["relative_error"]["peak_bytes"]) < 1e-6


@pytest.mark.parametrize("kwargs,msg", [(dict(steps=0), "--steps must be >= 1"),
                                        (dict(device="tpu"), "unknown device 'tpu'")])
def test_bad_validate_input(kwargs, msg):
    with pytest.raises(CostclError, match=msg):
        V.validate(Scenario(), **kwargs)


def test_cuda_out_of_memory_is_a_result(monkeypatch):
    """An OOM on the GPU comes back as a record with the failed batch, not a crash."""
    class Boom:
        def step(self):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(V, "build_runner", lambda *a, **k: Boom())
    for fn in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, fn, lambda *a, **k: None)
    r = V.measure_cuda_peak(Scenario(batch_size=4096).replace(batch_size=4096))
    assert r == {"peak_bytes": None, "reserved_bytes": None, "oom": True, "failed_batch": 4096}


def test_lean_order_gives_the_same_gradients():
    from lightcl.runner import build_runner

    grads = []
    for lean in (False, True):
        r = build_runner(Scenario(method="lightcl", impl="costcl", batch_size=6, buffer_size=4,
                                  options={"lean": lean}), seed=3)
        r.optimizer.zero_grad(set_to_none=True)
        r.method.step(r.context, r.x, r.y)
        grads.append({n: p.grad.clone() for n, p in r.net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("batch", [8, 32])
def test_lean_order_peak_is_predicted(batch):
    """Lean backs the stored-sample loss up first; whether that lowers the peak depends on
    the batch (its gradients then live through the batch's forward): predicted and measured agree."""
    for lean in (False, True):
        s = Scenario(method="lightcl", impl="costcl", batch_size=batch, options={"lean": lean})
        v = V.validate(s, fake=True)
        assert abs(v.peak_error) < 1e-6
