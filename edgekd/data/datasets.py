"""Datasets split three ways: the built-in digits set and MNIST-style IDX folders (small, held in
memory as tensors), and image folders (streamed from disk by a DataLoader; edgekd/data/files.py).

The split of an image folder is a list of files, deterministic for a seed, and saved in the run
dir (`DatasetSplits.file_lists`), so a resumed run trains on exactly the same files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.config import DataConfig
from edgekd.data import idx, image_folder
from edgekd.data.files import Decoding, FileImages
from edgekd.data.normalise import NO_NORMALISATION_TEXT, normalisation_for
from edgekd.data.split import Split
from edgekd.errors import UserError

logger = logging.getLogger(__name__)

DIGITS_SOURCE = "sklearn.datasets.load_digits"


@dataclass(eq=False)
class DatasetSplits:
    """A dataset split three ways, with its class names and where it came from."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    source: str
    image_size_origin: str = "the data's own size"  # how the input size was decided, for the report
    preprocessing: str = NO_NORMALISATION_TEXT  # what the models' inputs are, for artifacts and the report

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.input_shape

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
            "image_size_origin": self.image_size_origin,
            "preprocessing": self.preprocessing,
            "classes": self.num_classes,
            "class_names": self.classes,
            "source": self.source,
        }

    def calibration_crop(self, crop_fraction: float) -> float:
        """The crop fraction calibration images must be decoded with to look like this data: the
        recipe's for an image folder (decoded that way), 1.0 for data held in memory (IDX, the
        embedded digits), whose images are never cropped."""
        return crop_fraction if isinstance(self.train.source, FileImages) else 1.0

    def file_lists(self) -> dict[str, Any] | None:
        """For an image folder: each split's files (relative to the folder) and labels; None
        for data held in memory."""
        if not isinstance(self.train.source, FileImages):
            return None
        root = Path(self.source)
        decoding = self.train.source.decoding
        return {"root": str(root), "classes": self.classes, "image_size": decoding.image_size,
                "channels": decoding.channels, "image_size_origin": self.image_size_origin,
                "splits": {name: [[str(path.relative_to(root)), int(label)]
                                  for path, label in zip(split.source.paths, split.y.tolist())]
                           for name, split in (("train", self.train), ("val", self.val), ("test", self.test))}}


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


def _to_split(x: np.ndarray, y: np.ndarray, scale: float, settings: DataConfig) -> Split:
    """uint8/float array (N, C, H, W) -> float32 tensor in [0, 1], as data.channels channels, then
    normalised as the teacher's inputs."""
    values = x.astype(np.float32)  # a fresh, writable copy: safe to scale in place and share
    values /= scale
    images = convert_channels(torch.from_numpy(values), settings.channels)
    normalisation = normalisation_for(settings, images.shape[1])
    if normalisation is not None:
        images = normalisation.apply(images)
    return Split(images, torch.from_numpy(np.asarray(y, dtype=np.int64)))


def convert_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Gray (N, 1, H, W) to RGB by repeating, RGB to gray by luminance (ITU-R 601, as Pillow's
    convert("L")); unchanged when `channels` is None or already right."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.repeat(1, 3, 1, 1)
    if channels == 1 and x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    raise UserError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")


# --- loaders ---------------------------------------------------------------------------------


def _load_digits(seed: int, settings: DataConfig) -> DatasetSplits:
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
    fractions = (settings.val_fraction, settings.test_fraction)
    train, val, test = split_indices(y, fractions, rng, "the digits dataset")
    return DatasetSplits(
        name="digits",
        classes=[str(i) for i in range(10)],
        train=_to_split(x[train], y[train], 16.0, settings),
        val=_to_split(x[val], y[val], 16.0, settings),
        test=_to_split(x[test], y[test], 16.0, settings),
        source=DIGITS_SOURCE,
        preprocessing=_describe(settings, 1 if settings.channels is None else settings.channels),
    )


def _load_idx(root: Path, files: dict[str, Path], seed: int, settings: DataConfig) -> DatasetSplits:
    data = idx.read_idx_folder(files)
    if settings.image_size is not None and settings.image_size != data.train_images.shape[1]:
        raise UserError(f"'{root}' holds {data.train_images.shape[1]}x{data.train_images.shape[2]} IDX images; "
                        f"data.image_size {settings.image_size} cannot resize them (leave it unset)")
    rng = np.random.default_rng(seed)
    what = f"'{files[idx.TRAIN_IMAGES]}'"
    train, val = split_indices(data.train_labels, (settings.val_fraction,), rng, what)
    all_labels = np.concatenate([data.train_labels, data.test_labels])
    # Index the uint8 arrays before converting, so only the kept pixels become float32.
    return DatasetSplits(
        name=root.name,
        classes=idx.idx_class_names(root.name, all_labels),
        train=_to_split(data.train_images[train][:, None], data.train_labels[train], 255.0, settings),
        val=_to_split(data.train_images[val][:, None], data.train_labels[val], 255.0, settings),
        test=_to_split(data.test_images[:, None], data.test_labels, 255.0, settings),
        source=str(root),
        preprocessing=_describe(settings, 1 if settings.channels is None else settings.channels),
    )


