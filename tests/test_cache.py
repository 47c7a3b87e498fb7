"""The trace and answer cache: warm answers equal cold ones, bad entries are rebuilt.

Every test points COSTCL_CACHE_DIR at its own folder (the session's, from
conftest, is shared by the rest of the suite).  Small models keep it fast.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.cache_commands import ANSWER_PACKAGES
from costmodel import Scenario, cache, engine
from costmodel.estimation import estimate
from costmodel.trace import serialize

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh cache folder, and a process that has traced nothing yet."""
    d = tmp_path / "cache"
    monkeypatch.setenv("COSTCL_CACHE_DIR", str(d))
    monkeypatch.delenv("COSTCL_NO_CACHE", raising=False)
    forget()
    yield d
    forget()


def forget() -> None:
    """What a new process would have: no traces in memory."""
    engine._TRACES.clear()
    engine._WORKS.clear()


def no_tracing(monkeypatch) -> None:
    """From here on, a trace must come from the disk."""
    def refuse(*args, **kwargs):
        raise AssertionError("traced again: the disk cache was not used")
    monkeypatch.setattr(engine, "_trace_method", refuse)


def entries(d: Path, kind: str = "traces") -> list[Path]:
    return sorted((d / kind).glob("*.json.gz"))


def no_trace_reads(monkeypatch) -> None:
    """From here on, an estimate must come from ``results/`` without reading a trace."""
    def refuse(*args, **kwargs):
        raise AssertionError("a trace was read: the stored estimate was not used")
    monkeypatch.setattr(engine, "_cached_trace", refuse)


def cold_then_warm(s: Scenario, monkeypatch, cache_dir: Path, **kw) -> tuple[dict, dict, dict]:
    """The estimate traced, then read back as a whole, then recomputed from stored traces."""
    forget()
    cold = estimate(s, **kw)
    forget()
    with monkeypatch.context() as m:
        no_trace_reads(m)
        whole = estimate(s, **kw)
    assert whole == cold
    for p in entries(cache_dir, "results"):
        p.unlink()
    forget()
    with monkeypatch.context() as m:
        no_tracing(m)
        from_traces = estimate(s, **kw)
    return cold.to_json(), whole.to_json(), from_traces.to_json()


CASES = [
    Scenario(method="lightcl", model="resnet14-cifar", tasks=2),
    Scenario(method="der", model="conv2"),
    Scenario(method="ewc", model="conv2", optimizer="adam"),
    Scenario(method="icarl", model="resnet14-cifar", tasks=2),
    Scenario(method="memo", model="resnet14-cifar", tasks=2),
    Scenario(method="sgd", model="conv2", train_from="blocks.1", dtype="fp16"),
]


@pytest.mark.parametrize("s", CASES, ids=lambda s: f"{s.method}-{s.model}")
def test_a_warm_estimate_equals_the_cold_one(s, cache_dir, monkeypatch):
    cold, whole, from_traces = cold_then_warm(s, monkeypatch, cache_dir, layers=True)
    assert entries(cache_dir)
    assert json.dumps(cold, sort_keys=True) == json.dumps(whole, sort_keys=True)
    assert json.dumps(cold, sort_keys=True) == json.dumps(from_traces, sort_keys=True)


@pytest.mark.parametrize("s", CASES[:3], ids=lambda s: f"{s.method}-{s.model}")
def test_a_stored_trace_decodes_to_the_traced_one(s, cache_dir):
    """What the typed encoder stores comes back equal, record for record, through JSON."""
    from costmodel import methods

    resolved = methods.resolve(s)
    sm = engine._trace_method(resolved, methods.get(resolved.method, resolved.impl), "main")
    payload = serialize.encode_step(sm.trace, sm.state_bytes, sm.anomaly, sm.prepared_trainable)
    assert payload is not None
    back = serialize.decode_step(json.loads(json.dumps(payload)))
    assert back == (sm.trace, dict(sm.state_bytes), sm.anomaly, sm.prepared_trainable)
    assert len(sm.trace.ops) > 10


