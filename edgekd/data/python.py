"""A torch Dataset from the Python API as a run's data: (image, label) pairs, images float32
(C, H, W) in [0, 1], split three ways as an image folder is (stratified, seeded), and streamed
through a DataLoader like one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edgekd.config import DataConfig, load_recipe
from edgekd.data.datasets import DatasetSplits, split_indices
from edgekd.data.normalise import (
    NO_NORMALISATION_TEXT,
    Normalisation,
    normalisation_for,
)
from edgekd.data.split import Split
from edgekd.errors import UserError


class DatasetImages:
    """The images of `indices` of a torch Dataset, normalised as the teacher's inputs."""

    def __init__(self, dataset: Dataset, indices: np.ndarray, shape: tuple[int, int, int],
                 normalisation: Normalisation | None, key: str):
        self.dataset, self.indices, self._shape = dataset, np.asarray(indices), shape
        self.normalisation, self.key = normalisation, key

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def _image(self, i: int) -> torch.Tensor:
        image = torch.as_tensor(self.dataset[int(self.indices[i])][0], dtype=torch.float32)
        return self.normalisation.apply(image) if self.normalisation is not None else image

    def get(self, index: torch.Tensor) -> torch.Tensor:
        if len(index) == 0:
            return torch.empty((0, *self.shape))
        return torch.stack([self._image(int(i)) for i in index])

    def stream(self, order: torch.Tensor, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]
        loader = DataLoader(_Picker(self), batch_sampler=batches, num_workers=workers,
                            collate_fn=lambda items: (torch.stack([x for x, _ in items]),
                                                      torch.tensor([i for _, i in items])))
        yield from loader

    def fingerprint(self) -> str:
        return self.key

    def take(self, count: int) -> DatasetImages:
        return DatasetImages(self.dataset, self.indices[:count], self._shape, self.normalisation,
                             f"{self.key}:first{count}")


class _Picker(Dataset):
    def __init__(self, images: DatasetImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images._image(i), i


def splits_from_dataset(dataset: Any, *, seed: int = 0, settings: DataConfig | None = None,
                        overrides: list[str] = (), recipe: Any = None) -> DatasetSplits:
    """Train/val/test of a map-style torch Dataset. Labels come from `dataset.targets` when it has
    them (torchvision's convention), else from one pass over the dataset; class names from
    `dataset.classes`, else the label numbers."""
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise UserError(f"data must be a folder or a map-style torch Dataset, got {type(dataset).__name__}")
    settings = settings or load_recipe(recipe, list(overrides)).data
    if len(dataset) < 3:
        raise UserError(f"the dataset has {len(dataset)} samples; it needs at least one per split")
    first = torch.as_tensor(dataset[0][0])
    if first.ndim != 3 or first.dtype not in (torch.float32, torch.float64):
        raise UserError(f"the dataset's images must be float tensors (C, H, W) in [0, 1]; the first is "
                        f"{first.dtype} {tuple(first.shape)}")
    targets = getattr(dataset, "targets", None)
    labels = (np.asarray(targets, dtype=np.int64) if targets is not None
              else np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64))
    classes = [str(name) for name in getattr(dataset, "classes", range(int(labels.max()) + 1))]
    rng = np.random.default_rng(seed)
    train, val, test = split_indices(labels, (settings.val_fraction, settings.test_fraction), rng,
                                     f"the {type(dataset).__name__}")
    shape = tuple(int(v) for v in first.shape)
    normalisation = normalisation_for(settings, shape[0])
    key = hashlib.sha256(f"{type(dataset).__module__}.{type(dataset).__qualname__}|{len(dataset)}|"
                         f"{getattr(dataset, 'fingerprint', '')}|{normalisation}".encode() + labels.tobytes()).hexdigest()

    def split(indices: np.ndarray, name: str) -> Split:
        return Split(DatasetImages(dataset, indices, shape, normalisation, f"{key}:{name}"),
                     torch.from_numpy(labels[indices]), workers=settings.workers)

    return DatasetSplits(name=type(dataset).__name__, classes=classes, train=split(train, "train"),
                         val=split(val, "val"), test=split(test, "test"), source=f"Python {type(dataset).__name__}",
                         preprocessing=normalisation.describe() if normalisation else NO_NORMALISATION_TEXT)
