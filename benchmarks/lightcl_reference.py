"""costcl's LightCL step against the public LightCL code's step, on this machine.

The reference step is rebuilt from FACTS.md section 1 (it is not the public
code): the same ResNet-18 whose forward returns the logits and a dict of the
four layer-4 maps and the logits, layer 4 and the head trainable, the 15 stored
samples forwarded first, the masked squared-error feature loss and the logit
loss, then the batch of 32 and its task-slice cross-entropy, one backward,
plain SGD over all parameters.

Printed: peak memory of each (storage tracker, fake CPU tensors; FACTS: the
reference peaks at 105.2 MiB) and images per second on real CPU tensors (FACTS:
about 140 images/s on a 2-core CPU), beside a plain SGD step of the same model.
Targets: costcl's step at least as fast and no higher in memory than the
reference, and faster than the SGD step.

Timing on a shared 2-core machine wanders by 15% from run to run, so the three
steps are timed in interleaved rounds and the medians compared.

Run: python benchmarks/lightcl_reference.py [--steps 10] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from costmodel import Scenario  # noqa: E402
from costmodel.models.cifar_resnet import BasicBlock  # noqa: E402
from lightcl.measure import StorageTracker, fake_cpu  # noqa: E402
from lightcl.runner import build_runner  # noqa: E402
from lightcl.validate import measure_cpu_peak  # noqa: E402

MIB = 2**20
BATCH, STORED, BETA, RATIO, CLASSES = 32, 15, 2e-4, 0.15, 10


class _TapBlock(BasicBlock):
    """A BasicBlock that also returns its first ReLU output and its output."""

    def forward(self, x):  # noqa: ANN001, ANN201
        first = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(first))
        out += self.shortcut(x)
        out = F.relu(out)
        return out, [first, out]


class ReferenceResNet(nn.Module):
    """The reference code's model: layer 4 as two named blocks, features returned in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        chans, strides, blocks, inp = [64, 128, 256], [1, 2, 2], [], 64
        for c, s in zip(chans, strides):
            blocks.append(nn.Sequential(BasicBlock(inp, c, s), BasicBlock(c, c, 1)))
            inp = c
        self.layer1, self.layer2, self.layer3 = blocks
        self.layer4_1 = _TapBlock(256, 512, 2)
        self.layer4_2 = _TapBlock(512, 512, 1)
        self.linear = nn.Linear(512, CLASSES)

    def forward(self, x):  # noqa: ANN001, ANN201
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        feats = {}
        out, maps = self.layer4_1(out)
        feats["layer4.0.conv1"], feats["layer4.0.conv2"] = maps
        out, maps = self.layer4_2(out)
        feats["layer4.1.conv1"], feats["layer4.1.conv2"] = maps
        out = F.avg_pool2d(out, int(out.shape[2]))
        out = self.linear(out.view(out.size(0), -1))
        feats["linear"] = out
        return out, feats


def reference_setup(device_ctx=None):  # noqa: ANN001, ANN201
    model = ReferenceResNet()
    grad = False
    for name, p in model.named_parameters():
        grad = grad or name.startswith("layer4_1")
        p.requires_grad_(grad)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stored = torch.rand(STORED, 3, 32, 32)
    with torch.no_grad():
        _, feats = model(stored)
    standard = {k: v.detach() for k, v in feats.items()}
    masks = {k: torch.rand(v.shape[1]) < RATIO for k, v in standard.items() if k != "linear"}
    x = torch.rand(BATCH, 3, 32, 32)
    y = torch.randint(2, 4, (BATCH,))
    return model, opt, stored, standard, masks, x, y


def reference_step(model, opt, stored, standard, masks, x, y, task=1):  # noqa: ANN001, ANN201
    opt.zero_grad()
    reg = 0
    _, feats = model(stored.clone())
    for name, fm in feats.items():
        if name == "linear":
            reg = reg + torch.sum(BETA * ((standard[name] - fm) ** 2))
        else:
            m = masks[name].unsqueeze(1).unsqueeze(1)
            m = m.expand(m.size(0), fm.size(2), fm.size(3)).expand_as(fm)
            reg = reg + torch.sum(BETA * ((fm - standard[name]).mul_(m)) ** 2)
    out, _ = model(x)
    loss = F.cross_entropy(out[:, task * 2:(task + 1) * 2], y - task * 2) + reg
    loss.backward()
    opt.step()
    return loss


def reference_peak() -> int:
    with fake_cpu():
        parts = reference_setup()
        model, opt = parts[0], parts[1]
        tracker = StorageTracker()
        for p in model.parameters():
            tracker.track(p, "parameters")
        for b in model.buffers():
            tracker.track(b, "model_buffers")
        for t in parts[2:]:
            for v in (t.values() if isinstance(t, dict) else [t]):
                tracker.track(v, "inputs")
        hooks = tracker.watch_gradients(model.parameters())
        with tracker.mode:
            for _ in range(2):
                reference_step(*parts)
        for h in hooks:
            h.remove()
    return tracker.peak


def images_per_s(step, images: int, steps: int) -> float:  # noqa: ANN001
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return images * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"threads: {torch.get_num_threads()}, {args.rounds} interleaved rounds of {args.steps} steps")
    ref_mem = reference_peak()
    ours = Scenario(method="lightcl", batch_size=BATCH, buffer_size=STORED)
    our_mem = measure_cpu_peak(ours, fake=True)["peak_bytes"]
    parts = reference_setup()
    runner = build_runner(ours)
    sgd = build_runner(Scenario(method="sgd", batch_size=BATCH))
    rounds: dict[str, list[float]] = {"ref": [], "ours": [], "sgd": []}
    for _ in range(args.rounds):
        rounds["ref"].append(images_per_s(lambda: reference_step(*parts), BATCH + STORED, args.steps))
        rounds["ours"].append(images_per_s(runner.step, BATCH + STORED, args.steps))
        rounds["sgd"].append(images_per_s(sgd.step, BATCH, args.steps))
    ref_speed, our_speed, sgd_speed = (statistics.median(rounds[k]) for k in ("ref", "ours", "sgd"))
    print(f"{'step':34} {'peak MiB':>9} {'images/s':>9} {'s/step':>7}")
    print(f"{'reference LightCL (15 + 32, SGD)':34} {ref_mem / MIB:9.2f} {ref_speed:9.1f} "
          f"{(BATCH + STORED) / ref_speed:7.3f}")
    print(f"{'costcl LightCL (15 + 32, SGD)':34} {our_mem / MIB:9.2f} {our_speed:9.1f} "
          f"{(BATCH + STORED) / our_speed:7.3f}")
    print(f"{'costcl SGD step (32, full model)':34} {'':9} {sgd_speed:9.1f} {BATCH / sgd_speed:7.3f}")
    print("images/s per round: " + "; ".join(f"{k} " + ", ".join(f"{v:.0f}" for v in vals)
                                              for k, vals in rounds.items()))
    ok_mem, ok_speed = our_mem <= ref_mem, our_speed >= ref_speed
    ok_sgd = (BATCH + STORED) / our_speed < BATCH / sgd_speed
    print(f"memory no higher than the reference: {'PASS' if ok_mem else 'FAIL'}; "
          f"at least as fast (median images/s): {'PASS' if ok_speed else 'FAIL'}; "
          f"a LightCL step faster than an SGD step: {'PASS' if ok_sgd else 'FAIL'}")


if __name__ == "__main__":
    main()
