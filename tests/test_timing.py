"""The time model: formulas over the one trace, device profiles, time budgets, bad input."""
from __future__ import annotations

import json

import pytest

from costmodel import Scenario, engine
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.time_profile import (Rate, TimeProfile, datasheet, from_dict, generic, load,
                                    rate_keys)

SMALL = dict(model="resnet14-cifar", input_size=(3, 16, 16), num_classes=10, tasks=5)


def flops_only(per_s: float = 1e9) -> TimeProfile:
    """Convolutions and products at ``per_s`` FLOP/s; everything else free."""
    rates = {k: Rate(0.0, per_s if k.startswith(("conv.", "linear.")) else 0.0)
             for k in rate_keys()}
    return TimeProfile("flops-only", "cpu", False, "test", rates)


def test_a_flops_only_profile_gives_the_step_flops_over_the_rate():
    """Every FLOP of the estimate is timed once, forward and backward, frozen-aware."""
    for s in (Scenario(method="sgd", impl="costcl", batch_size=8, **SMALL),
              Scenario(method="sgd", impl="costcl", batch_size=8, train_from="stage_3", **SMALL),
              Scenario(method="er", impl="costcl", batch_size=8, replay_batch=4, **SMALL)):
        e = estimate(s, profile=flops_only())
        assert e.time is not None
        assert e.time.forward_s * 1e9 == pytest.approx(e.step.forward_flops, rel=1e-12)
        assert e.time.backward_s * 1e9 == pytest.approx(e.step.backward_flops, rel=1e-12)
        assert e.time.optimizer_s == 0
        assert e.time.share["conv"] + e.time.share["linear"] == pytest.approx(1)


def test_fixed_costs_count_ops_nodes_and_parameter_tensors():
    """One microsecond per op (views apart), per autograd node, per parameter tensor."""
    rates = {k: Rate(0.0) for k in rate_keys()}
    for k in rate_keys():
        if k not in ("view", "step") and not k.startswith("optimizer."):
            rates[k] = Rate(1e-6)
    rates["optimizer.sgd"] = Rate(1e-6)
    s = Scenario(method="sgd", impl="costcl", batch_size=8, **SMALL)
    e = estimate(s, profile=TimeProfile("fixed", "cpu", False, "test", rates))
    sm = engine.step_model(s.replace(impl="costcl"), __import__("costmodel").methods.get("sgd", "costcl"))
    trace = sm.trace
    params = len(trace.param_numel)
    assert e.time.optimizer_s == pytest.approx(params * 1e-6)
    # every parameter trains: each conv and linear computes one gradient per input that needs it
    assert e.time.step_s > len([op for op in trace.ops if op.macs_by_kind]) * 1e-6


def test_step_time_is_affine_in_the_batch():
    from costmodel import methods
    from costmodel.time_estimate import timer

    s = methods.resolve(Scenario(method="sgd", impl="costcl", batch_size=8, **SMALL))
    sm = engine.step_model(s, methods.get("sgd", "costcl"))
    sel = sm.plan(sm.all_params()).selection
    t = timer(sm, generic("cpu"))
    a, b, c = (t.seconds(sel, "sgd", n) for n in (8, 16, 32))
    assert b - a == pytest.approx((c - b) / 2, rel=1e-9)
    assert a > 0


def test_time_adds_no_trace_and_follows_the_profile():
    s = Scenario(method="lwf", impl="costcl", batch_size=16, **SMALL)
    first = estimate(s, profile=generic("cpu"))
    traces = len(engine._TRACES) + len(engine._WORKS)
    fast = datasheet("fast", "cpu", 1e12, 1e11, 0.5, 0.5, 1e-6, "test")
    second = estimate(s, profile=fast)
    assert len(engine._TRACES) + len(engine._WORKS) == traces
    assert second.time.step_s < first.time.step_s
    assert second.step == first.step and second.memory == first.memory
    j = second.to_json()["time"]
    assert j["profile"] == "fast" and j["calibrated"] is False
    assert j["run_h"] == pytest.approx((j["run_train_s"] + j["evaluation_s"]) / 3600)
    assert set(j["share"]) >= {"conv", "norm", "eltwise", "optimizer"}


