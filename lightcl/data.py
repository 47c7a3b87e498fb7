"""Data for the trainer: split into tasks by class, with a seeded class order.

Sources (never downloaded):

* ``synthetic``: seeded random images of the dataset's shape, made on demand
  (for cost validation: learning from noise teaches nothing);
* CIFAR-10/100: the standard python-pickle folder (``cifar-10-batches-py`` or
  ``cifar-100-python``) under ``--data-root``, read by torchvision with
  download off;
* TinyImageNet, ImageNet-100 and custom data: an ImageFolder tree with
  ``train/`` and ``val/`` (or ``test/``); TinyImageNet's own ``val/images`` +
  ``val_annotations.txt`` layout is read as it comes;
* arrays given in Python (tests, notebooks): :func:`from_arrays`.

Images are kept as uint8 (N, C, H, W) on the CPU and turned into normalised
floats batch by batch on the device; synthetic inputs of other ranks (C,L audio,
a flat vector) are uint8 the same way, and token ids (``--input-dtype int64``)
are int64 ids in [0, vocab), passed to the model as they are.  Labels are remapped so that task ``t``
holds labels ``[t*k, (t+1)*k)`` in the class order.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from costmodel.errors import CostclError
from costmodel.scenario import Scenario

CLASS_ORDER_SEED = 1993
"""PyCIL's and MEMO's class-order seed."""


@dataclass
class Split:
    images: torch.Tensor | None
    """uint8 (N, C, H, W), or None for a lazily loaded split."""
    labels: torch.Tensor
    loader: object | None = None
    """For lazily loaded splits: a dataset whose [i] is (uint8 CHW tensor, label)."""

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        if self.images is not None:
            return self.images[idx]
        return torch.stack([self.loader[int(i)] for i in idx])  # type: ignore[index]


@dataclass
class TaskData:
    train: Split
    test: Split
    classes_per_task: int
    tasks: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_order: list[int]

    def task_indices(self, split: Split, task: int) -> torch.Tensor:
        k = self.classes_per_task
        mask = (split.labels >= task * k) & (split.labels < (task + 1) * k)
        return mask.nonzero().flatten()

    def normalize(self, images: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
        """uint8 samples of any rank to normalised floats (per channel: the batch's second
        axis); int64 token ids go to the device unchanged, since an embedding indexes with them."""
        if images.dtype == torch.int64:
            return images.to(device)
        x = images.to(device=device, dtype=dtype) / 255.0
        per_channel = (1, -1, *([1] * (images.dim() - 2)))
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(per_channel)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(per_channel)
        return (x - mean) / std

    def batches(self, split: Split, indices: torch.Tensor, batch_size: int, device: str,
                dtype: torch.dtype, shuffle: bool = True,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = indices[torch.randperm(len(indices), generator=generator)] if shuffle else indices
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield (self.normalize(split.get(idx), device, dtype),
                   split.labels[idx].to(device))


def class_order(classes: int, seed: int | None) -> list[int]:
    if seed is None:
        return list(range(classes))
    return [int(c) for c in np.random.RandomState(seed).permutation(classes)]


def _remap(labels: torch.Tensor, order: list[int]) -> torch.Tensor:
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    return position[labels]


def _holdout(split: Split, fraction: float, seed: int) -> Split:
    """Drop ``fraction`` of the training images (LightCL keeps 10% for validation)."""
    if not fraction:
        return split
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(split), generator=g)[: round(len(split) * (1 - fraction))]
    keep = keep.sort().values
    return Split(split.images[keep] if split.images is not None else None, split.labels[keep],
                 _Subset(split.loader, keep) if split.loader is not None else None)


class _Subset:
    def __init__(self, base: object, idx: torch.Tensor) -> None:
        self.base, self.idx = base, idx

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.base[int(self.idx[i])]  # type: ignore[index]


def _finish(s: Scenario, train: Split, test: Split, mean: tuple, std: tuple,
            seed: int | None, names: list[str] | None = None) -> TaskData:
    if not len(train) or not len(test):
        raise CostclError(f"the data has {len(train)} training and {len(test)} test images; "
                          "both splits need images")
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    if classes != s.classes:
        raise CostclError(f"the data has {classes} classes but the scenario expects {s.classes}; "
                          "set --num-classes or pick the matching --dataset")
    for what, split in (("training", train), ("test", test)):
        counts = torch.bincount(split.labels, minlength=classes)
        if bool((counts == 0).any()):  # a task would train or score on nothing
            c = int((counts == 0).nonzero()[0])
            name = f"class {names[c]!r}" if names else f"class {c}"
            raise CostclError(f"the {what} data has no images of {name} (of {classes} classes); "
                              "add its images or remove the class")
    if classes % s.tasks:
        raise CostclError(f"{classes} classes do not split into {s.tasks} equal tasks; choose --tasks "
                          f"among the divisors of {classes}")
    order = class_order(classes, seed)
    train = Split(train.images, _remap(train.labels, order), train.loader)
    test = Split(test.images, _remap(test.labels, order), test.loader)
    train = _holdout(train, s.holdout or 0.0, seed or 0)
    return TaskData(train, test, classes // s.tasks, s.tasks, mean, std, order)


def from_arrays(s: Scenario, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                test_y: torch.Tensor, seed: int | None = CLASS_ORDER_SEED) -> TaskData:
    """In-memory uint8 images (N, C, H, W) and integer labels."""
    for name, t in (("train_x", train_x), ("test_x", test_x)):
        if t.dtype != torch.uint8 or t.dim() != 4:
            raise CostclError(f"{name} must be uint8 images (N, C, H, W), got {t.dtype} {tuple(t.shape)}")
    mean = tuple(float(v) for v in (train_x.float() / 255).mean(dim=(0, 2, 3)))
    std = tuple(max(1e-3, float(v)) for v in (train_x.float() / 255).std(dim=(0, 2, 3)))
    return _finish(s, Split(train_x, train_y.long()), Split(test_x, test_y.long()), mean, std, seed)


class _Synthetic:
    """Sample ``i`` is drawn from a generator seeded with ``i``: nothing held in memory.
    uint8 pixels (``vocab`` None) or int64 token ids in [0, vocab)."""

    def __init__(self, shape: tuple[int, ...], offset: int, vocab: int | None = None) -> None:
        self.shape, self.offset, self.vocab = shape, offset, vocab

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.offset + int(i))
        if self.vocab is not None:
            return torch.randint(0, self.vocab, self.shape, generator=g, dtype=torch.int64)
        return torch.randint(0, 256, self.shape, generator=g, dtype=torch.uint8)


def synthetic(s: Scenario, per_class: int | None = None, seed: int = 0) -> TaskData:
    n_train = per_class * s.classes if per_class else s.data.train_images
    n_test = max(s.classes, n_train // 5)
    g = torch.Generator().manual_seed(seed)
    vocab = s.vocab if s.input_dtype == "int64" else None
    train = Split(None, torch.randint(0, s.classes, (n_train,), generator=g),
                  _Synthetic(tuple(s.input_shape), seed * 10_000_019, vocab))
    test = Split(None, torch.randint(0, s.classes, (n_test,), generator=g),
                 _Synthetic(tuple(s.input_shape), seed * 10_000_019 + n_train, vocab))
    train.labels[: s.classes] = torch.arange(s.classes)  # every class present
    test.labels[: s.classes] = torch.arange(s.classes)
    return _finish(s, train, test, (0.5,) * s.in_channels, (0.29,) * s.in_channels, None)


_CIFAR_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615)),
                "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
_CIFAR_FOLDERS = {"cifar10": ("cifar-10-batches-py", "data_batch_1..5 and test_batch"),
                  "cifar100": ("cifar-100-python", "train and test")}


def cifar(s: Scenario, root: Path, seed: int | None) -> TaskData:
    import torchvision

    folder, files = _CIFAR_FOLDERS[s.dataset]
    cls = torchvision.datasets.CIFAR10 if s.dataset == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, pickle errors, ...
        if (root / folder).is_dir():  # there, but damaged or incomplete
            raise CostclError(f"cannot read the {s.dataset} pickles in "
                              f"{str(root / folder)!r} ({_one_line(e)}): damaged or incomplete; "
                              f"replace them with the python version's {files}") from None
        raise CostclError(f"no readable {s.dataset} data under {str(root)!r}: expected "
                          f"{folder}/ with {files} (the python version); download is off "
                          f"({type(e).__name__})") from None

    def split(ds: object) -> Split:
        data, targets = ds.data, ds.targets  # type: ignore[attr-defined]
        if data.ndim != 4 or data.shape[3] != 3 or len(targets) != len(data) \
                or min(targets, default=0) < 0:
            raise CostclError(f"the {s.dataset} pickles in {str(root / folder)!r} hold "
                              f"{len(targets)} labels for images of shape {tuple(data.shape)}: "
                              f"damaged; replace them with the python version's {files}")
        x = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
        return Split(x, torch.tensor(targets, dtype=torch.long))

    mean, std = _CIFAR_STATS[s.dataset]
    return _finish(s, split(train), split(test), mean, std, seed)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:160]}" if text else type(e).__name__


def _unreadable(path: str, e: BaseException) -> CostclError:
    return CostclError(f"cannot read image {path!r} in --data-root: {_one_line(e)}; "
                       "remove or replace it")


class _Images:
    def __init__(self, paths: list[str], size: tuple[int, int]) -> None:
        self.paths, self.size = paths, size

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as im:
                im = im.convert("RGB").resize(self.size[::-1])
                return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for damaged files
            raise _unreadable(self.paths[i], e) from None


def scan_images(paths: list[str]) -> None:
    """Open every image's header before anything trains, so an unreadable file is one line
    naming it, not a traceback in task 7.  Headers only: under 0.1 ms a file (85 us on a
    busy 2-core machine), so TinyImageNet's 110,000 images take about ten seconds."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as im:
                if im.width < 1 or im.height < 1:
                    raise ValueError(f"it is {im.width}x{im.height} pixels")
        except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
            raise _unreadable(path, e) from None