def test_what_would_not_come_back_equal_is_not_stored():
    from costmodel.trace.records import Segment

    for tp, value in [(int, True), (int, 2.0), (tuple[int, ...], [1, 2]), (list[int], (1, 2)),
                      (float, float("nan")), (str, None), (Segment, (1, 2)),
                      (dict[str, int], {1: 2}), (tuple[int, int, int], (1, 2))]:
        with pytest.raises(serialize.DecodeError):
            serialize.encoder(tp)(value)
    assert serialize.encoder(tuple[int, ...])((1, 2)) == [1, 2]
    assert serialize.encoder(frozenset[str] | None)(frozenset({"b", "a"})) == ["a", "b"]
    assert serialize.decoder(Segment)(serialize.encoder(Segment)(Segment(3, 4))) == Segment(3, 4)


def test_the_paper_convention_and_a_sweep_are_remembered(cache_dir, monkeypatch):
    from budgets.curves import batch_curves, exemplar_curves

    s = Scenario(model="conv2", batch_size=8)
    names = ["sgd", "er"]

    def compute() -> tuple:
        return (estimate(s.replace(method="der"), convention="paper"),
                batch_curves(s, names, (1, 2, 4)), exemplar_curves(s, names, [5.0, 50.0]))
    cold = compute()
    forget()
    with monkeypatch.context() as m:
        no_trace_reads(m)
        assert compute() == cold


def test_a_user_factory_is_cached_by_its_source(cache_dir, monkeypatch, tiny_factory):
    s = Scenario(method="er", model=f"{tiny_factory}:make", input_size=(3, 16, 16),
                 num_classes=10)
    cold, whole, from_traces = cold_then_warm(s, monkeypatch, cache_dir)
    assert cold == whole == from_traces
    # editing the factory's module is a different model: traced again, not read back
    module = Path(sys.modules[tiny_factory].__file__)
    before = cache.model_source(s.model)
    module.write_text(module.read_text() + "\n# edited\n")
    try:
        assert cache.model_source(s.model) != before
        forget()
        n, m = len(entries(cache_dir)), len(entries(cache_dir, "results"))
        estimate(s)
        assert len(entries(cache_dir)) > n and len(entries(cache_dir, "results")) > m
    finally:
        module.write_text(module.read_text().replace("\n# edited\n", ""))


def _rewrite(path: Path, change) -> None:  # noqa: ANN001
    head, _, body = gzip.decompress(path.read_bytes()).partition(b"\n")
    header = json.loads(head)
    head, body = change(header, body)
    path.write_bytes(gzip.compress(json.dumps(head).encode() + b"\n" + body))


def _body(body: bytes, header: dict) -> tuple[dict, bytes]:
    import hashlib
    return header | {"sha256": hashlib.sha256(body).hexdigest()}, body


