"""Issue 4: MEMO's equal-budget accounting, device profiles and what fits."""
from __future__ import annotations

import pytest

from budgets import protocols
from budgets.accounting import backbone, convert
from budgets.devices import DEVICES, device
from budgets.equal import equal_budget, flops_budget
from budgets.fit import fit
from costmodel import CostclError, Scenario
from costmodel.estimation import estimate

P32, G32 = 463_504, 112_016        # ResNet-32 backbone and its generalized blocks (FACTS.md 3)
IMG32 = 32 * 32 * 3
MIB = 2**20


def test_a_model_or_603_exemplars():
    c = convert("resnet32-cifar", "cifar100", (3, 32, 32))
    assert c.backbone_params == P32 and round(c.to_json()["exemplars_per_model"], 2) == 603.52
    assert convert("resnet32-cifar", "cifar100", (3, 32, 32), exemplars=2000).query_bytes == 2000 * IMG32
    assert convert("resnet32-cifar", "cifar100", (3, 32, 32), mib=23.54).to_json()["query"]["whole_exemplars"] == 8034
    b = backbone("resnet32-cifar")
    assert (b.generalized, b.specialized) == (G32, P32 - G32)


@pytest.mark.parametrize("init,inc,tasks", [(5, 5, 20), (10, 10, 10), (20, 20, 5), (50, 50, 2),
                                            (50, 10, 6), (50, 25, 3), (50, 5, 11)])
def test_fair_protocol_exemplar_counts(init, inc, tasks):
    t = protocols.fair("cifar100", "resnet32-cifar", (3, 32, 32), 100, init, inc)
    assert t.tasks == tasks
    assert t.budget_bytes == 4 * tasks * P32 + 2000 * IMG32
    assert t.methods["der-expand"].exemplars == 2000
    single = 2000 + (4 * (tasks - 1) * P32) // IMG32
    for name in protocols.SINGLE_BACKBONE:
        assert t.methods[name].exemplars == single
        assert t.methods[name].exemplars_per_class == single // 100
    assert t.methods["memo"].exemplars == 2000 + (4 * (tasks - 1) * G32) // IMG32


def test_fair_b0inc10_is_memos_example():
    t = protocols.fair("cifar100", "resnet32-cifar", (3, 32, 32), 100, 10, 10)
    assert round(t.budget_mib, 2) == 23.54
    assert (t.methods["icarl"].exemplars, t.methods["memo"].exemplars,
            t.methods["der-expand"].exemplars) == (7431, 3312, 2000)
    assert t.to_json()["methods"]["memo"]["exemplars_per_class"] == 33


def test_auc_points_on_cifar():
    tables = protocols.auc("cifar100", (3, 32, 32), 100)
    assert [t.point for t in tables] == ["conv2", "resnet14-cifar", "resnet20-cifar",
                                         "resnet26-cifar", "resnet32-cifar"]
    assert [round(t.budget_mib, 1) for t in tables] == [7.6, 12.4, 16.1, 19.8, 23.5]
    last = tables[-1]
    assert last.methods["icarl"].exemplars == 7431 and last.methods["memo"].exemplars == 3312
    first = tables[0]  # budget: ResNet-32 and 2,000 exemplars; DER fills what 10 conv2s leave
    assert first.methods["icarl"].exemplars == 2000
    assert first.methods["der-expand"].exemplars == 2000 + (4 * (P32 - 10 * 38_976)) // IMG32


def test_the_same_code_serves_imagenet100_with_resnet18():
    img = 224 * 224 * 3
    assert backbone("resnet18").params == 11_176_512
    t = protocols.fair("imagenet100", "resnet18", (3, 224, 224), 100, 10, 10)
    assert t.budget_bytes == 4 * 10 * 11_176_512 + 2000 * img
    assert t.methods["icarl"].exemplars == 2000 + (4 * 9 * 11_176_512) // img
    tables = protocols.auc("imagenet100", (3, 224, 224), 100)
    assert tables[0].tasks == 11  # MEMO's ImageNet-100 points run B50Inc5
    # MEMO's own table (utils/model2exemplar.py): 329, 493, 755, 872, 1180, 1273 MB
    for t, published in zip(tables, [329, 493, 755, 872, 1180, 1273]):
        assert abs(t.budget_mib - published) < 1.5, t.point


@pytest.mark.parametrize("args,msg", [
    ((10, 7), "do not divide 100 classes: 100 - 10 must be a multiple of 7"),
    ((0, 10), "--init and --increment must be >= 1"),
    ((150, 10), "--init 150 is more than the 100 classes"),
])
def test_splits_that_do_not_divide(args, msg):
    with pytest.raises(CostclError, match=msg):
        protocols.fair("cifar100", "resnet32-cifar", (3, 32, 32), 100, *args)


