"""Datasets as in-memory tensors: the built-in digits set, MNIST-style IDX folders, image folders.

Everything fits in memory (Fashion-MNIST as float32 is ~220 MB), which keeps training loops
simple and splits exactly reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.data import idx, image_folder
from edgekd.errors import UserError

logger = logging.getLogger(__name__)

DIGITS_SOURCE = "sklearn.datasets.load_digits"


@dataclass(eq=False)
class Split:
    """One split: x (N, C, H, W) float32 in [0, 1], y (N,) int64 class indices."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            shapes = f"{tuple(self.x.shape)} and {tuple(self.y.shape)}"
            raise ValueError(f"Split needs x (N, C, H, W) and y (N,) of equal N; got {shapes}")

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) batches; the last one may be smaller.

        Shuffling never touches the global RNG: without a generator it uses seed 0, so pass
        one generator across epochs to get a new order each epoch.
        """
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if shuffle:
            if generator is None:
                generator = torch.Generator().manual_seed(0)
            order = torch.randperm(len(self), generator=generator)
            for start in range(0, len(self), batch_size):
                chosen = order[start : start + batch_size]
                yield self.x[chosen], self.y[chosen]
        else:
            for start in range(0, len(self), batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def subset(self, n: int) -> Split:
        """The first n samples (all of them if n >= len); splits are stored class-interleaved."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        return Split(self.x[:n], self.y[:n])


