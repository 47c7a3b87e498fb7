"""Every method's cost rules, term by term: what it stores, which forwards it adds,
which parameters train, how its schedule runs."""
from __future__ import annotations

import pytest

from costmodel import CostclError, Scenario, methods
from costmodel.estimation import estimate

F32 = 1_110_845_440          # FLOPs of one forward of resnet18-cifar, 10 classes, 32x32
P18 = 11_173_962             # its parameters
W18 = sum(p.numel() for p in __import__("costmodel.models.registry", fromlist=["x"])
          .build_model("resnet18-cifar", 10).parameters() if p.dim() > 1)
IMG_F32 = 3 * 32 * 32 * 4    # one float CIFAR image
IMG_U8 = 3 * 32 * 32


def est(method, **kw):
    return estimate(Scenario(method=method, **kw))


def bd(e):
    return e.memory.breakdown_bytes


def test_catalog_lists_every_method_of_the_issue():
    assert set(methods.catalog()) == {
        "joint", "sgd", "ewc", "lwf", "pnn", "fdr", "er", "der", "derpp", "sparcl-er",
        "sparcl-derpp", "lightcl", "icarl", "wa", "replay", "der-expand", "memo",
        "odil-freeze", "packnet",
        "latent-replay", "e2e", "podnet", "bic", "foster"}  # issue 13
    for m in methods.catalog().values():
        assert m.summary and m.paper


def test_sgd_is_one_forward_of_everything():
    e = est("sgd")
    assert e.step.model_calls == 1 and e.step.forward_flops == 32 * F32
    assert e.trainable_params == P18 and bd(e)["buffer"] == bd(e)["method_state"] == 0


def test_joint_retrains_on_everything_seen():
    sgd, joint = est("sgd"), est("joint")
    assert joint.step.forward_flops == sgd.step.forward_flops
    # after task t it trains on t tasks' images: sum over t of t = T(T+1)/2 = 15 task-epochs of 5
    assert sum(p.images for p in joint.run.phases) == 15 * 10_000
    final = est("joint", options={"retrain": "final"})
    assert final.run.phases[0].images == 50_000


def test_ewc_stores_fisher_and_anchor_and_estimates_the_fisher_per_image():
    e, sgd = est("ewc"), est("sgd")
    assert bd(e)["method_state"] == 2 * P18 * 4
    # Fisher: every training image, forward and backward at batch 1, after every task
    per_image = F32 + 2 * F32 - 2 * 3 * 64 * 32 * 32 * 9  # fwd + bwd, no input grad for the image
    assert e.run.total_flops - sgd.run.total_flops == 5 * 10_000 * per_image


def test_lwf_keeps_and_runs_a_teacher():
    e = est("lwf")
    model_bytes = P18 * 4 + 38_560  # parameters and batch-norm buffers
    assert bd(e)["method_state"] == model_bytes
    assert e.step.model_calls == 1 and e.step.forward_flops == 2 * 32 * F32


@pytest.mark.parametrize("method,calls,samples", [("er", 1, 32 + 32), ("der", 2, 32 + 32),
                                                  ("derpp", 3, 32 + 64), ("fdr", 2, 32 + 32)])
def test_replay_methods_forward_their_replay_batches(method, calls, samples):
    e = est(method)
    assert e.step.model_calls == calls
    assert e.step.forward_flops == samples * F32


@pytest.mark.parametrize("method,extra", [("er", 0), ("der", 10 * 4), ("derpp", 10 * 4),
                                          ("fdr", 10 * 4 + 8)])
def test_replay_buffers_store_float_images_and_what_travels_with_them(method, extra):
    e = est(method, buffer_size=200, impl="costcl")  # Mammoth's der keeps no labels
    assert bd(e)["buffer"] == 200 * (IMG_F32 + 8 + extra)


def test_derpp_backward_after_each_forward_keeps_one_pass_of_activations():
    separate = est("derpp", impl="costcl")  # costcl's clean step (Mammoth's: one backward)
    summed = est("derpp", impl="costcl", options={"separate_backward": False})
    assert separate.step.forward_flops == summed.step.forward_flops
    assert separate.memory.peak_bytes < summed.memory.peak_bytes
    assert separate.memory.breakdown_bytes["activations"] < \
        1.1 * est("sgd", impl="costcl").memory.breakdown_bytes["activations"]


def test_sparcl_keeps_two_float_masks_and_runs_dense():
    e, er = est("sparcl-er"), est("er")
    assert bd(e)["method_state"] == 2 * 4 * W18
    assert e.step.forward_flops == er.step.forward_flops  # masked dense kernels
    assert e.scenario.sparsity == 0.9
    p = estimate(Scenario(method="sparcl-er"), convention="paper")
    assert p.run.total_flops == pytest.approx(0.1 * estimate(Scenario(method="er"), convention="paper").run.total_flops, rel=1e-9)


def test_lightcl_freezes_all_but_the_last_stage_and_stores_its_references():
    """costcl's clean LightCL step (the repository's is in test_implementations.py)."""
    e = est("lightcl", impl="costcl")
    s = e.scenario
    assert (s.batch_size, s.buffer_size, s.replay_batch, s.epochs, s.holdout) == (32, 15, 15, 50, 0.1)
    assert e.trainable == {n for n in e.trainable if n.startswith(("layer4.", "linear."))}
    assert e.trainable_params == 8_398_858
    assert e.step.model_calls == 2 and e.step.forward_flops == 47 * F32
    # FS: four 512x4x4 maps and the logits of 15 samples (fp32), the important channels I
    assert bd(e)["method_state"] == 15 * (4 * 512 * 16 + 10) * 4 + 4 * 512
    assert bd(e)["buffer"] == 15 * IMG_F32 + 15 * 8
    sparse = est("lightcl", impl="costcl", sparsity=0.9)
    assert all(n.startswith(("layer3.1.", "layer4.", "linear.")) for n in sparse.trainable)
    assert any(n.startswith("layer3.1.") for n in sparse.trainable)
    assert bd(sparse)["method_state"] == bd(e)["method_state"] + W18  # bool channel masks