def _load_image_folder(root: Path, seed: int, settings: DataConfig, teacher_size: int | None) -> DatasetSplits:
    scan = image_folder.scan_folder(root, image_folder.read_class_order(settings.classes))
    image_size, origin = _image_size(scan, settings, teacher_size)
    channels = settings.channels or (1 if scan.all_gray else 3)
    decoding = Decoding(image_size=image_size, channels=channels, crop_fraction=settings.crop_fraction,
                        normalisation=normalisation_for(settings, channels))
    rng = np.random.default_rng(seed)
    files = {name: (np.array(paths, dtype=object), np.array(labels, dtype=np.int64))
             for name, (paths, labels) in scan.files.items()}
    # Split off from train whichever of val/test has no folder of its own.
    wanted = [name for name in ("val", "test") if name not in files]
    if wanted:
        paths, labels = files["train"]
        fractions = {"val": settings.val_fraction, "test": settings.test_fraction}
        rest, *parts = split_indices(labels, [fractions[name] for name in wanted], rng, f"'{root}'")
        for name, part in zip(wanted, parts):
            files[name] = paths[part], labels[part]
        files["train"] = paths[rest], labels[rest]
    splits = {}
    for name in ("train", "val", "test"):
        paths, labels = files[name]
        order = rng.permutation(len(labels))  # class-interleaved, so a head or subset is fair
        splits[name] = Split(FileImages(list(paths[order]), decoding), torch.from_numpy(labels[order]),
                             workers=settings.workers)
    return DatasetSplits(name=root.name, classes=scan.classes, source=str(root), image_size_origin=origin,
                         preprocessing=_describe(settings, channels, decoding), **splits)


def _describe(settings: DataConfig, channels: int, decoding: Decoding | None = None) -> str:
    normalisation = normalisation_for(settings, channels)
    text = normalisation.describe() if normalisation is not None else NO_NORMALISATION_TEXT
    if decoding is not None:
        text = (f"images resized (shorter side to {decoding.resize_to()} px) and centre-cropped to "
                f"{decoding.image_size}x{decoding.image_size}, {'gray' if channels == 1 else 'RGB'}; {text}")
    return text


def _image_size(scan: image_folder.FolderScan, settings: DataConfig, teacher_size: int | None) -> tuple[int, str]:
    """data.image_size, else the images' own size when they share one square size, else the
    teacher's input size; never a silent downscale."""
    if settings.image_size is not None:
        return settings.image_size, "data.image_size"
    native = scan.uniform_square_size()
    if native is not None:
        return native, "the images' own size"
    if teacher_size is not None:
        return teacher_size, "the teacher's input size"
    raise UserError(f"the images in '{scan.root}' are not all one square size ({scan.describe_sizes()}); choose the "
                    "size they are resized and centre-cropped to with --image-size (e.g. the teacher's input size)")


def load_file_lists(lists: dict[str, Any], settings: DataConfig) -> DatasetSplits:
    """An image folder's splits exactly as a run saved them (DatasetSplits.file_lists)."""
    root = Path(lists["root"])
    decoding = Decoding(image_size=lists["image_size"], channels=lists["channels"],
                        crop_fraction=settings.crop_fraction,
                        normalisation=normalisation_for(settings, lists["channels"]))
    splits = {}
    for name, rows in lists["splits"].items():
        missing = [row[0] for row in rows if not (root / row[0]).is_file()]
        if missing:
            raise UserError(f"{len(missing)} image(s) of this run's {name} split are gone from '{root}' (e.g. "
                            f"{missing[0]}); restore them, or start a new run")
        splits[name] = Split(FileImages([root / row[0] for row in rows], decoding),
                             torch.tensor([row[1] for row in rows], dtype=torch.int64), workers=settings.workers)
    return DatasetSplits(name=root.name, classes=lists["classes"], source=str(root),
                         image_size_origin=lists.get("image_size_origin", "the run's saved split"),
                         preprocessing=_describe(settings, lists["channels"], decoding), **splits)


def load_dataset(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    settings: DataConfig | None = None,
    teacher_size: int | None = None,
) -> DatasetSplits:
    """Load a dataset and split it into train/val/test; the same seed gives the same splits.

    - None: scikit-learn's 8x8 digits (1,797 images), split by the fractions.
    - a folder of MNIST IDX files: train/test from the files, val split off train
      (test_fraction unused); images keep their 28x28 size.
    - an image-folder tree DIR/<class>/<image>, or DIR/train|val|test/<class>/<image>: streamed
      from disk; a missing val/ or test/ is split off train; sized by `settings.image_size`, else
      the images' own size when uniform, else `teacher_size` (the teacher's input size).
    """
    settings = settings or DataConfig()
    if path is None:
        splits = _load_digits(seed, settings)
    else:
        root = _resolve(path)
        files = idx.find_idx_files(root)
        if files is not None:
            splits = _load_idx(root, files, seed, settings)
        else:
            splits = _load_image_folder(root, seed, settings, teacher_size)
    logger.info("loaded dataset %s", {k: v for k, v in splits.summary().items() if k != "class_names"})
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
