"""Mammoth's implementations (issue 9): sgd, er, der, derpp, ewc (ewc_on) and lwf as
aimagelab/mammoth's own observe() and loop run them.

The figures marked "measured" come from ``benchmarks/public/mammoth_repo.py`` (through
``benchmarks/public_code.py --mammoth CHECKOUT``) on aimagelab/mammoth at e75a491c:
Mammoth's own model, buffer and loop on synthetic seq-cifar10 data, CPU, batch 32,
replay batch 32, buffer 500, the second ``observe`` of task 1; memory is torch.profiler's
op-level peak of that step, FLOPs FlopCounterMode's, the buffer's Kornia augmentation
left out (it adds 8 FLOPs per replayed image, which costcl does not count).  The
benchmark needs the checkout; these tests do not.
"""
import pytest
import torch

from costmodel import CostclError, Scenario, engine, methods
from costmodel.estimation import estimate

MEASURED = {  # case: (step peak bytes, forward FLOPs, backward FLOPs), measured
    "sgd": (224_889_440, 35_547_054_080, 70_980_861_952),
    "er": (377_982_320, 71_094_108_160, 141_961_723_904),
    "der": (381_511_928, 71_094_108_160, 141_961_723_904),
    "derpp": (531_962_276, 106_641_162_240, 212_942_585_856),
    "ewc_on": (419_053_560, 35_547_054_080, 70_980_861_952),
    "lwf": (224_893_280, 35_547_054_080, 70_980_861_952),
}
REHEARSAL = {"buffer_size": 500, "replay_batch": 32}
SCENARIOS = {  # as benchmarks/public_code.py's mammoth_cases
    "sgd": Scenario(method="sgd", impl="mammoth"),
    "er": Scenario(method="er", impl="mammoth", **REHEARSAL),
    "der": Scenario(method="der", impl="mammoth", **REHEARSAL),
    "derpp": Scenario(method="derpp", impl="mammoth", **REHEARSAL),
    "ewc_on": Scenario(method="ewc", impl="mammoth"),
    # the runner's synthetic task has 64 training images, whose logits LwF stores
    "lwf": Scenario(method="lwf", impl="mammoth", holdout=0.9936),
}
P18 = 11_173_962  # resnet18-cifar's parameters
IMAGE = 3 * 32 * 32 * 4  # one float32 CIFAR image
BATCH = 32 * IMAGE  # the loop's un-augmented batch


def est(s: Scenario, **kw):
    return estimate(s.replace(**kw))


@pytest.mark.parametrize("case", list(MEASURED))
def test_mammoth_matches_the_public_code(case):
    peak, forward, backward = MEASURED[case]
    e = estimate(SCENARIOS[case])
    assert e.scenario.impl == "mammoth" and e.scenario.batch_size == 32
    assert (e.step.forward_flops, e.step.backward_flops) == (forward, backward)
    assert abs(e.memory.peak_bytes - peak) / peak < 0.0005


def test_mammoth_is_the_default_where_costcl_reproduces_it():
    for name in ("sgd", "er", "der", "derpp", "ewc"):
        assert methods.default_impl(name) == "mammoth"
        assert list(methods.implementations(name)) == ["costcl", "mammoth"]
    # costcl's lwf is PyCIL's (a teacher network per batch) and costcl train runs it;
    # Mammoth's needs the loader's stored logits, which the trainer cannot hand over
    assert methods.default_impl("lwf") == "costcl"
    assert not methods.get("lwf", "mammoth").trains and methods.get("lwf").trains


def test_the_loop_hands_every_step_the_unaugmented_batch():
    """utils/training.py:100-106: not_aug_inputs is on the device beside the batch."""
    mammoth, clean = estimate(SCENARIOS["sgd"]), est(SCENARIOS["sgd"], impl="costcl")
    assert mammoth.memory.peak_bytes - clean.memory.peak_bytes == BATCH
    assert mammoth.memory.breakdown_bytes["inputs"] - clean.memory.breakdown_bytes["inputs"] == BATCH
    assert (mammoth.step.forward_flops, mammoth.step.backward_flops) == \
        (clean.step.forward_flops, clean.step.backward_flops)


@pytest.mark.parametrize("case, fields", [("er", 8), ("der", 10 * 4), ("derpp", 8 + 10 * 4)])
def test_the_buffer_is_on_the_host(case, fields):
    """utils/buffer.py:314: float32 images, int64 labels, float32 logits, on the CPU; der
    stores no labels (der.py:46).  On a GPU they are host memory, on the CPU they count."""
    stored = 500 * (IMAGE + fields)
    cpu = estimate(SCENARIOS[case])
    assert cpu.memory.breakdown_bytes["buffer"] == stored and cpu.memory.host_bytes == 0
    gpu = est(SCENARIOS[case], device="cuda")
    assert gpu.memory.host_bytes == stored and gpu.memory.breakdown_bytes["buffer"] == 0