@dataclass(eq=False)
class DatasetSplits:
    """A dataset split three ways, with its class names and where it came from."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict:
        """Plain-JSON description for reports and logs."""
        return {
            "name": self.name,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "input_shape": list(self.input_shape),
            "classes": self.num_classes,
            "source": self.source,
        }


# --- splitting -------------------------------------------------------------------------------


def split_indices(
    labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator, what: str
) -> list[np.ndarray]:
    """Stratified random split: returns [rest, part_0, part_1, ...], part_i ~ fractions[i] of N.

    Each sample gets a key (rank within its shuffled class + jitter) / class size, and the
    samples sorted by key are cut into consecutive chunks. Every chunk thus holds each class
    in proportion (+-1), and the chunks come out class-interleaved, so `subset(n)` is fair.
    """
    n = len(labels)
    keys = np.empty(n, dtype=np.float64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        keys[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    order = np.argsort(keys, kind="stable")

    sizes = [max(1, round(n * f)) for f in fractions]
    if n - sum(sizes) < 1:
        raise UserError(
            f"{what} has only {n} samples, too few to split off val/test; "
            "add more data or lower val_fraction/test_fraction"
        )
    parts, start = [], 0
    for size in sizes:
        parts.append(order[start : start + size])
        start += size
    return [order[start:], *parts]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise UserError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )


def _to_split(x: np.ndarray, y: np.ndarray, scale: float) -> Split:
    """uint8/float array (N, C, H, W) -> float32 tensor in [0, 1]."""
    values = x.astype(np.float32)  # a fresh, writable copy: safe to scale in place and share
    values /= scale
    return Split(torch.from_numpy(values), torch.from_numpy(np.asarray(y, dtype=np.int64)))


# --- loaders ---------------------------------------------------------------------------------


def _load_digits(seed: int, val_fraction: float, test_fraction: float) -> DatasetSplits:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise UserError(
            "the built-in digits dataset needs scikit-learn: pip install scikit-learn, "
            "or pass a dataset path"
        ) from e
    bunch = load_digits()
    x = bunch.images[:, None]  # (N, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train, val, test = split_indices(y, (val_fraction, test_fraction), rng, "the digits dataset")
    return DatasetSplits(
        name="digits",
        classes=[str(i) for i in range(10)],
        train=_to_split(x[train], y[train], 16.0),
        val=_to_split(x[val], y[val], 16.0),
        test=_to_split(x[test], y[test], 16.0),
        source=DIGITS_SOURCE,
    )


def _load_idx(root: Path, files: dict[str, Path], seed: int, val_fraction: float) -> DatasetSplits:
    data = idx.read_idx_folder(files)
    rng = np.random.default_rng(seed)
    what = f"'{files[idx.TRAIN_IMAGES]}'"
    train, val = split_indices(data.train_labels, (val_fraction,), rng, what)
    all_labels = np.concatenate([data.train_labels, data.test_labels])
    # Index the uint8 arrays before converting, so only the kept pixels become float32.
    return DatasetSplits(
        name=root.name,
        classes=idx.idx_class_names(root.name, all_labels),
        train=_to_split(data.train_images[train][:, None], data.train_labels[train], 255.0),
        val=_to_split(data.train_images[val][:, None], data.train_labels[val], 255.0),
        test=_to_split(data.test_images[:, None], data.test_labels, 255.0),
        source=str(root),
    )


def _shuffled(data: image_folder.FolderData, rng: np.random.Generator) -> image_folder.FolderData:
    # Folder trees are read class by class; shuffle so `subset(n)` is not all one class.
    order = rng.permutation(len(data.y))
    return image_folder.FolderData(data.x[order], data.y[order])


def _load_image_folder(
    root: Path, seed: int, image_size: int, val_fraction: float, test_fraction: float
) -> DatasetSplits:
    rng = np.random.default_rng(seed)
    if image_folder.is_split_layout(root):
        classes = image_folder.scan_classes(root / "train")
        trees = {s: root / s for s in image_folder.SPLIT_NAMES if (root / s).is_dir()}
        for split_name, tree in trees.items():
            if split_name != "train":
                image_folder.check_same_classes(tree, classes)
    else:
        classes = image_folder.scan_classes(root)
        trees = {"train": root}
    data = image_folder.read_trees(trees, classes, image_size)

    # Split off from train whichever of val/test has no folder of its own.
    fractions = {"val": val_fraction, "test": test_fraction}
    wanted = [s for s in ("val", "test") if s not in data]
    train = data["train"]
    if wanted:
        what = f"'{trees['train']}'"
        rest, *parts = split_indices(train.y, [fractions[s] for s in wanted], rng, what)
        for split_name, part in zip(wanted, parts):
            data[split_name] = image_folder.FolderData(train.x[part], train.y[part])
        data["train"] = image_folder.FolderData(train.x[rest], train.y[rest])
    for split_name in trees:
        data[split_name] = _shuffled(data[split_name], rng)

    return DatasetSplits(
        name=root.name,
        classes=classes,
        train=_to_split(data["train"].x, data["train"].y, 255.0),
        val=_to_split(data["val"].x, data["val"].y, 255.0),
        test=_to_split(data["test"].x, data["test"].y, 255.0),
        source=str(root),
    )


def load_dataset(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    image_size: int = 32,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DatasetSplits:
    """Load a dataset and split it into train/val/test; the same seed gives the same splits.

    - None: scikit-learn's 8x8 digits (1,797 images), split by the fractions.
    - a folder of MNIST IDX files: train/test from the files, val split off train
      (test_fraction unused); images keep their 28x28 size.
    - an image-folder tree DIR/<class>/<image>, or DIR/train|val|test/<class>/<image>:
      images resized to image_size; a missing val/ or test/ is split off train.
    """
    _check_fractions(val_fraction, test_fraction)
    if path is None:
        splits = _load_digits(seed, val_fraction, test_fraction)
    else:
        root = _resolve(path)
        files = idx.find_idx_files(root)
        if files is not None:
            splits = _load_idx(root, files, seed, val_fraction)
        else:
            if image_size < 1:
                raise UserError(f"image_size must be at least 1, got {image_size}")
            splits = _load_image_folder(root, seed, image_size, val_fraction, test_fraction)
    logger.info("loaded dataset %s", splits.summary())
    return splits


def _resolve(path: str | Path) -> Path:
    """The dataset folder as an absolute path, or a UserError saying what is wrong with it."""
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"dataset path '{path}' does not exist")
    if not root.is_dir():
        raise UserError(
            f"dataset path '{path}' is a file; pass the folder that holds the MNIST IDX files "
            f"or the class folders ({image_folder.LAYOUT_HINT})"
        )
    return root.resolve()
