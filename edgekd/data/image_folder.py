"""Reader for image-folder trees: DIR/<class>/<image>.png, optionally under DIR/train, val, test.

Pillow is imported on first use so that `import edgekd` stays light.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
SPLIT_NAMES = ("train", "val", "test")
LAYOUT_HINT = "DIR/<class>/<image>.png"

# Pillow modes with a single intensity channel (alpha, if any, is dropped).
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(eq=False)
class FolderData:
    """Decoded images of one class tree: x uint8 (N, C, H, W), y int64 (N,)."""

    x: np.ndarray
    y: np.ndarray


def _visible_dirs(folder: Path) -> list[Path]:
    # Hidden folders (.git, .ipynb_checkpoints, ...) are never classes.
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_split_layout(root: Path) -> bool:
    """True when root holds train/ (+ val/, test/) rather than class folders.

    A tree whose classes happen to include "train" next to other classes is a class tree.
    """
    names = {p.name for p in _visible_dirs(root)}
    return "train" in names and names <= set(SPLIT_NAMES)


def scan_classes(root: Path) -> list[str]:
    """Sorted class folder names under root; at least two are required."""
    classes = [p.name for p in _visible_dirs(root)]
    if len(classes) < 2:
        raise UserError(
            f"found {len(classes)} class folder(s) in '{root}'; need at least 2, "
            f"laid out as {LAYOUT_HINT}"
        )
    return classes


def _image_files(class_dir: Path) -> list[Path]:
    # Hidden files include macOS "._x.png" resource forks, which are not images.
    files = sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        suffixes = "/".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        raise UserError(f"class folder '{class_dir}' has no images ({suffixes})")
    return files


def _to_8bit(img: Image.Image) -> tuple[Image.Image, bool]:
    """Convert to mode "L" or "RGB"; the flag says whether the source was grayscale."""
    from PIL import Image

    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255; scale to 8 bits instead.
        values = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(values.astype(np.uint8), mode="L"), True
    if img.mode in _GRAY_MODES:
        return img.convert("L"), True
    if img.mode == "P":
        # GIFs and palette PNGs are often gray; only their palette tells.
        rgb = np.asarray(img.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return img.convert("L"), True
    return img.convert("RGB"), False


def _decode(path: Path, image_size: int) -> tuple[np.ndarray, bool]:
    """One image resized to image_size x image_size: (H, W) if gray, else (H, W, 3)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img8, gray = _to_8bit(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # UnidentifiedImageError is an OSError; SyntaxError/ValueError come from bad headers.
        raise UserError(f"cannot decode image '{path}' ({e}); fix or delete it") from e
    resized = img8.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8), gray


def _decode_tree(
    root: Path, classes: list[str], image_size: int
) -> tuple[list[np.ndarray], list[int], bool]:
    """Decode every image of every class; returns arrays, labels and whether all were gray."""
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    all_gray = True
    for label, name in enumerate(classes):
        for path in _image_files(root / name):
            array, gray = _decode(path, image_size)
            arrays.append(array)
            labels.append(label)
            all_gray = all_gray and gray
    return arrays, labels, all_gray


def _stack(arrays: list[np.ndarray], labels: list[int], channels: int) -> FolderData:
    """Stack decoded images into (N, C, H, W); gray images are repeated to 3 channels if needed."""
    if channels == 1:
        x = np.stack(arrays)[:, None]
    else:
        rgb = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        x = np.stack(rgb).transpose(0, 3, 1, 2)
    return FolderData(np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64))


def read_trees(
    trees: dict[str, Path], classes: list[str], image_size: int
) -> dict[str, FolderData]:
    """Decode several class trees (e.g. train/ and test/) with one shared channel count.

    Channels are 1 only if every image in every tree is grayscale, so all splits match.
    """
    decoded = {split: _decode_tree(root, classes, image_size) for split, root in trees.items()}
    channels = 1 if all(gray for _, _, gray in decoded.values()) else 3
    logger.debug("decoded %s; channels=%d", {k: len(v[0]) for k, v in decoded.items()}, channels)
    return {split: _stack(arr, labels, channels) for split, (arr, labels, _) in decoded.items()}


def check_same_classes(split_root: Path, classes: list[str]) -> None:
    """A val/ or test/ tree must have exactly train/'s class folders."""
    found = [p.name for p in _visible_dirs(split_root)]
    if found == classes:
        return
    missing = sorted(set(classes) - set(found))
    extra = sorted(set(found) - set(classes))
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"extra {extra}")
    raise UserError(
        f"classes in '{split_root}' differ from train/: {'; '.join(parts)}; "
        "use the same class folders in every split"
    )
