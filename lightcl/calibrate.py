"""``costcl calibrate``: this machine's rates, from a short set of micro-benchmarks.

Each rate of :mod:`costmodel.time_profile` is measured on an op of its class at
two sizes (the fastest of seven runs after a warm-up, caches evicted before each), and the two points give
the affine rate ``seconds = fixed_s + amount / per_s`` the time model reads; real
training steps then set the profile's ``fixed_scale`` and ``step_scale``
(:mod:`lightcl.reference_step`).
The sizes are those of the CIFAR-sized networks costcl ships (a 3-channel stem,
16-channel maps at 32x32, 64 at 16x16, 256 at 8x8, a depthwise layer), where the
whole set runs in about half a minute on 2 cores.  Inputs are random in [0, 1):
no subnormal numbers, which would slow a CPU tenfold.
"""
from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from costmodel.errors import CostclError
from costmodel.time_profile import OPTIMIZERS, Rate, TimeProfile, rate_keys

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Bench:
    """One rate's micro-benchmark: runs at two sizes with their amounts."""

    key: str
    runs: tuple[tuple[Callable[[], object], float], ...]
    """(function, amount) pairs: at least two amounts."""


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fastest_seconds(fn: Callable[[], object], device: str, reps: int = 7,
                    min_s: float = 0.002) -> float:
    """Seconds of ``fn``: the fastest of ``reps`` samples, each repeated until it takes
    ``min_s``.  The fastest, not the median: another process on a shared machine only
    ever adds time (a scheduler slice of several milliseconds to a 2-thread op), and
    the profile is this machine's own speed."""
    fn()
    _sync(device)
    inner = 1
    t = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t
    if first < min_s:
        inner = max(1, int(min_s / max(first, 1e-7)))
    samples = []
    for _ in range(reps):
        _evict_caches(device)
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t) / inner)
    return min(samples)


_EVICT: dict[str, torch.Tensor] = {}


def _evict_caches(device: str) -> None:
    """Write 64 MiB before a sample: in a network's step an op finds its inputs and
    weights cold (the layers between evicted them), never hot from its last run."""
    if device != "cpu":
        return
    buf = _EVICT.get(device)
    if buf is None:
        buf = _EVICT[device] = torch.zeros(1 << 24)
    buf.add_(1.0)


def fit_rate(points: list[tuple[float, float]]) -> Rate:
    """Least squares ``seconds = fixed + amount / per_s`` through (amount, seconds);
    a negative fixed part (noise) is 0 with the rate through the largest point."""
    n = len(points)
    mx = sum(a for a, _ in points) / n
    my = sum(s for _, s in points) / n
    var = sum((a - mx) ** 2 for a, _ in points)
    slope = sum((a - mx) * (s - my) for a, s in points) / var if var else 0.0
    fixed = my - slope * mx
    if slope <= 0:
        return Rate(max(my, 0.0), 0.0)
    if fixed < 0:
        a, s = max(points)
        return Rate(0.0, a / s)
    return Rate(fixed, 1 / slope)