def test_any_budget_memo_and_runtime_counting():
    base = Scenario(model="resnet32-cifar", dataset="cifar100")
    rows = {r.method: r for r in equal_budget(round(23.54 * MIB), base, ["icarl", "memo", "lightcl"])}
    assert rows["icarl"].model_bytes == 4 * P32 and rows["icarl"].exemplars == (round(23.54 * MIB) - 4 * P32) // IMG32
    assert rows["memo"].model_bytes == 4 * (G32 + 10 * (P32 - G32))
    runtime = {r.method: r for r in equal_budget(400 * MIB, base, ["icarl", "er"], "runtime")}
    assert runtime["er"].exemplar_bytes == IMG32 * 4 + 8      # float images and a label
    assert runtime["icarl"].exemplar_bytes == IMG32 + 8       # uint8 images and a label
    small = equal_budget(2 * MIB, base, ["icarl", "memo"])
    assert small[1].exemplars is None and small[1].short_by_bytes == 4 * (G32 + 10 * (P32 - G32)) - 2 * MIB


@pytest.mark.parametrize("mib,msg", [(0, "--budget-mib must be > 0"), (-3, "--budget-mib must be > 0"),
                                     (1, "smaller than every model: even icarl needs 1.77 MiB \\(0.77 MiB short\\)")])
def test_bad_budgets(mib, msg):
    with pytest.raises(CostclError, match=msg):
        equal_budget(round(mib * MIB), Scenario(model="resnet32-cifar", dataset="cifar100"), ["icarl"])


def test_device_profiles():
    assert {"jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "laptop-gpu-8gb"} <= set(DEVICES)
    nano = device("jetson-nano")
    assert nano.total_mib == 4096 and nano.usable_mib == 4096 - nano.os_reserve_mib - nano.runtime_reserve_mib
    assert device(None, 1000).usable_bytes == 1000 * MIB
    with pytest.raises(CostclError, match="unknown device 'jetson-nanoo'; did you mean jetson-nano"):
        device("jetson-nanoo")


@pytest.mark.parametrize("name,method", [("jetson-nano", "lightcl"), ("raspberry-pi-4", "er")])
def test_fit_agrees_with_estimate(name, method):
    profile = device(name)
    impl = "costcl"  # (the LightCL repository keeps at most one batch: no buffer to fit)
    r = fit(profile, Scenario(method=method, impl=impl))
    s = Scenario(method=method, impl=impl, device=profile.runs_on)
    def peak(x: Scenario) -> int:  # fit answers for the whole run (its evaluation included)
        m = estimate(x).memory
        return max(m.peak_bytes, m.run_peak_bytes)

    assert r.largest_batch > 0
    assert peak(s.replace(batch_size=r.largest_batch)) <= profile.usable_bytes
    assert peak(s.replace(batch_size=r.largest_batch + 1)) > profile.usable_bytes
    assert r.largest_buffer is not None and r.largest_buffer > 0
    at = s.replace(buffer_size=r.largest_buffer)
    assert peak(at) <= profile.usable_bytes
    assert peak(at.replace(buffer_size=r.largest_buffer + 1)) > profile.usable_bytes


def test_which_methods_fit_at_all():
    r = fit(device(None, 300), Scenario(method="lightcl"), ["sgd", "er", "memo"])
    verdict = {m.method: m.fits for m in r.methods}
    assert verdict == {"sgd": True, "er": False, "memo": False}


def test_flops_budget_epochs():
    budget = 1e15
    rows = flops_budget(budget, Scenario(), ["sgd", "lightcl"])
    for r in rows:
        s = Scenario(method=r.method, epochs=r.epochs)
        assert estimate(s).run.total_flops <= budget < estimate(s.replace(epochs=r.epochs + 1)).run.total_flops
    sgd, light = rows
    assert light.epochs > sgd.epochs


@pytest.mark.parametrize("limit,start,cap,want", [(37, 1, 1 << 16, 37), (1, 1, 100, 1),
                                                  (0, 1, 100, 0), (500, 1, 100, 100),
                                                  (100, 1, 100, 100), (64, 1, 100, 64),
                                                  (5, 0, 1 << 22, 5), (0, 0, 10, 0)])
def test_largest_answers_the_boundary_and_never_asks_beyond_the_cap(limit, start, cap, want):
    from budgets.fit import largest
    asked = []

    def fits(n: int) -> bool:
        asked.append(n)
        return n <= limit

    assert largest(fits, start, cap) == want
    assert max(asked) <= cap


def test_fit_stops_at_a_tasks_every_image(costcl):
    """A small model on a large device: every batch up to a task's 10,000 CIFAR-10 images
    fits (the search asked for 16,384 and failed before)."""
    mlp = "benchmarks.user_factories:mlp"
    r = fit(device("raspberry-pi-4"), Scenario(method="sgd", model=mlp, input_size=(784,),
                                               num_classes=10))
    assert (r.largest_batch, r.peak_at_next) == (10_000, None)
    out = costcl("fit", "--method", "sgd", "--model", mlp, "--input-size", "784",
                 "--num-classes", "10", "--device", "raspberry-pi-4")
    assert out.returncode == 0, out.stderr
    assert "largest batch 10,000, a task's every" in " ".join(out.stdout.split())
