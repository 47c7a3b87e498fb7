"""Checkpoints are data, never code; damaged, foreign or mismatched ones are refused in one
line before anything trains; a resumed run ends exactly as the uninterrupted one."""
from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import lightcl.trainer
from costmodel import CostclError, Scenario
from lightcl import checkpoint as ckpt
from lightcl.data import synthetic
from lightcl.trainer import CHECKPOINT, RESULTS, Trainer, load_weights

TINY = "tinymodels:make"
"""conftest's one-conv factory (the ``tiny_factory`` fixture puts it on the path)."""
SMALL = ["--model", TINY, "--input-size", "3,16,16", "--num-classes", "6",
         "--tasks", "3", "--epochs", "1", "--batch-size", "4", "--buffer-size", "40",
         "--replay-batch", "4", "--holdout", "0", "--data-root", "synthetic:8"]
"""A replay run (the global generator samples the buffer and the reservoir, whose 40 slots
fill in task 3) of 3 tasks x 4 steps, a fraction of a second.  The buffer's float images
(160 KB) are most of the checkpoint, so its middle lies in tensor data."""


@pytest.fixture(autouse=True)
def _tiny(tiny_factory):
    yield


def scenario(method: str = "er") -> Scenario:
    return Scenario(method=method, model=TINY, dataset="cifar10", input_size=(3, 16, 16),
                    num_classes=6, tasks=3, epochs=1, batch_size=4, buffer_size=40, replay_batch=4,
                    holdout=0.0)


def without_clock(path: Path) -> dict:
    d = json.loads(path.read_text())
    for t in d["tasks"]:
        del t["seconds"], t["images_per_s"]
    return d


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


class Interrupted(Trainer):
    """Ctrl-C in the middle of task 2: after its second step."""

    def __init__(self, *args, progress=None, **kw) -> None:
        def stop(info: dict) -> None:
            if info["task"] == 1 and info["step"] == 2:
                raise KeyboardInterrupt
            if progress is not None:
                progress(info)
        super().__init__(*args, progress=stop, **kw)


def one_line_error(r, message: str, code: int = 2) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.fixture
def no_training(monkeypatch):
    """Refusals must come before the first step."""
    def refuse(*a, **k):
        raise AssertionError("trained before refusing")
    monkeypatch.setattr(Trainer, "train_phase", refuse)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, tiny_factory) -> Path:
    """A finished run's folder (checkpoint.pt, results.json) of the CLI's SMALL er scenario."""
    from cli.main import run

    out = tmp_path_factory.mktemp("saved")
    try:
        run(["train", "--method", "er", *SMALL, "--out", str(out), "--json"])
    except SystemExit as e:
        assert not e.code
    return out


# -- resumes are exact -----------------------------------------------------------------
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    s = scenario("er")
    data = synthetic(s, per_class=8)
    Trainer(s, data, out=tmp_path / "a").run()
    with pytest.raises(KeyboardInterrupt):
        Interrupted(s, data, out=tmp_path / "b").run()
    assert len(json.loads((tmp_path / "b" / RESULTS).read_text())["tasks"]) == 1
    Trainer(s, data, out=tmp_path / "b").run(resume=True)
    a, b = without_clock(tmp_path / "a" / RESULTS), without_clock(tmp_path / "b" / RESULTS)
    assert a == b and len(a["tasks"]) == 3
    assert sorted(os.listdir(tmp_path / "b")) == [CHECKPOINT, RESULTS]  # nothing staged left
    # data, never code: a plain weights_only load reads it, marker, seed and all
    raw = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert raw["costcl_checkpoint"] == 1 and raw["seed"] == 0 and raw["next_task"] == 3
    assert len(raw["sha256"]) == 64 and "model" in raw
    fresh = Trainer(s, data).net
    load_weights(fresh, str(tmp_path / "b" / CHECKPOINT))  # usable as --checkpoint too
    assert all(torch.equal(v, raw["model"][k]) for k, v in fresh.state_dict().items())


def test_resume_through_the_cli_equals_the_uninterrupted_run(costcl, tmp_path, monkeypatch):
    args = ["train", "--method", "er", *SMALL, "--json"]
    assert costcl(*args, "--out", str(tmp_path / "a")).returncode == 0
    monkeypatch.setattr(lightcl.trainer, "Trainer", Interrupted)
    r = costcl(*args, "--out", str(tmp_path / "b"))
    one_line_error(r, "the last finished task (1 of 3) is saved", code=130)
    monkeypatch.undo()
    r = costcl(*args, "--out", str(tmp_path / "b"), "--resume")
    assert r.returncode == 0, r.stderr
    assert without_clock(tmp_path / "a" / RESULTS) == without_clock(tmp_path / "b" / RESULTS)