def test_run_time_counts_every_step_of_the_schedule():
    """With a FLOPs-only profile the run's training time is its FLOPs over the rate
    (no work outside the steps for SGD), plus the evaluation's forwards."""
    s = Scenario(method="sgd", impl="costcl", batch_size=32, epochs=2, **SMALL)
    e = estimate(s, profile=flops_only())
    assert e.time.run_train_s * 1e9 == pytest.approx(e.run.total_flops, rel=1e-9)
    assert e.time.evaluation_s > 0


def test_profile_round_trips_through_toml(tmp_path):
    p = datasheet("jetson", "cuda", 236e9, 25.6e9, 0.35, 0.6, 20e-6, 'a "quoted" source')
    path = tmp_path / "p.toml"
    path.write_text(p.to_toml())
    back = load(path)
    assert back.digest() == p.digest() and back.source == p.source


def test_shipped_profiles_are_datasheet_figures_and_say_so():
    from budgets.devices import DEVICES

    for d in DEVICES.values():
        tp = d.time_profile()
        assert d.peak_flops > 0 and d.bandwidth_bytes_s > 0 and not d.calibrated
        assert not tp.calibrated and "uncalibrated" in tp.source
        assert tp.rate("conv.mid.fwd").per_s == pytest.approx(d.peak_flops * d.flops_efficiency)


@pytest.mark.parametrize("text, problem", [
    ("name = 'x'\n", "lacks the field 'device'"),
    ("name = 'x'\ndevice = 'cpu'\ncalibrated = true\nsource = 's'\n[rates]\n", "rates.'conv.first.fwd'"),
    ("name = 'x'\ndevice = 'tpu'\n", "device must be 'cpu' or 'cuda'"),
    ("name = [\n", "is not valid TOML"),
])
def test_a_bad_profile_is_named(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CostclError, match=problem.replace("(", r"\(").replace(".", r"\.")):
        load(path)


def test_a_negative_rate_is_refused():
    good = datasheet("x", "cpu", 1e9, 1e9, 0.5, 0.5, 1e-6, "s").to_toml()
    import tomllib
    data = tomllib.loads(good)
    data["rates"]["node"]["fixed_s"] = -1
    with pytest.raises(CostclError, match=r"rates\.node\.fixed_s"):
        from_dict(data, "p.toml")


def test_durations():
    from budgets.time_budget import parse_duration

    assert parse_duration("2h") == 7200
    assert parse_duration("90m") == 5400
    assert parse_duration("1.5d") == 1.5 * 86400
    for bad in ("2", "h", "-1h", "0s", "2 parsecs"):
        with pytest.raises(CostclError):
            parse_duration(bad)


def test_fit_rate_through_exact_points():
    from lightcl.calibrate import fit_rate

    r = fit_rate([(1e6, 1e-3 + 1e6 / 1e9), (4e6, 1e-3 + 4e6 / 1e9)])
    assert r.fixed_s == pytest.approx(1e-3) and r.per_s == pytest.approx(1e9)
    assert fit_rate([(1.0, 2.0), (2.0, 1.0)]).per_s == 0  # noise: a fixed cost only


# -- the command line ----------------------------------------------------------------

SMALL_FLAGS = ("--model", "resnet14-cifar", "--input-size", "3,16,16", "--num-classes", "10")


