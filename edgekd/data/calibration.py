"""Calibration-set manifests: which inputs set a quantized model's activation ranges.

A manifest is a YAML file (read with `safe_load`; calibration/README.md has the format) that
names its inputs in one of two ways:

- `images`: image files, paths relative to the manifest, decoded exactly as the image-folder
  dataset loader decodes training images (edgekd/data/files.py: 8-bit gray or RGB, resized and
  centre-cropped to the input size, scaled to [0, 1]), so calibration sees what training saw;
- `dataset` + `split` + `indices` or `first`: samples of a dataset edgekd loads itself
  ("digits" for the built-in one, else a folder path relative to the manifest).

Both declare the `input_shape` [C, H, W] they were made for; `load_calibration` checks it against
the model's, so a set made for another model fails before any quantization runs.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from edgekd.config import DataConfig, read_yaml_mapping
from edgekd.data.files import GRAY_MODES, Decoding, decode
from edgekd.errors import UserError

log = logging.getLogger(__name__)

BUILTIN_DATASET = "digits"
SPLITS = ("train", "val", "test")
_SHOWN_MISSING = 5  # a manifest of 10,000 missing files needs a count, not a list


@dataclass
class CalibrationManifest:
    path: Path
    name: str
    input_shape: list[int]  # [C, H, W] the set was made for
    preprocessing: str = ""  # free text for people: how the inputs were prepared
    images: list[str] = field(default_factory=list)
    dataset: str | None = None
    split: str = "train"
    indices: list[int] | None = None
    first: int | None = None
    seed: int = 0  # the dataset's split seed: the same seed gives the same samples

    @property
    def source(self) -> str:
        if self.images:
            return f"{len(self.images)} images listed in {self.path}"
        chosen = f"first {self.first}" if self.first is not None else f"{len(self.indices or [])} indices"
        return f"dataset {self.dataset} split {self.split} ({chosen}, seed {self.seed})"


def read_manifest(path: str | Path) -> CalibrationManifest:
    """Parse and check a manifest's fields (files are checked when loaded)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"calibration manifest '{path}' does not exist")
    data = read_yaml_mapping(path, hint=" (a calibration manifest: see calibration/README.md)")
    known = [f.name for f in fields(CalibrationManifest) if f.name != "path"]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{path}: unknown key {key!r}{hint} (known: {', '.join(known)})")
    for key in ("name", "input_shape"):
        if key not in data:
            raise UserError(f"{path}: missing key {key!r} (see calibration/README.md)")
    manifest = CalibrationManifest(path=path.resolve(), **data)
    _check_fields(manifest)
    return manifest


def _check_fields(m: CalibrationManifest) -> None:
    where = str(m.path)
    shape = m.input_shape
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise UserError(f"{where}: input_shape must be [C, H, W] of positive integers, got {shape!r}")
    if bool(m.images) == (m.dataset is not None):
        raise UserError(f"{where}: give either `images` (a list of files) or `dataset` (+ split, indices or first)")
    if m.images and not (isinstance(m.images, list) and all(isinstance(p, str) and p for p in m.images)):
        raise UserError(f"{where}: `images` must be a list of file paths relative to the manifest")
    if m.dataset is not None:
        if m.split not in SPLITS:
            raise UserError(f"{where}: split must be one of {', '.join(SPLITS)}, got {m.split!r}")
        if (m.indices is None) == (m.first is None):
            raise UserError(f"{where}: a dataset manifest needs exactly one of `indices` (a list) or `first` (a count)")
        if m.first is not None and not (isinstance(m.first, int) and m.first > 0):
            raise UserError(f"{where}: `first` must be a positive integer, got {m.first!r}")
        if m.indices is not None and not (isinstance(m.indices, list) and m.indices and all(isinstance(i, int) and i >= 0 for i in m.indices)):
            raise UserError(f"{where}: `indices` must be a non-empty list of integers >= 0")


def load_calibration(manifest_path: str | Path, input_shape: tuple[int, ...] | list[int], *,
                     crop_fraction: float = 0.875) -> torch.Tensor:
    """The manifest's inputs as float32 (N, C, H, W) in [0, 1], for a model taking `input_shape`
    [C, H, W]. Missing files, undecodable images, bad indices or a shape that is not the model's
    raise UserError."""
    manifest = read_manifest(manifest_path)
    wanted = [int(v) for v in input_shape]
    if manifest.input_shape != wanted:
        raise UserError(
            f"calibration manifest {manifest.path} was made for input shape {manifest.input_shape}, "
            f"but the model takes {wanted}; use a manifest made for this model's input"
        )
    x = _load_images(manifest, crop_fraction) if manifest.images else _load_dataset_samples(manifest)
    log.info("calibration: %s: %d inputs %s from %s", manifest.name, len(x), list(x.shape[1:]), manifest.source)
    return x


def _load_images(m: CalibrationManifest, crop_fraction: float) -> torch.Tensor:
    c, h, w = m.input_shape
    if h != w:
        # The dataset loader resizes to a square image_size; calibration must match training.
        raise UserError(f"{m.path}: input_shape {m.input_shape} is not square; edgekd's image loader makes H == W")
    if c not in (1, 3):
        raise UserError(f"{m.path}: images decode to 1 (gray) or 3 (RGB) channels, not {c}")
    paths = [m.path.parent / p for p in m.images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:_SHOWN_MISSING])
        more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
        raise UserError(
            f"calibration manifest {m.path}: {len(missing)} of {len(paths)} image files are missing: {shown}{more}; "
            "paths are relative to the manifest's folder"
        )
    decoding = Decoding(image_size=h, channels=c, crop_fraction=crop_fraction)
    # The training loader's decoding, reused on purpose: calibration must see what training saw.
    images = torch.stack([decode(path, decoding) for path in paths])  # a broken file: a UserError naming it
    colour = [path for path in paths if c == 1 and not _is_gray(path)]
    if colour:
        raise UserError(f"calibration image '{colour[0]}' is in color, but the model takes 1 channel")
    return images


def _is_gray(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        return img.mode in GRAY_MODES


def _load_dataset_samples(m: CalibrationManifest) -> torch.Tensor:
    from edgekd.data.datasets import load_dataset

    source: Any = None if m.dataset == BUILTIN_DATASET else m.path.parent / str(m.dataset)
    c, h, _ = m.input_shape
    splits = load_dataset(source, seed=m.seed, settings=DataConfig(image_size=h, channels=c) if source else None)
    split = getattr(splits, m.split)
    got = list(split.input_shape)
    if got != m.input_shape:
        raise UserError(f"{m.path}: dataset {m.dataset} gives inputs of shape {got}, not the declared {m.input_shape}")
    if m.first is not None:
        if m.first > len(split):
            log.warning("calibration: %s asks for the first %d samples; split %s has %d", m.path, m.first,
                        m.split, len(split))
        return split.head(m.first).clone()
    bad = [i for i in m.indices or [] if i >= len(split)]
    if bad:
        raise UserError(f"{m.path}: indices {bad[:_SHOWN_MISSING]} are beyond split {m.split} ({len(split)} samples)")
    return split.images(torch.tensor(m.indices)).clone()
