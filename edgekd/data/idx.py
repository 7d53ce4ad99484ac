"""Reader for MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST, ...).

Format: 2 zero bytes, a dtype code, the number of dims, then one big-endian uint32 per dim,
then the raw data. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.errors import UserError

logger = logging.getLogger(__name__)

# Base names as published for MNIST and its drop-in replacements; each may also end in ".gz".
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_UBYTE = 0x08  # the only dtype code MNIST-style image/label files use


@dataclass(eq=False)
class IdxData:
    """Raw arrays from an IDX folder: images uint8 (N, H, W), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _find(root: Path, name: str) -> Path | None:
    """The file for `name` in root, preferring the uncompressed copy (faster to read)."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(root: Path) -> dict[str, Path] | None:
    """Map base name -> file, or None when root holds no IDX files at all."""
    found = {name: _find(root, name) for name in IDX_NAMES}
    if all(path is None for path in found.values()):
        return None
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise UserError(
            f"IDX folder '{root}' is missing {', '.join(missing)} (or .gz); "
            f"it needs all of {', '.join(IDX_NAMES)}"
        )
    return {name: path for name, path in found.items() if path is not None}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read IDX file '{path}' ({e}); re-download it") from e


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one unsigned-byte IDX file with `ndim` dimensions; returns a read-only uint8 array."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"'{path}' is not an IDX file (bad magic number); re-download it")
    if data[2] != _UBYTE:
        raise UserError(
            f"'{path}' has IDX data type 0x{data[2]:02x}; only unsigned bytes (0x08) are supported"
        )
    if data[3] != ndim:
        raise UserError(f"'{path}' holds {data[3]}-D data; expected {ndim}-D")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"'{path}' is truncated inside its header; re-download it")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    body = len(data) - header
    if body != expected:
        problem = "is truncated" if body < expected else "has trailing bytes"
        raise UserError(
            f"'{path}' {problem}: header {dims} needs {expected} data bytes, found {body}; "
            "re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise UserError(
            f"'{images_path}' has {len(images)} images but '{labels_path}' has "
            f"{len(labels)} labels; the files do not belong together"
        )
    return images, labels


def read_idx_folder(files: dict[str, Path]) -> IdxData:
    """Read the four files found by `find_idx_files`."""
    train_x, train_y = _read_pair(files[TRAIN_IMAGES], files[TRAIN_LABELS])
    test_x, test_y = _read_pair(files[TEST_IMAGES], files[TEST_LABELS])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(
            f"train images are {train_x.shape[1:]} but test images are {test_x.shape[1:]}; "
            "the IDX files do not belong together"
        )
    logger.debug("read IDX: %d train, %d test images", len(train_x), len(test_x))
    return IdxData(train_x, train_y, test_x, test_y)


def idx_class_names(folder_name: str, labels: np.ndarray) -> list[str]:
    """Fashion-MNIST names when the folder says so, else the label numbers as strings."""
    num_classes = int(labels.max()) + 1 if labels.size else 0
    if "fashion" in folder_name.lower():
        if num_classes > len(FASHION_CLASSES):
            raise UserError(
                f"folder '{folder_name}' looks like Fashion-MNIST but has label {num_classes - 1}; "
                "Fashion-MNIST labels are 0..9"
            )
        return list(FASHION_CLASSES)
    return [str(i) for i in range(num_classes)]