def test_lightcl_tinyimagenet_defaults():
    s = est("lightcl", dataset="tinyimagenet").scenario
    assert (s.epochs, s.tasks, s.input_shape) == (100, 10, (3, 64, 64))


@pytest.mark.parametrize("method", ["icarl", "wa"])
def test_distillation_learners_run_a_teacher_on_the_mixed_data(method):
    e = est(method, impl="costcl")
    s = e.scenario
    assert (s.model, s.dataset, s.batch_size, s.optimizer, s.buffer_size) == (
        "resnet32-cifar", "cifar100", 128, "sgd-momentum", 2000)
    assert bd(e)["buffer"] == 2000 * (IMG_U8 + 8)
    later = e.run.phases[1]
    assert (later.images, later.epochs, e.run.phases[0].epochs) == (5000 + 2000, 170, 200)
    plain = est("replay", impl="costcl")
    assert e.step.forward_flops == 2 * plain.step.forward_flops
    assert plain.run.phases[1].epochs == 70


def test_der_expand_runs_every_backbone_and_trains_the_newest():
    e = est("der-expand", impl="costcl")
    assert e.trainable_params == 463_504 + 640 * 100 + 100 + 64 * 11 + 11
    one = est("replay", impl="costcl")
    # ten backbones forward, one backward (plus the wider classifier)
    assert e.step.forward_flops > 9.9 * one.step.forward_flops


def test_growing_networks_are_affine_in_the_task_index():
    """Later tasks' FLOPs are extrapolated from 2, 3 (, 4) tasks; the last task's trace agrees."""
    from costmodel import engine
    from costmodel.estimation import growth, trainable_set
    from costmodel.trace.records import at
    for name, kw in (("der-expand", {}), ("memo", {}), ("pnn", {"setting": "task-il", "tasks": 6, "num_classes": 12})):
        s = methods.resolve(Scenario(method=name, batch_size=8, **kw))
        m = methods.get(name)

        def f(v, s=s, m=m):
            sm = engine.step_model(s, m, v)
            fl = sm.plan(trainable_set(s, m, sm, v)).flops
            return at(fl.forward, 8) + at(fl.grad_input, 8) + at(fl.grad_weight, 8)

        assert growth(m, f, s.tasks - 1) == f("main"), name


def test_memo_shares_the_generalized_blocks():
    e = est("memo")
    assert any(n.startswith("generalized.") for n in e.trainable)
    assert all(not n.startswith("specialized.") or n.startswith("specialized.9.") for n in e.trainable)
    frozen_base = est("memo", options={"train_base": False})
    assert frozen_base.trainable_params == e.trainable_params - 112_016
    assert frozen_base.memory.peak_bytes < e.memory.peak_bytes  # no backward through old blocks


def test_pnn_needs_task_identity_and_trains_its_newest_column():
    with pytest.raises(CostclError, match="cannot run under class-il.*use --setting task-il"):
        est("pnn")
    e = est("pnn", setting="task-il")
    assert all(n.startswith("columns.4.") for n in e.trainable)


def test_odil_freeze_masks_every_weight_and_distils():
    e = est("odil-freeze")
    n = sum(p.numel() for p in __import__("costmodel.models.registry", fromlist=["x"])
            .build_model("resnet18-cifar", 100).parameters())
    assert [p.name.split()[0] for p in e.run.phases] == ["first", "learn", "fine-tune"]
    assert bd(e)["method_state"] == n + (n * 4 + 38_560)  # bool masks + the teacher
    assert bd(e)["buffer"] == 2000 * (IMG_U8 + 8)


def test_packnet_owns_weights_by_task():
    with pytest.raises(CostclError, match="task-il"):
        est("packnet")
    e = est("packnet", setting="task-il")
    assert bd(e)["method_state"] == W18 and len(e.run.phases) == 2


@pytest.mark.parametrize("kwargs,msg", [
    (dict(method="lightcl", options={"bogus": 1}), "takes no option 'bogus'; it takes: beta, ratio"),
    (dict(method="ewc", options={"beta": 1}), r"method 'ewc' \(--impl [a-z]*\) takes no option 'beta'"),
    (dict(method="lightcl", replay_batch=30), "set --buffer-size instead"),
    (dict(method="derp"), "unknown method 'derp'; did you mean der"),
])
def test_bad_method_input(kwargs, msg):
    with pytest.raises(CostclError, match=msg):
        estimate(Scenario(**kwargs))


@pytest.mark.parametrize("kwargs,msg", [(dict(sparsity=-0.1), r"sparsity must be in \[0, 1\)"),
                                        (dict(buffer_size=-5), "buffer-size must be a whole number >= 0"),
                                        (dict(replay_batch=-1), "replay-batch must be a whole number >= 0")])
def test_bad_scenario_numbers(kwargs, msg):
    with pytest.raises(CostclError, match=msg):
        Scenario(method="er", **kwargs)