def _conv(device: str, shapes: tuple[tuple[int, int, int, int, int, int], ...],
          batch_sizes: tuple[int, int]) -> dict[str, list[tuple[Callable[[], object], float]]]:
    """Forward, input-gradient and weight-gradient runs of each shape
    (c_in, c_out, size, kernel, stride, groups) at each batch size."""
    out: dict[str, list] = {"fwd": [], "bwd_in": [], "bwd_w": []}
    for c_in, c_out, size, k, stride, groups in shapes:
        for b in batch_sizes:
            x = torch.rand(b, c_in, size, size, device=device)
            w = torch.rand(c_out, c_in // groups, k, k, device=device)
            pad = k // 2
            y = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad, groups=groups)
            g = torch.rand_like(y)
            flops = 2.0 * y.numel() * (c_in // groups) * k * k
            grad_w = flops * groups  # FlopCounterMode's rule for grouped convolutions

            def back(mask: list[bool], x=x, w=w, g=g, stride=stride, pad=pad,
                     groups=groups) -> object:
                return torch.ops.aten.convolution_backward(
                    g, x, w, None, [stride, stride], [pad, pad], [1, 1], False, [0, 0], groups,
                    mask)
            out["fwd"].append((lambda x=x, w=w, stride=stride, pad=pad, groups=groups:
                               torch.nn.functional.conv2d(x, w, stride=stride, padding=pad,
                                                          groups=groups), flops))
            out["bwd_in"].append((lambda back=back: back([True, False, False]), flops))
            out["bwd_w"].append((lambda back=back: back([False, True, False]), grad_w))
    return out


CONV_SHAPES = {  # bucket: ((c_in, c_out, size, kernel, stride, groups), ...), batch sizes
    "first": (((3, 64, 32, 3, 1, 1), (3, 16, 32, 3, 1, 1)), (8, 64)),
    "narrow": (((16, 16, 32, 3, 1, 1), (32, 32, 16, 3, 1, 1)), (8, 64)),
    "mid": (((64, 64, 16, 3, 1, 1), (128, 128, 16, 3, 1, 1)), (4, 32)),
    "wide": (((256, 256, 8, 3, 1, 1), (512, 512, 4, 3, 1, 1)), (4, 32)),
    "pointwise": (((128, 256, 16, 1, 1, 1), (32, 192, 16, 1, 1, 1)), (8, 64)),
    "downsample": (((64, 128, 32, 1, 2, 1), (256, 512, 8, 1, 2, 1)), (8, 64)),
    "strided": (((64, 128, 32, 3, 2, 1), (256, 512, 8, 3, 2, 1)), (4, 32)),
    "grouped": (((96, 96, 16, 3, 1, 96), (384, 384, 8, 3, 1, 384)), (8, 64)),
}
"""Two layers of CIFAR-sized networks per bucket, each at two batch sizes: the rate is
the least-squares line through the four points, so one odd layer does not set it."""


def benches(device: str) -> list[Bench]:
    """Every rate's micro-benchmark, in the order they run."""
    out: list[Bench] = []
    for bucket, (shapes, sizes) in CONV_SHAPES.items():
        for phase, runs in _conv(device, shapes, sizes).items():
            out.append(Bench(f"conv.{bucket}.{phase}", tuple(runs)))
    lin = {"fwd": [], "bwd_in": [], "bwd_w": []}
    for m in (8, 256):
        x, w = torch.rand(m, 512, device=device), torch.rand(512, 128, device=device)
        g = torch.rand(m, 128, device=device)
        f = 2.0 * m * 512 * 128
        lin["fwd"].append((lambda x=x, w=w: x @ w, f))
        lin["bwd_in"].append((lambda g=g, w=w: g @ w.t(), f))
        lin["bwd_w"].append((lambda x=x, g=g: x.t() @ g, f))
    out += [Bench(f"linear.{p}", tuple(r)) for p, r in lin.items()]
    sizes = (1 << 14, 1 << 22)  # 64 KiB, and 16 MiB: out of cache, as a batch of maps is
    xs = {n: torch.rand(n, device=device) for n in sizes}
    ys = {n: torch.rand(n, device=device) for n in sizes}
    out.append(Bench("eltwise.fwd", tuple(
        run for n in sizes for run in ((lambda n=n: torch.relu(xs[n]), 8.0 * n),
                                       (lambda n=n: xs[n] + ys[n], 12.0 * n)))))
    out.append(Bench("eltwise.bwd", tuple(
        (lambda n=n: torch.ops.aten.threshold_backward(ys[n], xs[n], 0.0), 8.0 * n)
        for n in sizes)))
    maps = {n: torch.rand(n // 8192, 32, 16, 16, device=device) for n in sizes}
    w64, b64 = torch.ones(32, device=device), torch.zeros(32, device=device)
    rm, rv = torch.zeros(32, device=device), torch.ones(32, device=device)
    out.append(Bench("norm.fwd", tuple(
        (lambda n=n: torch.ops.aten.native_batch_norm(maps[n], w64, b64, rm.clone(), rv.clone(),
                                                      True, 0.1, 1e-5), 8.0 * n) for n in sizes)))
    saved = {n: torch.ops.aten.native_batch_norm(maps[n], w64, b64, None, None, True, 0.1, 1e-5)
             for n in sizes}
    out.append(Bench("norm.bwd", tuple(
        (lambda n=n: torch.ops.aten.native_batch_norm_backward(
            maps[n], maps[n], w64, None, None, saved[n][1], saved[n][2], True, 1e-5,
            [True, True, True]), 8.0 * n) for n in sizes)))
    out.append(Bench("reduce.fwd", tuple(
        (lambda n=n: torch.nn.functional.avg_pool2d(maps[n], 4), 4.0 * (n + n // 16))
        for n in sizes)))
    pooled = {n: torch.rand(n // 8192, 32, 4, 4, device=device) for n in sizes}
    out.append(Bench("reduce.bwd", tuple(
        (lambda n=n: torch.ops.aten.avg_pool2d_backward(pooled[n], maps[n], [4, 4], [4, 4],
                                                        [0, 0], False, True, None),
         4.0 * (n + n // 16)) for n in sizes)))
    out.append(Bench("copy.fwd", tuple((lambda n=n: xs[n].clone(), 8.0 * n) for n in sizes)))
    out.append(Bench("copy.bwd", tuple(
        (lambda n=n: torch.cat([xs[n], ys[n]]), 16.0 * n) for n in sizes)))
    tiny = torch.rand(4, 4, device=device)
    out.append(Bench("view", ((lambda: tiny.view(16), 0.0), (lambda: tiny.t(), 0.0))))
    out.append(Bench("node", tuple((lambda k=k: _chain_backward(k, device), float(k))
                                   for k in (8, 64))))
    out.append(Bench("step", ((_tiny_step(device), 0.0), (_tiny_step(device), 0.0))))
    for name in OPTIMIZERS:
        out.append(Bench(f"optimizer.{name}", (_optimizer_run(name, 64, 256, device),
                                               _optimizer_run(name, 4, 1 << 18, device))))
    if device == "cpu":
        out.append(Bench("alloc", tuple(_fresh_and_reused(n, device) for n in ALLOC_ELEMENTS)))
    return out


ALLOC_ELEMENTS = (9 << 20, 16 << 20)
"""Adds of 36 and 64 MiB outputs: above glibc's mmap threshold, as
:mod:`costmodel.large_allocations` models."""


def _fresh_and_reused(n: int, device: str) -> tuple[Callable[[], object], Callable[[], object], float]:
    """An add into a fresh output and the same add into an existing one, and the
    output's bytes: the difference is the fresh pages' faults."""
    x, y, o = (torch.rand(n, device=device) for _ in range(3))
    return (lambda: x + y), (lambda: torch.add(x, y, out=o)), 4.0 * n  # type: ignore[return-value]


def _chain_backward(k: int, device: str) -> None:
    x = torch.rand(1, device=device, requires_grad=True)
    y = x
    for _ in range(k):
        y = y * 1.0
    y.backward()


def _tiny_step(device: str) -> Callable[[], object]:
    net = torch.nn.Linear(4, 2).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.rand(1, 4, device=device), torch.zeros(1, dtype=torch.long, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return step


def _optimizer_run(name: str, tensors: int, numel: int,
                   device: str) -> tuple[Callable[[], object], float]:
    """An optimizer's step over ``tensors`` parameters of ``numel`` elements: the
    amount is elements; the fixed part, fitted per step, is divided per tensor below."""
    from lightcl.optim import build_optimizer

    params = [torch.nn.Parameter(torch.rand(numel, device=device)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.rand_like(p)
    opt = build_optimizer(name, params)
    opt.step()  # state allocated
    return (opt.step, float(tensors * numel), tensors)  # type: ignore[return-value]


def calibrate(device: str = "cpu", progress: Progress | None = None,
              name: str | None = None, reference: bool = True,
              built: list[Bench] | None = None) -> TimeProfile:
    """Measure every rate on ``device``, then (``reference``) fit the fixed and amount
    scales to real steps (:mod:`lightcl.reference_step`); about 35 s on 2 CPU cores.
    ``built``: :func:`benches` of ``device``, when the caller made them (to count them)."""
    if device not in ("cpu", "cuda"):
        from costmodel.errors import suggest
        raise suggest(device, ["cpu", "cuda"], "device")
    if device == "cuda" and not torch.cuda.is_available():
        raise CostclError("--device cuda, but no CUDA device is visible; use --device cpu")
    tell = progress or (lambda key: None)
    rates: dict[str, Rate] = {}
    for bench in built if built is not None else benches(device):
        tell(bench.key)
        if bench.key.startswith("optimizer."):
            (f_small, a_small, n_small), (f_big, a_big, n_big) = bench.runs  # type: ignore[misc]
            s_small, s_big = fastest_seconds(f_small, device), fastest_seconds(f_big, device)
            # s = n * fixed + a / per_s, two equations
            per_elem = max((s_big - s_small * n_big / n_small) / (a_big - a_small * n_big / n_small),
                           1e-15)
            fixed = max((s_small - a_small * per_elem) / n_small, 0.0)
            rates[bench.key] = Rate(fixed, 1 / per_elem)
            continue
        if bench.key == "alloc":  # bytes per second of fault: output bytes over the extra time
            extra = [(amount, fastest_seconds(fresh, device) - fastest_seconds(reused, device))
                     for fresh, reused, amount in bench.runs]  # type: ignore[misc]
            faulted = sum(a for a, _ in extra)
            rates["alloc"] = Rate(0.0, faulted / max(sum(s for _, s in extra), 1e-9))
            continue
        points = [(amount, fastest_seconds(fn, device)) for fn, amount in bench.runs]
        if bench.key == "node":
            (k1, s1), (k2, s2) = points  # seconds per node: the slope; no fixed part
            rates["node"] = Rate(max((s2 - s1) / (k2 - k1), 0.0))
        elif bench.key in ("view", "step"):
            rates[bench.key] = Rate(min(s for _, s in points))
        else:
            rates[bench.key] = fit_rate(points)
    rates.setdefault("alloc", Rate(0.0))  # CUDA's caching allocator keeps its pages
    missing = set(rate_keys()) - set(rates)
    assert not missing, missing
    where = torch.cuda.get_device_name() if device == "cuda" else (platform.processor()
                                                                    or platform.machine())
    threads = torch.get_num_threads() if device == "cpu" else 0
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source = (f"costcl calibrate on {platform.node()} ({where}, {threads} threads)"
              if device == "cpu" else f"costcl calibrate on {platform.node()} ({where})")
    profile = TimeProfile(name or f"{platform.node()}-{device}", device, True,
                          f"{source}, {when}, torch {torch.__version__}", rates, threads)
    if not reference:
        return profile
    from lightcl.reference_step import measure_scale
    return measure_scale(profile, device, tell)
