"""The datasets continual-learning papers split into tasks.

Only shapes and counts live here: costcl never downloads data.  Training-image
counts are the standard training splits (a method that holds some out for
validation says so through ``Scenario.holdout``).
"""
from __future__ import annotations

from dataclasses import dataclass

from costmodel.errors import suggest


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    input_shape: tuple[int, int, int]
    classes: int
    train_images: int
    tasks: int
    epochs: int
    """Epochs per task when neither the user nor the method says otherwise."""
    description: str

    @property
    def exemplar_bytes(self) -> int:
        """One stored image as uint8 (MEMO's accounting): H x W x C bytes."""
        c, h, w = self.input_shape
        return c * h * w


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in (
        DatasetSpec("cifar10", (3, 32, 32), 10, 50_000, 5, 50, "CIFAR-10, Split into 5 tasks of 2 classes"),
        DatasetSpec("cifar100", (3, 32, 32), 100, 50_000, 10, 50, "CIFAR-100, 10 tasks of 10 classes"),
        DatasetSpec("tinyimagenet", (3, 64, 64), 200, 100_000, 10, 100,
                    "Tiny ImageNet (64x64), 10 tasks of 20 classes"),
        DatasetSpec("imagenet100", (3, 224, 224), 100, 130_000, 10, 50,
                    "ImageNet-100 (224x224, about 1,300 images per class), 10 tasks"),
        DatasetSpec("imagenet32", (3, 32, 32), 1000, 1_281_167, 10, 50,
                    "ImageNet 32x32 (downsampled ImageNet-1k), 10 tasks"),
    )
}


def dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise suggest(name, DATASETS, "dataset") from None