def test_estimate_json_has_the_time_block(costcl, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(flops_only().to_toml())
    r = costcl("estimate", "--method", "sgd@costcl", *SMALL_FLAGS, "--batch-size", "8",
               "--device-profile", str(path), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["time"]["step_s"] * 1e9 == pytest.approx(d["step"]["forward_flops"]
                                                      + d["step"]["backward_flops"])
    assert d["time"]["profile"] == "flops-only"


@pytest.mark.parametrize("content", ["name = [", "name = 'x'\ndevice = 'cpu'\n"])
def test_cli_bad_profile_is_one_line_exit_2(costcl, tmp_path, content):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    r = costcl("estimate", *SMALL_FLAGS, "--device-profile", str(path))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.toml" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_time_budget(costcl):
    r = costcl("budget", "--time-budget", "2h", "--methods", "sgd@costcl,er@costcl",
               *SMALL_FLAGS, "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["time_budget_s"] == 7200
    for row in d["methods"]:
        assert row["epochs"] >= 1 and row["run_h"] <= 2
    bad = costcl("budget", "--time-budget", "2", *SMALL_FLAGS)
    assert bad.returncode == 2 and "2h, 90m" in bad.stderr


def test_cli_fit_with_a_time_budget(costcl):
    r = costcl("fit", "--device", "jetson-nano", "--memory-mib", "200", "--time-budget", "30m",
               "--method", "sgd@costcl",
               *SMALL_FLAGS, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["time_profile"].startswith("jetson-nano") and len(d["time"]) == 1  # speeds kept
    row = d["time"][0]
    assert row["fits"] == (row["scenario_run_h"] <= 0.5)


def test_cli_calibrate_refuses_a_folder(costcl, tmp_path):
    r = costcl("calibrate", "--out", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_scales_multiply_every_second():
    """A profile's fixed and amount scales, both 2, double step, parts and run alike."""
    import dataclasses

    s = Scenario(method="er", impl="costcl", batch_size=8, replay_batch=4, **SMALL)
    base = datasheet("x", "cpu", 1e11, 2e10, 0.5, 0.5, 5e-6, "s")
    one = estimate(s, profile=base).time
    two = estimate(s, profile=dataclasses.replace(base, step_scale=2.0, fixed_scale=2.0)).time
    for field in ("step_s", "forward_s", "backward_s", "optimizer_s", "run_train_s",
                  "evaluation_s"):
        assert getattr(two, field) == pytest.approx(2 * getattr(one, field), rel=1e-12), field
    assert two.share == pytest.approx(one.share)


def test_the_step_scale_is_stored_and_checked(tmp_path):
    import dataclasses
    import tomllib

    p = dataclasses.replace(datasheet("x", "cpu", 1e9, 1e9, 0.5, 0.5, 1e-6, "s"),
                            step_scale=1.25, fixed_scale=0.75,
                            step_scale_source="sgd at batch 8: 1.25")
    path = tmp_path / "p.toml"
    path.write_text(p.to_toml())
    back = load(path)
    assert (back.step_scale, back.fixed_scale, back.step_scale_source) == \
        (1.25, 0.75, "sgd at batch 8: 1.25")
    data = tomllib.loads(p.to_toml())
    del data["step_scale"]  # a profile written before the scale existed: 1
    assert from_dict(data, "old.toml").step_scale == 1.0
    for bad in (0, -1.5, "fast", True):
        data["step_scale"] = bad
        with pytest.raises(CostclError, match="step_scale must be a positive number"):
            from_dict(data, "p.toml")


def test_the_reference_steps_fit_the_fixed_and_amount_scales(monkeypatch):
    """Steps measured at 0.7 x the fixed part + 1.1 x the rest give back 0.7 and 1.1."""
    import lightcl.reference_step as ref
    import lightcl.step_timing as timing

    base = datasheet("x", "cpu", 1e11, 2e10, 0.5, 0.5, 5e-5, "s")
    monkeypatch.setattr(ref, "REFERENCE_MODELS", ("resnet14-cifar", "resnet32-cifar"))

    def measured(runners, rounds, warmup, tell):
        out = {}
        for key, r in runners.items():
            f, a, faults = ref.parts(r.scenario, base)
            out[key] = 0.7 * f + 1.1 * a + faults
        return out
    monkeypatch.setattr(timing, "measured_medians", measured)
    scaled = ref.measure_scale(base, "cpu")
    assert scaled.fixed_scale == pytest.approx(0.7, rel=1e-9)
    assert scaled.step_scale == pytest.approx(1.1, rel=1e-9)
    assert "resnet32-cifar b32" in scaled.step_scale_source
    assert scaled.rates == base.rates
    s = Scenario(method="sgd", model="resnet32-cifar", batch_size=8)
    f, a, faults = ref.parts(s, base)
    assert estimate(s, profile=scaled).time.step_s == pytest.approx(0.7 * f + 1.1 * a + faults)


def test_one_scale_when_the_fit_gives_a_part_no_weight():
    from lightcl.reference_step import fit_scales

    assert fit_scales([(1.0, 1.0, 2.4), (2.0, 2.0, 4.8)]) == pytest.approx((1.2, 1.2))
    # more fixed cost, less time: the fixed part would get a negative weight
    one = (1.0 / 1.1 + 0.9 / 1.5) / 2
    assert fit_scales([(0.1, 1.0, 1.0), (0.5, 1.0, 0.9)]) == pytest.approx((one, one))