# -- hostile, damaged and foreign checkpoints -----------------------------------------------
class RunsCode:
    """Unpickling calls open(marker, 'w'): a file appears if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_checkpoint_that_would_run_code_is_refused_and_does_not_run(costcl, tmp_path, how,
                                                                     no_training):
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    out.mkdir()
    evil = {"costcl_checkpoint": 1, "model": RunsCode(marker)}
    if how == "torch.save":
        torch.save(evil, out / CHECKPOINT)
    else:
        (out / CHECKPOINT).write_bytes(pickle.dumps(evil))
    r = costcl("train", "--method", "er", *SMALL, "--out", str(out), "--resume")
    one_line_error(r, "is not a readable checkpoint")
    assert not marker.exists()


def _damaged(kind: str, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "garbage":
        return bytes(range(256)) * 64
    if kind == "empty":
        return b""
    if kind == "overwritten":  # 4 KiB in the middle, as a bad sector or a partial copy would
        middle = len(good) // 2
        return good[:middle] + b"\xa5" * 4096 + good[middle + 4096:]
    buf = io.BytesIO()
    if kind == "bare state dict":
        torch.save(torch.load(io.BytesIO(good), weights_only=True)["model"], buf)
    elif kind == "foreign pickle":
        torch.save({"epoch": 3, "weights": [1.0, 2.0]}, buf)
    elif kind == "newer format":
        raw = torch.load(io.BytesIO(good), weights_only=True)
        torch.save(raw | {"costcl_checkpoint": 2}, buf)
    return buf.getvalue()


DAMAGE = [("truncated", "is not a readable checkpoint (truncated or damaged zip archive)"),
          ("garbage", "is not a readable checkpoint"),
          ("empty", "is empty"),
          ("overwritten", "is damaged: its SHA-256 does not match"),
          ("bare state dict", "is not a costcl checkpoint (no 'costcl_checkpoint' key: a bare state dict)"),
          ("foreign pickle", "is not a costcl checkpoint (no 'costcl_checkpoint' key: another tool's file)"),
          ("newer format", "upgrade costcl")]


@pytest.mark.parametrize("kind,message", DAMAGE, ids=[k for k, _ in DAMAGE])
def test_a_damaged_or_foreign_checkpoint_is_refused_before_training(costcl, tmp_path, saved_run,
                                                                    kind, message, no_training):
    good = (saved_run / CHECKPOINT).read_bytes()
    assert len(good) > 100_000  # the 4 KiB land inside the weights
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(_damaged(kind, good))
    before = files(tmp_path)
    r = costcl("train", "--method", "er", *SMALL, "--out", str(out), "--resume")
    one_line_error(r, message)
    assert str(out / CHECKPOINT) in r.stderr and "--resume" in r.stderr
    assert files(tmp_path) == before  # nothing written, nothing removed


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "overwritten"])
def test_initial_weights_that_are_damaged_are_one_line(costcl, tmp_path, saved_run, kind,
                                                       no_training):
    weights = tmp_path / "w.pt"
    weights.write_bytes(_damaged(kind, (saved_run / CHECKPOINT).read_bytes()))
    r = costcl("train", "--method", "er", *SMALL, "--out", str(tmp_path / "out"),
               "--checkpoint", str(weights))
    one_line_error(r, str(weights))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--epochs", "2", "trained with epochs=1, this command says epochs=2"),
    ("--seed", "1", "trained with seed=0, this command says seed=1"),
    ("--buffer-size", "8", "trained with buffer-size=40, this command says buffer-size=8"),
    ("--data-root", "synthetic:9", "train-images=48, this command says train-images=54"),
])
def test_a_resume_with_another_scenario_seed_or_data_is_refused(costcl, tmp_path, saved_run, flag,
                                                                value, message, no_training):
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT).write_bytes((saved_run / CHECKPOINT).read_bytes())
    before = files(tmp_path)
    args = [a for a in SMALL]
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    r = costcl("train", "--method", "er", *args, "--out", str(out), "--resume")
    one_line_error(r, message)
    assert "rerun with the same flags or a new --out" in r.stderr
    assert files(tmp_path) == before


# -- a run that fails midway ------------------------------------------------------------------
def test_a_failure_midway_keeps_the_last_good_checkpoint(costcl, tmp_path, monkeypatch):
    phase = Trainer.train_phase

    def fail_in_task_2(self, task, *a, **k):
        if task == 1:
            raise CostclError("cannot read image 'x.png' in --data-root: OSError; remove or replace it")
        return phase(self, task, *a, **k)

    monkeypatch.setattr(Trainer, "train_phase", fail_in_task_2)
    out = tmp_path / "out"
    r = costcl("train", "--method", "er", *SMALL, "--out", str(out))
    one_line_error(r, "tasks 1-1 are saved in")
    assert sorted(os.listdir(out)) == [CHECKPOINT, RESULTS]  # no staging file left
    assert len(json.loads((out / RESULTS).read_text())["tasks"]) == 1
    assert ckpt.read(out / CHECKPOINT).next_task == 1


def test_a_failed_checkpoint_write_is_one_line_and_leaves_the_previous_one(tmp_path, monkeypatch):
    s = scenario("er")
    data = synthetic(s, per_class=8)
    trainer = Trainer(s, data, out=tmp_path)
    trainer.run()
    before = files(tmp_path)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(CostclError, match="cannot write the checkpoint .*No space left on device"):
        trainer.save()
    assert files(tmp_path) == before


# -- the output folder and the data, checked up front -------------------------------------------
def test_an_out_that_cannot_hold_the_run_is_refused_before_training(costcl, tmp_path, no_training):
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    cases = [(a_file, "is a file, not a folder"),
             (a_file / "run", "goes through the file")]
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        cases.append((locked / "run", "is not writable"))
    before = files(tmp_path)
    try:
        for out, message in cases:
            r = costcl("train", "--method", "er", *SMALL, "--out", str(out))
            one_line_error(r, message)
    finally:
        (tmp_path / "locked").exists() and (tmp_path / "locked").chmod(0o755)
    assert files(tmp_path) == before


def _tree(root: Path, classes: int = 4, per_class: int = 2) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                    root / split / f"class{c}" / f"{i}.png")
    return root


FOLDER = ["--method", "sgd", "--dataset", "tinyimagenet", "--num-classes", "4", "--tasks", "2",
          "--input-size", "3,16,16", "--epochs", "1", "--batch-size", "4"]


def test_bad_data_is_one_line_before_training(costcl, tmp_path, no_training):
    tree = _tree(tmp_path / "tree")
    (tree / "train" / "class2" / "1.png").write_bytes(b"not an image at all")
    empty = tmp_path / "empty"
    empty.mkdir()
    few = _tree(tmp_path / "few", classes=3)
    hollow = _tree(tmp_path / "hollow")
    for f in (hollow / "train" / "class3").iterdir():
        f.unlink()
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(b"\x80\x04garbage")
    cases = [
        (FOLDER, tree, f"cannot read image {str(tree / 'train' / 'class2' / '1.png')!r} in "
                       "--data-root: UnidentifiedImageError"),
        (FOLDER, empty, "expected an image folder tree"),
        (FOLDER, few, "the data has 3 classes but the scenario expects 4"),
        (FOLDER, hollow, "class3' has no images"),
        (["--method", "sgd", "--dataset", "cifar10"], cifar.parent,
         "cannot read the cifar10 pickles in"),
    ]
    for flags, root, message in cases:
        out = tmp_path / "out"
        r = costcl("train", *flags, "--data-root", str(root), "--out", str(out))
        one_line_error(r, message)
        assert "remove or replace it" in r.stderr or root != tree
        assert not out.exists()


def test_fp16_on_the_cpu_warns_at_once(costcl, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("")
    r = costcl("train", "--method", "er", *SMALL, "--dtype", "fp16", "--out", str(a_file))
    lines = r.stderr.strip().splitlines()
    assert lines[0] == ("costcl: warning: fp16 on the CPU is emulated and very slow; use --dtype "
                        "bf16 (or fp32) on the CPU")
    assert r.returncode == 2 and "is a file, not a folder" in lines[1] and len(lines) == 2
    r = costcl("train", "--method", "er", *SMALL, "--dtype", "bf16", "--out", str(a_file))
    assert "warning" not in r.stderr


def test_the_format_round_trips_and_notices_any_change():
    payload = ckpt.RunCheckpoint(
        scenario={"method": "er", "input_size": (3, 16, 16)}, seed=0, data={}, next_task=1,
        model={"w": torch.arange(6, dtype=torch.bfloat16).view(2, 3)[:, 1]},
        state={"mask": torch.tensor([True, False])}, memory={"images": None}, results=[],
        rng={"x": 0.5}).payload()
    assert payload["model"]["w"].untyped_storage().nbytes() == 4  # a view is saved alone
    assert payload["scenario"]["input_size"] == [3, 16, 16]
    buf = io.BytesIO()
    torch.save({"costcl_checkpoint": 1, "sha256": ckpt.digest(payload), **payload}, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert ckpt.verify(loaded, "x", "fix")["model"]["w"].tolist() == [1.0, 4.0]
    loaded["state"]["mask"][1] = True
    with pytest.raises(CostclError, match="is damaged"):
        ckpt.verify(loaded, "x", "fix")
    with pytest.raises(TypeError, match="weights_only load cannot read"):
        ckpt.plain({"teacher": torch.nn.Linear(1, 1)})


def test_a_field_added_since_the_checkpoint_counts_at_its_default():
    """A checkpoint written before input_dtype and vocab existed resumes a run that leaves
    them at their defaults, and refuses one that sets them."""
    old = ckpt.RunCheckpoint(scenario={"method": "er", "batch_size": 4}, seed=0, data={},
                             next_task=1, model={}, state={}, memory={}, results=[], rng={})
    now = {"method": "er", "batch_size": 4, "input_dtype": "float", "vocab": None}
    assert old.first_difference(now, 0, {}) is None
    assert old.first_difference({**now, "input_dtype": "int64", "vocab": 100}, 0, {}) == \
        ("input-dtype", None, "int64")
    assert old.first_difference({**now, "batch_size": 8}, 0, {}) == ("batch-size", 4, 8)
