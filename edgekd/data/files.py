"""Images decoded from files, one batch at a time, by a torch DataLoader's worker processes.

Decoding follows torchvision's evaluation practice exactly: resize the shorter side to
image_size / crop_fraction, then take the centre image_size x image_size crop, also for an image
that is already image_size x image_size (torchvision's Resize(256) + CenterCrop(224) zooms a 224-px
image too; a teacher trained that way sees its objects at that scale). crop_fraction 1.0 leaves
an image of the right size untouched. Training augmentation happens after, on the batch
(edgekd/data/augment.py), so that it is deterministic per sample and epoch.

A file that cannot be decoded inside a worker does not raise there (the main process would get
the worker's traceback): the worker hands back the file's name, and the main process stops the
run with one line that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edgekd.data.normalise import Normalisation
from edgekd.errors import UserError

# Pillow modes with a single intensity channel (alpha, if any, is dropped).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class Decoding:
    """How a file becomes a (C, H, W) float32 tensor in [0, 1]."""

    image_size: int
    channels: int  # 1: grayscale (colour images converted by luminance), 3: RGB (gray repeated)
    crop_fraction: float = 0.875  # torchvision's 224/256
    normalisation: Normalisation | None = None  # the teacher's, applied last

    def resize_to(self) -> int:
        return max(self.image_size, round(self.image_size / self.crop_fraction))


# Bumped whenever `decode` turns a file into other pixels: 2 = 224-px images are resized and cropped too.
DECODER_VERSION = 2


def decode(path: Path, decoding: Decoding) -> torch.Tensor:
    """One image file as a (C, H, W) float32 tensor in [0, 1], normalised as the teacher's inputs
    when the decoding says so; UserError naming a broken file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img = _to_mode(img, "L" if decoding.channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError is an OSError; SyntaxError/ValueError come from bad headers.
        raise UserError(f"cannot decode image '{path}' ({exc}); fix or delete it") from exc
    size = decoding.image_size
    if img.size != (size, size) or decoding.resize_to() != size:
        width, height = img.size
        scale = decoding.resize_to() / min(width, height)
        resized = (max(size, round(width * scale)), max(size, round(height * scale)))
        img = img.resize(resized, Image.Resampling.BILINEAR)
        left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
    array = np.array(img, dtype=np.uint8)  # a copy torch may own
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    image = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    return decoding.normalisation.apply(image) if decoding.normalisation is not None else image


def _to_mode(img, mode: str):
    from PIL import Image

    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255; scale to 8 bits instead.
        values = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        img = Image.fromarray(values.astype(np.uint8), mode="L")
    return img if img.mode == mode else img.convert(mode)


class _Decoder(Dataset):
    """Sample i -> (image or the error text, i). Runs in the DataLoader's workers."""

    def __init__(self, paths: list[Path], decoding: Decoding):
        self.paths, self.decoding = paths, decoding

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return decode(self.paths[i], self.decoding), i
        except UserError as exc:
            return str(exc), i


def _collate(items):
    errors = [image for image, _ in items if isinstance(image, str)]
    if errors:
        return errors[0], None
    return torch.stack([image for image, _ in items]), torch.tensor([i for _, i in items], dtype=torch.int64)


class FileImages:
    """A split's images as files (absolute paths), decoded on demand."""

    def __init__(self, paths: list[Path], decoding: Decoding):
        self.paths = [Path(p) for p in paths]
        self.decoding = decoding
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.decoding.channels, self.decoding.image_size, self.decoding.image_size

    def get(self, index: torch.Tensor) -> torch.Tensor:
        if len(index) == 0:
            return torch.empty((0, *self.shape))
        return torch.stack([decode(self.paths[int(i)], self.decoding) for i in index])

    def stream(self, order: torch.Tensor, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = [order[start : start + batch_size].tolist() for start in range(0, len(order), batch_size)]
        loader = DataLoader(_Decoder(self.paths, self.decoding), batch_sampler=batches, num_workers=workers,
                            collate_fn=_collate, pin_memory=torch.cuda.is_available(),
                            # Threads per worker: decoding is single-threaded; more would fight the trainer.
                            worker_init_fn=_one_thread if workers else None)
        for images, index in loader:
            if isinstance(images, str):
                raise UserError(images)
            yield images, index

    def fingerprint(self) -> str:
        """The files (path, size, modification time), the decoding settings and DECODER_VERSION: a
        changed file, image size or decoding rule gives another key (cached teacher outputs of
        differently decoded images must not be reused)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(json.dumps(asdict(self.decoding), sort_keys=True).encode())
            digest.update(f"decoder {DECODER_VERSION}\n".encode())
            for path in self.paths:
                stat = path.stat()
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def take(self, count: int) -> FileImages:
        return FileImages(self.paths[:count], self.decoding)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