def image_folder(s: Scenario, root: Path, seed: int | None) -> TaskData:
    train_dir = root / "train"
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise CostclError(f"expected an image folder tree under {str(root)!r}: train/<class>/*.JPEG "
                          "and val/ (or test/) beside it")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise CostclError(f"{str(train_dir)!r} has no class folders; expected train/<class>/<image>")
    index = {c: i for i, c in enumerate(classes)}
    exts = (".jpeg", ".jpg", ".png", ".bmp")

    def walk(d: Path) -> tuple[list[str], list[int]]:
        paths, labels = [], []
        for c in classes:
            for dirpath, _, files in os.walk(d / c):
                for f in sorted(files):
                    if f.lower().endswith(exts):
                        paths.append(os.path.join(dirpath, f))
                        labels.append(index[c])
        return paths, labels

    train_paths, train_labels = walk(train_dir)
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(classes))
    if train_paths and (counts == 0).any():
        empty = classes[int(np.flatnonzero(counts == 0)[0])]
        raise CostclError(f"class folder {str(train_dir / empty)!r} has no images "
                          f"({', '.join(exts)}); add its images or remove the folder")
    annotations = test_dir / "val_annotations.txt"
    if annotations.exists():  # TinyImageNet's own validation layout
        test_paths, test_labels = [], []
        for line in annotations.read_text().splitlines():
            name, cls, *_ = line.split("\t")
            if cls in index:
                test_paths.append(str(test_dir / "images" / name))
                test_labels.append(index[cls])
    else:
        test_paths, test_labels = walk(test_dir)
    if not train_paths or not test_paths:
        raise CostclError(f"no images found under {str(root)!r} (looked for {', '.join(exts)})")
    size = tuple(s.input_shape[1:])
    data = _finish(s, Split(None, torch.tensor(train_labels), _Images(train_paths, size)),
                   Split(None, torch.tensor(test_labels), _Images(test_paths, size)),
                   (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed, names=classes)
    scan_images(train_paths + test_paths)
    return data


def load(s: Scenario, data_root: str, seed: int | None = CLASS_ORDER_SEED) -> TaskData:
    """The scenario's data: 'synthetic[:N]' (N images per class) or a folder (CIFAR
    pickles, or an ImageFolder tree)."""
    if data_root == "synthetic" or data_root.startswith("synthetic:"):
        n = data_root.partition(":")[2]
        if n and (not n.isdigit() or int(n) < 1):
            raise CostclError(f"malformed --data-root {data_root!r}; write synthetic or synthetic:N "
                              "(N images per class)")
        return synthetic(s, per_class=int(n) if n else None)
    if s.input_dtype == "int64" or len(s.input_shape) != 3:
        what = "token ids" if s.input_dtype == "int64" else f"a {len(s.input_shape)}-size input"
        raise CostclError(f"--data-root {data_root!r}: folders hold images (C,H,W), not {what}; "
                          "train on --data-root synthetic")
    root = Path(data_root).expanduser()
    if not root.exists():
        raise CostclError(f"data folder {str(root)!r} does not exist; give --data-root PATH "
                          "(or --data-root synthetic)")
    if s.dataset in _CIFAR_FOLDERS:
        return cifar(s, root, seed)
    return image_folder(s, root, seed)
