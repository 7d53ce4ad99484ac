"""Image-folder trees: DIR/<class>/<image>, optionally under DIR/train, val, test.

Scanning reads each file's header only (size and colour mode), never its pixels: a folder of a
million JPEGs is listed in seconds and holds no image in memory. The class order is the sorted
folder names (as torchvision's ImageFolder) unless the user gives the teacher's own order.
Pillow is imported on first use so that `import edgekd` stays light.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.data.files import GRAY_MODES
from edgekd.errors import UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
SPLIT_NAMES = ("train", "val", "test")
LAYOUT_HINT = "DIR/<class>/<image>.png"


@dataclass(eq=False)
class FolderScan:
    """What a tree holds: per split found on disk, its files and labels; and the images' sizes and
    whether all of them are grayscale."""

    root: Path
    classes: list[str]
    files: dict[str, tuple[list[Path], list[int]]]
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    all_gray: bool = True

    def uniform_square_size(self) -> int | None:
        """The one size every image has, when they all share one square size; else None."""
        if len(self.sizes) == 1:
            (width, height), = self.sizes
            if width == height:
                return width
        return None

    def describe_sizes(self, shown: int = 4) -> str:
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(shown))
        return common + (f" and {len(self.sizes) - shown} more" if len(self.sizes) > shown else "")


def _visible_dirs(folder: Path) -> list[Path]:
    # Hidden folders (.git, .ipynb_checkpoints, ...) are never classes.
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_split_layout(root: Path) -> bool:
    """True when root holds train/ (+ val/, test/) rather than class folders.

    A tree whose classes happen to include "train" next to other classes is a class tree.
    """
    names = {p.name for p in _visible_dirs(root)}
    return "train" in names and names <= set(SPLIT_NAMES)


def scan_classes(root: Path, order: list[str] | None = None) -> list[str]:
    """The class folder names under root: sorted, or in `order` (the teacher's label order),
    which must name exactly the folders there; at least two classes are required."""
    found = [p.name for p in _visible_dirs(root)]
    if len(found) < 2:
        raise UserError(f"found {len(found)} class folder(s) in '{root}'; need at least 2, laid out as {LAYOUT_HINT}")
    if order is None:
        return found
    if len(set(order)) != len(order):
        repeated = sorted({name for name in order if order.count(name) > 1})
        raise UserError(f"the class order names {repeated} more than once")
    if set(order) != set(found):
        missing, extra = sorted(set(found) - set(order)), sorted(set(order) - set(found))
        parts = [f"folders not in the class order: {missing}" if missing else "",
                 f"classes without a folder: {extra}" if extra else ""]
        raise UserError(f"the class order does not match the folders of '{root}': "
                        + "; ".join(part for part in parts if part))
    return list(order)


def image_files(class_dir: Path) -> list[Path]:
    # Hidden files include macOS "._x.png" resource forks, which are not images.
    files = sorted(
        p for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        suffixes = "/".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        raise UserError(f"class folder '{class_dir}' has no images ({suffixes})")
    return files


def scan_folder(root: Path, class_order: list[str] | None = None) -> FolderScan:
    """List every image of the tree (train/val/test sub-trees when present) with its label, and
    read each header for its size and colour mode."""
    if is_split_layout(root):
        classes = scan_classes(root / "train", class_order)
        trees = {name: root / name for name in SPLIT_NAMES if (root / name).is_dir()}
        for name, tree in trees.items():
            if name != "train":
                check_same_classes(tree, classes)
    else:
        classes = scan_classes(root, class_order)
        trees = {"train": root}
    scan = FolderScan(root=root, classes=classes, files={})
    for split_name, tree in trees.items():
        paths, labels = [], []
        for label, name in enumerate(classes):
            for path in image_files(tree / name):
                paths.append(path)
                labels.append(label)
        scan.files[split_name] = (paths, labels)
    _read_headers(scan)
    logger.debug("scanned %s: %s, sizes %s", root, {k: len(v[0]) for k, v in scan.files.items()},
                 scan.describe_sizes())
    return scan


def _read_headers(scan: FolderScan) -> None:
    from PIL import Image

    for paths, _ in scan.files.values():
        for path in paths:
            try:
                with Image.open(path) as img:  # lazy: reads the header, not the pixels
                    scan.sizes[img.size] += 1
                    scan.all_gray = scan.all_gray and _looks_gray(img)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise UserError(f"cannot read image '{path}' ({exc}); fix or delete it") from exc


def _looks_gray(img) -> bool:
    if img.mode in GRAY_MODES:
        return True
    if img.mode == "P":  # GIFs and palette PNGs are often gray; only their palette tells
        palette = img.getpalette() or []
        triples = [palette[i : i + 3] for i in range(0, len(palette), 3)]
        return all(r == g == b for r, g, b in triples)
    return False


def read_class_order(value: list[str] | str | None) -> list[str] | None:
    """The class order as given: a list, or a file with one class name per line."""
    if value is None or isinstance(value, list):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"class order file '{value}' does not exist (data.classes: a list of names or a file "
                        "with one class name per line)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise UserError(f"class order file '{value}' is empty")
    return names


def check_same_classes(split_root: Path, classes: list[str]) -> None:
    """A val/ or test/ tree must have exactly train/'s class folders."""
    found = [p.name for p in _visible_dirs(split_root)]
    if sorted(found) == sorted(classes):
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