def test_derpp_runs_one_backward_over_three_forwards():
    """derpp.py:34-54: three forwards, their losses summed, ONE backward: all three graphs
    are alive at once (costcl's clean step backs each forward up on its own)."""
    s = methods.resolve(SCENARIOS["derpp"])
    trace = engine.step_model(s, methods.get("derpp", "mammoth")).trace
    assert len(trace.segments) == 1 and trace.model_calls == 3
    clean = methods.resolve(s.replace(impl="costcl", options={}))
    assert len(engine.step_model(clean, methods.get("derpp", "costcl")).trace.segments) == 3
    mammoth = estimate(SCENARIOS["derpp"])
    one_backward = est(SCENARIOS["derpp"], impl="costcl", options={"separate_backward": False})
    # beside the un-augmented batch, Mammoth's locals keep the second replay's outputs
    # (buf_outputs) and one more 0-dim loss referenced through the backward
    assert mammoth.memory.peak_bytes - one_backward.memory.peak_bytes == BATCH + 32 * 10 * 4 + 4
    with pytest.raises(CostclError, match="takes no option 'separate_backward'"):
        est(SCENARIOS["derpp"], options={"separate_backward": True})


def test_ewc_installs_its_penalty_gradient_before_backward():
    """ewc_on.py:67-75: the penalty's gradient is computed on flat P-sized vectors (three
    alive at the subtraction) and installed as every parameter's .grad (views of one
    vector, backbone/__init__.py:138-150); backward adds into it in place."""
    P = P18 * 4
    e = estimate(SCENARIOS["ewc_on"])
    assert e.memory.breakdown_bytes["method_state"] == 2 * P  # Fisher and checkpoint
    assert e.memory.phase == "forward" and e.memory.breakdown_bytes["gradients"] == 0
    s = methods.resolve(SCENARIOS["ewc_on"])
    m = methods.get("ewc", "mammoth")
    sm = engine.step_model(s, m)
    installed = sm.trace.installed_grads
    assert {name for _, name, _ in installed} == set(sm.trace.param_numel)
    assert {(k, sid) for k, _, sid in installed} == {(0, installed[0][2])}  # one vector
    assert sm.trace.storages[installed[0][2]].nbytes == (P, 0, 0)
    timeline = sm.plan(sm.all_params()).timeline
    at_batch = timeline.after_backward @ (1, 32, 0)
    assert at_batch[4] == P  # gradients: the one installed vector, nothing allocated beside it
    # the peak: at aten::sub, the forward's activations and three P-sized vectors (λ·2·F,
    # the parameters_to_vector copy, the difference) beside Fisher and checkpoint
    totals, ops = timeline.totals(32), sm.trace.ops
    k = int(totals.argmax())
    assert ops[k].name == "aten.sub.Tensor" and e.memory.peak_bytes == totals[k] + 2 * P
    penalty = next(i for i, op in enumerate(ops) if op.module == "<step>" and op.name == "aten.mul.Tensor")
    assert totals[k] - totals[penalty - 1] == 3 * P


def test_lwf_has_no_teacher_network_only_its_stored_logits():
    """lwf.py:41-82: the teacher's logits of every training image, computed once at the
    task's start and kept on the host; the step runs the student alone."""
    e, sgd = est(SCENARIOS["lwf"], holdout=None), estimate(SCENARIOS["sgd"])
    assert e.memory.breakdown_bytes["method_state"] == 10_000 * 10 * 4
    assert (e.step.forward_flops, e.step.model_calls) == (sgd.step.forward_flops, 1)
    gpu = est(SCENARIOS["lwf"], holdout=None, device="cuda")
    assert gpu.memory.host_bytes == 10_000 * 10 * 4 and gpu.memory.breakdown_bytes["method_state"] == 0
    clean = est(SCENARIOS["lwf"], impl="costcl", holdout=None)
    assert clean.step.forward_flops == 2 * sgd.step.forward_flops  # PyCIL's: a teacher forward


def test_mammoth_steps_run_on_real_tensors():
    """The same step code runs in costcl's trainer context: the EWC gradients it installs
    are what backward adds into."""
    from lightcl.context import TrainContext
    from costmodel.models.registry import build_model
    torch.manual_seed(0)
    net = build_model("resnet18-cifar", 10, 3, "cpu")
    n = sum(p.numel() for p in net.parameters())
    state = {"ewc.fisher": torch.ones(n), "ewc.anchor": torch.zeros(n)}
    ctx = TrainContext(net, task=1, state=state, tasks=5, classes=10, options={"lambda": 10.0})
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([2, 3])
    methods.get("ewc", "mammoth").step(ctx, x, y)
    flat = net.conv1.weight.grad.untyped_storage()
    assert all(p.grad.untyped_storage().data_ptr() == flat.data_ptr() for p in net.parameters())
    buf = {"x": torch.rand(8, 3, 32, 32), "y": torch.randint(0, 2, (8,)), "logits": torch.randn(8, 10)}
    ctx = TrainContext(net, task=1, buffer=buf, tasks=5, classes=10,
                       options={"alpha": 0.1, "beta": 0.5}, replay_batch=4)
    net.zero_grad(set_to_none=True)
    methods.get("derpp", "mammoth").step(ctx, x, y)
    assert ctx.keep["logits"].shape == (2, 10) and all(p.grad is not None for p in net.parameters())