CORRUPTIONS = {
    "garbage": lambda p: p.write_bytes(os.urandom(300)),
    "empty": lambda p: p.write_bytes(b""),
    "truncated-gzip": lambda p: p.write_bytes(p.read_bytes()[:40]),
    "truncated-json": lambda p: _rewrite(p, lambda h, b: _body(b[: len(b) // 2], h)),
    "flipped-digit": lambda p: _rewrite(p, lambda h, b: (h, b.replace(b"1", b"2", 1))),
    "wrong-schema": lambda p: _rewrite(p, lambda h, b: _body(b'{"trace": [1, 2, 3]}', h)),
    "wrong-types": lambda p: _rewrite(p, lambda h, b: _body(b.replace(b"[", b'["x",', 1), h)),
    "index-out-of-range": lambda p: _rewrite(p, lambda h, b: _body(
        json.dumps(_bad_index(json.loads(b))).encode(), h)),
    "other-torch": lambda p: _rewrite(p, lambda h, b: (
        h | {"versions": h["versions"] | {"torch": "1.0.0"}}, b)),
    "other-costcl": lambda p: _rewrite(p, lambda h, b: (
        h | {"versions": h["versions"] | {"costcl": "0.0.1"}}, b)),
    "other-source": lambda p: _rewrite(p, lambda h, b: (
        h | {"versions": h["versions"] | {"source": "0" * 20}}, b)),
    "other-schema": lambda p: _rewrite(p, lambda h, b: (h | {"schema": cache.SCHEMA + 1}, b)),
    "other-key": lambda p: _rewrite(p, lambda h, b: (h | {"key": "0" * 64}, b)),
}


def _bad_index(payload: dict | list) -> dict | list:
    if isinstance(payload, dict):  # a trace: the first op's inputs are storage ids
        payload["trace"][0][0][2] = [10**6]
    else:  # an estimate: its step's FLOPs become text
        payload[3][0] = "many"
    return payload


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_bad_or_foreign_entry_is_rebuilt_not_trusted(how, cache_dir, monkeypatch):
    s = Scenario(method="ewc", model="conv2")
    forget()
    cold = estimate(s).to_json()
    traces, results = entries(cache_dir), entries(cache_dir, "results")
    assert traces and results
    store = cache.store("traces")
    for p in traces + results:
        CORRUPTIONS[how](p)
    assert not any(readable(store, p) for p in traces)
    forget()
    assert estimate(s).to_json() == cold  # traced again ...
    assert all(readable(store, p) for p in traces)  # ... and the entries overwritten
    forget()
    with monkeypatch.context() as m:  # the estimate too
        no_trace_reads(m)
        assert estimate(s).to_json() == cold


def readable(store: cache.Store, p: Path) -> bool:
    """Whether the engine would use the entry: it loads, and decodes into a step."""
    payload = store.load(p.name.removesuffix(".json.gz"), cache.versions())
    try:
        return payload is not None and bool(serialize.decode_step(payload))
    except serialize.DecodeError:
        return False


def test_a_store_never_raises_and_versions_are_checked(tmp_path):
    store = cache.Store(tmp_path, "traces")
    v = cache.versions()
    assert store.save("k", v, {"a": [1, 2]})
    assert store.load("k", v) == {"a": [1, 2]}
    assert store.load("k", cache.Versions(v.costcl, v.source, "9.9", v.torchvision)) is None
    assert store.load("missing", v) is None
    blocked = cache.Store(tmp_path / "file", "traces")
    (tmp_path / "file").write_text("not a folder")
    assert not blocked.save("k", v, {"a": 1})


def test_the_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("COSTCL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.location() == tmp_path / "xdg" / "costcl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.location() == tmp_path / "home" / ".cache" / "costcl"
    monkeypatch.setenv("COSTCL_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.location() == tmp_path / "mine"
    monkeypatch.setenv("COSTCL_NO_CACHE", "1")
    assert cache.active_root() is None and cache.store("traces") is None
    monkeypatch.setenv("COSTCL_NO_CACHE", "0")
    assert cache.active_root() == tmp_path / "mine"
    with cache.disabled():
        assert cache.active_root() is None
    assert cache.active_root() == tmp_path / "mine"


# -- the command line -------------------------------------------------------------

ARGS = ["estimate", "--model", "conv2", "--method", "der", "--batch-size", "8"]


@pytest.mark.parametrize("extra", [[], ["--layers"], ["--json"], ["--format", "csv"],
                                   ["--format", "csv", "--layers"], ["--convention", "paper"]])
def test_a_repeated_estimate_prints_the_same_bytes_from_the_answer_cache(
        extra, cache_dir, costcl, monkeypatch):
    cold = costcl(*ARGS, *extra)
    assert cold.returncode == 0, cold.stderr
    assert entries(cache_dir, "answers")
    forget()
    import costmodel.estimation

    with monkeypatch.context() as m:  # a hit computes nothing
        m.setattr(costmodel.estimation, "estimate", lambda *a, **k: pytest.fail("recomputed"))
        warm = costcl(*ARGS, *extra)
    assert warm.returncode == 0 and warm.stdout == cold.stdout


def test_a_trace_warm_estimate_prints_what_a_cold_one_does(cache_dir, costcl, monkeypatch):
    cold = costcl(*ARGS, "--layers")
    cache.clear(cache_dir)  # nothing stored: everything again
    forget()
    again = costcl(*ARGS, "--layers")
    forget()
    for p in entries(cache_dir, "answers") + entries(cache_dir, "results"):
        p.unlink()
    with monkeypatch.context() as m:  # answers and estimates gone, traces kept
        no_tracing(m)
        warm = costcl(*ARGS, "--layers")
    assert cold.stdout == again.stdout == warm.stdout


def test_a_config_file_is_part_of_the_answer_key(cache_dir, costcl, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('model = "conv2"\nmethod = "der"\nbatch_size = 4\n')
    first = costcl("estimate", "--json", "--config", str(cfg))
    cfg.write_text('model = "conv2"\nmethod = "der"\nbatch_size = 6\n')
    second = costcl("estimate", "--json", "--config", str(cfg))
    assert json.loads(first.stdout)["scenario"]["batch_size"] == 4
    assert json.loads(second.stdout)["scenario"]["batch_size"] == 6


def test_a_corrupt_answer_is_recomputed(cache_dir, costcl):
    cold = costcl(*ARGS, "--json")
    for p in entries(cache_dir, "answers"):
        p.write_bytes(b"\x1f\x8b garbage")
    assert costcl(*ARGS, "--json").stdout == cold.stdout
    assert cache.store("answers").load(entries(cache_dir, "answers")[0].name[:-8],
                                       cache.versions(ANSWER_PACKAGES)) is not None


def test_no_cache_writes_nothing(cache_dir, costcl, monkeypatch):
    assert costcl(*ARGS, "--json", "--no-cache").returncode == 0
    assert not cache_dir.exists()
    forget()
    monkeypatch.setenv("COSTCL_NO_CACHE", "1")
    assert costcl(*ARGS, "--json").returncode == 0
    assert not cache_dir.exists()


def test_an_unwritable_cache_is_no_cache(tmp_path, costcl, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("COSTCL_CACHE_DIR", str(blocker / "cache"))
    forget()
    r = costcl(*ARGS, "--json")
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)
    assert costcl("cache", "info").returncode == 0


def test_cache_info_and_clear(cache_dir, costcl):
    costcl(*ARGS, "--json")
    (cache_dir / "keep.txt").write_text("not ours")
    info = json.loads(costcl("cache", "info", "--json").stdout)
    kinds = {k["kind"]: k for k in info["kinds"]}
    assert info["location"] == str(cache_dir) and info["enabled"]
    assert kinds["traces"]["entries"] >= 1 and kinds["answers"]["entries"] == 1
    assert all(k["current"] == k["entries"] for k in kinds.values())
    assert kinds["results"]["entries"] >= 1
    assert info["size_bytes"] == sum(p.stat().st_size for k in cache.KINDS
                                     for p in entries(cache_dir, k))
    text = costcl("cache", "info").stdout
    assert str(cache_dir) in text and "traces:" in text and "torch" in text
    assert "other versions" not in text
    r = costcl("cache", "clear")
    assert r.returncode == 0
    assert r.stdout.strip() == (f"removed {info['entries']} entries "
                                f"({info['size_bytes'] / 1024:.1f} KiB) from {cache_dir}")
    assert not entries(cache_dir) and not entries(cache_dir, "answers")
    assert (cache_dir / "keep.txt").exists()
    assert costcl("cache", "clear").stdout.startswith("removed 0 entries (0 bytes)")


def test_a_warm_estimate_does_not_import_torch(cache_dir, costcl):
    """A hit in a fresh process imports neither torch nor numpy.

    The answer is computed here (a subprocess would import torch just to fill the
    cache) and stored by a torch-free subprocess under its own terminal's key,
    through the same :func:`remember` the command uses."""
    args = ARGS + ["--json"]
    cold = costcl(*args).stdout
    env = dict(os.environ, COSTCL_CACHE_DIR=str(cache_dir))
    fill = ("from cli import cache_commands as c\n"
            f"with c.answering({args!r}) as hit:\n"
            f"    assert not hit\n    c.remember({cold!r}, 'conv2')\n")
    check = ("import sys\nfrom cli.main import run\n"
             f"run({args!r})\n"
             "assert 'torch' not in sys.modules, 'torch was imported'\n"
             "assert 'numpy' not in sys.modules, 'numpy was imported'\n")
    for attempt in range(3):  # a source file edited between the two runs is a (correct) miss
        for code in (fill, check):
            r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                               capture_output=True, text=True)
        if r.returncode == 0:
            break
    assert r.returncode == 0, r.stderr
    assert r.stdout == cold
