"""One split of a dataset: labels in memory, images where they are.

A small dataset (the embedded digits, an IDX folder) keeps its images as one tensor. An image
folder keeps only its file list: images are decoded per batch by a torch DataLoader with worker
processes, so memory does not grow with the dataset. Both answer the same calls:

- `batches(batch_size, shuffle=..., generator=..., shard=...)` yields (images, labels, sample
  indices); with a `Shard`, only one torchrun rank's part of the order;
- `images(index)` decodes chosen samples; `head(n)` the first n (calibration, proxies, examples);
- `subset(n)`, `fingerprint()` (what the caches are keyed by), `input_shape`.

Images are float32 (C, H, W) in [0, 1]: normalisation belongs to the model's input adapter
(edgekd/models/input_adapter.py), so every stage and every artifact sees the same pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from edgekd.errors import UserError
from edgekd.io import fingerprint_tensor

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, labels, sample indices


class ImageSource(Protocol):
    """Where a split's images come from."""

    def __len__(self) -> int: ...
    def get(self, index: torch.Tensor) -> torch.Tensor: ...  # (B, C, H, W) float32 in [0, 1]
    def stream(self, order: torch.Tensor, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def fingerprint(self) -> str: ...
    def take(self, count: int) -> ImageSource: ...

    @property
    def shape(self) -> tuple[int, int, int]: ...


@dataclass(frozen=True)
class Shard:
    """One torchrun rank's part of every epoch's order, as torch's DistributedSampler takes it:
    all ranks draw the same permutation and rank r takes positions r, r + size, r + 2 * size, ...
    `equal` (training) first drops the last len % size positions, so the shards are disjoint and
    every rank takes the same number of steps (a different few samples sit out each epoch);
    without it (evaluation) every sample is in exactly one shard."""

    rank: int
    size: int
    equal: bool = True

    def __post_init__(self):
        if not 0 <= self.rank < self.size:
            raise ValueError(f"shard rank {self.rank} outside 0..{self.size - 1}")

    def of(self, order: torch.Tensor) -> torch.Tensor:
        if self.equal:
            order = order[: len(order) - len(order) % self.size]
        return order[self.rank :: self.size]

    def length(self, count: int) -> int:
        """How many of `count` samples this shard holds."""
        return len(self.of(torch.arange(count)))


class TensorImages:
    """Images already in memory (N, C, H, W): batches are slices, no worker needed."""

    def __init__(self, x: torch.Tensor):
        if x.ndim != 4:
            raise ValueError(f"TensorImages needs (N, C, H, W), got {tuple(x.shape)}")
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def get(self, index: torch.Tensor) -> torch.Tensor:
        return self.x[index]

    def stream(self, order: torch.Tensor, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield self.x[index], index

    def fingerprint(self) -> str:
        return fingerprint_tensor(self.x)

    def take(self, count: int) -> TensorImages:
        return TensorImages(self.x[:count])


class Split:
    """A split's labels (in memory) and images (an ImageSource)."""

    def __init__(self, images: ImageSource | torch.Tensor, y: torch.Tensor, *, workers: int = 0):
        self.source: ImageSource = TensorImages(images) if isinstance(images, torch.Tensor) else images
        self.y = torch.as_tensor(y, dtype=torch.int64)
        self.workers = workers  # DataLoader worker processes for sources that decode files
        if self.y.ndim != 1 or len(self.source) != len(self.y):
            raise ValueError(f"Split needs as many labels as images; got {len(self.source)} images and "
                             f"labels of shape {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def x(self) -> torch.Tensor:
        """Every image as one tensor: only for splits held in memory (a file-backed split would
        decode the whole dataset; use batches())."""
        if not isinstance(self.source, TensorImages):
            raise TypeError("this split streams its images from disk; iterate batches() instead of .x")
        return self.source.x

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.source.shape

    def images(self, index: torch.Tensor) -> torch.Tensor:
        return self.source.get(torch.as_tensor(index, dtype=torch.int64))

    def head(self, count: int) -> torch.Tensor:
        """The first `count` images (all when the split is smaller): splits are stored
        class-interleaved, so a head is a fair sample."""
        return self.images(torch.arange(min(count, len(self))))

    def inference_batch(self, wanted: int, max_mb: float = 48.0) -> int:
        """A batch size for passes that only run models (accuracy, teacher outputs): `wanted`,
        capped so one batch of images stays under `max_mb` (256 images at 3x224x224 would be
        150 MB, and a DataLoader keeps several batches in flight)."""
        c, h, w = self.input_shape
        return max(1, min(wanted, int(max_mb * 1e6 // (4 * c * h * w))))

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                shard: Shard | None = None) -> Iterator[Batch]:
        """(images, labels, sample indices) batches; the last one may be smaller. Shuffling
        never touches the global RNG: without a generator it uses seed 0, so pass one generator
        across epochs to get a new order each epoch. With `shard`, only that rank's part of the
        order (every rank must draw the same order: the same seeded generator on each)."""
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if shuffle:
            order = torch.randperm(len(self), generator=generator or torch.Generator().manual_seed(0))
        else:
            order = torch.arange(len(self))
        if shard is not None:
            order = shard.of(order)
        for images, index in self.source.stream(order, batch_size, self.workers):
            yield images, self.y[index], index

    def subset(self, count: int) -> Split:
        """The first `count` samples (all of them if count >= len)."""
        if count < 0:
            raise ValueError(f"subset size must be >= 0, got {count}")
        count = min(count, len(self))
        return Split(self.source.take(count), self.y[:count], workers=self.workers)

    def fingerprint(self) -> str:
        """What a cache of results on this split is keyed by: its images (their files and the
        decoding, for a folder) and its labels."""
        digest = hashlib.sha256(self.source.fingerprint().encode())
        digest.update(fingerprint_tensor(self.y).encode())
        return digest.hexdigest()
