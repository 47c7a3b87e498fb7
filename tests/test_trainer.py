"""The bundled trainer: learning, checkpoints, resume, bad input."""
from __future__ import annotations

import json

import pytest
import torch

from costmodel import CostclError, Scenario
from lightcl.data import from_arrays, load, synthetic
from lightcl.trainer import CHECKPOINT, RESULTS, Trainer, load_weights


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits, upsampled to 16x16 RGB: 5 tasks of 2 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (torch.tensor(d.images) / 16 * 255).round().to(torch.uint8).unsqueeze(1).repeat(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x.float(), size=16, mode="nearest").to(torch.uint8)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]


def small(method, **kw):
    return Scenario(method=method, model="resnet14-cifar", dataset="cifar10", input_size=(3, 16, 16),
                    tasks=5, epochs=kw.pop("epochs", 6), batch_size=16, holdout=0.0, **kw)


def test_lightcl_and_er_keep_more_old_task_accuracy_than_sgd(digits):
    old = {}
    for method, kw in (("sgd", {}), ("er", {"buffer_size": 100, "replay_batch": 16}),
                       ("lightcl", {"options": {"warmup": True}})):
        s = small(method, **kw)
        result = Trainer(s, from_arrays(s, *digits, seed=None)).run()
        last = result.tasks[-1]
        old[method] = sum(last.cil[:-1]) / 4  # CIL accuracy on the four earlier tasks
    assert old["er"] > old["sgd"] + 0.2
    assert old["lightcl"] > old["sgd"] + 0.1


def test_checkpoint_resume_after_an_interruption(tmp_path):
    s = small("er", epochs=1, buffer_size=20, replay_batch=8)
    data = synthetic(s, per_class=4)

    def stop_in_task_3(info):
        if info["task"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(s, data, out=tmp_path, progress=stop_in_task_3).run()
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # data only, never code
    assert ck["next_task"] == 2 and len(ck["results"]) == 2
    assert json.loads((tmp_path / RESULTS).read_text())["tasks"][1]["task"] == 1
    result = Trainer(s, data, out=tmp_path).run(resume=True)
    assert [t.task for t in result.tasks] == [0, 1, 2, 3, 4]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_resume_without_checkpoint(tmp_path):
    s = small("sgd", epochs=1)
    with pytest.raises(CostclError, match="no checkpoint at"):
        Trainer(s, synthetic(s, per_class=2), out=tmp_path).run(resume=True)


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    from costmodel.models.registry import build_model

    path = tmp_path / "w.pt"
    torch.save(build_model("resnet32-cifar", 10, 3, "cpu").state_dict(), path)
    with pytest.raises(CostclError, match="is for another architecture: .* missing .*unexpected"):
        load_weights(build_model("resnet18-cifar", 10, 3, "cpu"), str(path))
    # the same backbone with another head width loads (the head starts afresh)
    torch.save(build_model("resnet18-cifar", 1000, 3, "cpu").state_dict(), path)
    load_weights(build_model("resnet18-cifar", 10, 3, "cpu"), str(path))


def test_missing_or_malformed_data_folder(tmp_path):
    s = Scenario(method="sgd", dataset="cifar10")
    with pytest.raises(CostclError, match="does not exist"):
        load(s, str(tmp_path / "nope"))
    with pytest.raises(CostclError, match="expected cifar-10-batches-py/ with data_batch_1..5"):
        load(s, str(tmp_path))
    with pytest.raises(CostclError, match="expected an image folder tree"):
        load(Scenario(dataset="tinyimagenet"), str(tmp_path))


def test_cifar_pickles_and_image_folders_load(tmp_path, monkeypatch):
    import pickle

    import numpy as np
    import torchvision
    from PIL import Image

    # torchvision checks the real files' MD5 sums; these tiny stand-ins cannot match them
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                         "labels": [i % 10 for i in range(20)]}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    s = Scenario(method="sgd", dataset="cifar10", tasks=5)
    data = load(s, str(tmp_path))
    assert len(data.train) == 100 and len(data.test) == 20
    assert sorted(set(data.task_indices(data.train, 0).tolist())) and data.classes_per_task == 2

    tree = tmp_path / "folder"
    for split in ("train", "val"):
        for c in range(4):
            (tree / split / f"class{c}").mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                    tree / split / f"class{c}" / f"{i}.png")
    s = Scenario(method="sgd", dataset="tinyimagenet", num_classes=4, tasks=2, input_size=(3, 16, 16))
    data = load(s, str(tree))
    assert data.train.get(torch.tensor([0, 1])).shape == (2, 3, 16, 16)


def test_methods_the_trainer_does_not_run_say_so():
    s = Scenario(method="pnn", setting="task-il")
    with pytest.raises(CostclError, match="costed and validated .* but not trained here"):
        Trainer(s, synthetic(s.replace(tasks=5, model="resnet18-cifar"), per_class=1))


def test_generalizability_after_two_tasks(digits):
    from lightcl.generalizability import analyze

    s = small("sgd", epochs=4)
    g = analyze(s, from_arrays(s, *digits, seed=None))
    names = [layer.layer for layer in g.layers]
    assert names[0] == "conv_1_3x3" and names[-1] == "fc" and "stage_3.4" not in names
    assert "stage_1.0" in names and "stage_2.1" in names
    assert 0.5 < g.new_accuracy <= 1.0
    for layer in g.layers:
        assert -1.0 <= layer.ms <= 1.0 and -1.0 <= layer.lp <= 1.0
    first_bad = g.suggested_train_from
    assert first_bad is None or not next(x for x in g.layers if x.layer == first_bad).generalizes
