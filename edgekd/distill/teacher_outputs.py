"""Teacher outputs computed once per (teacher, data, augmentation, k) and kept on disk, TinyViT-style
(Wu et al., ECCV 2022: top-k teacher outputs saved per sample and per augmentation epoch, the
augmentation replayed from a seed), so search trials and repeated distillations never rerun the
teacher.

Per sample and per augmentation epoch the cache keeps the teacher's top-k log-probabilities, their
class indices and the log of the probability mass left over the other C - k classes. `logits()`
rebuilds dense log-probabilities: the top k exactly, the rest of the mass spread evenly over the
other classes (TinyViT's reconstruction). Every loss in edgekd.distill.losses sees the teacher only through
softmax(teacher / T), which a per-row constant does not change, and log-probabilities are the
logits minus a per-row constant (their logsumexp), so with k == C the losses are those of the
online teacher, to float rounding. With k < C the soft targets at temperature T are at most the
rebuilt tail's mass at T away in total variation (`tail_mass`; the proof is at that function).

On-disk format (format version 1), under `$EDGEKD_CACHE_DIR/teacher_outputs/<key>/` (the same
root as the cached teachers, edgekd.io.cache_dir()):

- `key.json`: what the key was made of (teacher and data fingerprints, augmentation, k, dtype);
  for people, not read back.
- `epoch-NNNN.npz`, one per augmentation epoch (0 only when there is no augmentation), an
  uncompressed numpy archive, loaded with allow_pickle=False:
    values         (N, k) float32 or float16   top-k log-probabilities, largest first
    indices        (N, k) int16 (int32 past 32767 classes)   their classes
    rest_logmass   (N,)   float32              log of the mass of the other C - k classes
                                               (floored at -1e4; unused when k == C)
    meta           0-d unicode string          JSON: format, key, epoch, N, C, k, value dtype
  Bytes per sample per epoch: k * (value bytes + index bytes) + 4, plus ~1 KB of headers per
  file: 64 B for k = 10 at 10 classes in float32, 44 B in float16 (Fashion-MNIST's 60,000
  training images x 10 epochs: 38 MB or 26 MB).

The key holds the number of classes implicitly (through the teacher) but not the number of
epochs: epoch e's file is the same whatever the total, so a longer run reuses a shorter one's
files. Each file is written to a temporary name and renamed, so an interrupted write never
leaves a corrupt file; a file that fails to load or whose metadata or shapes disagree with the
key is recomputed with a warning.

Under torchrun (`world`) rank 0 loads or computes each epoch while the other ranks wait, then they
read its file: the teacher runs on one rank only, and no two processes write one file. A rank that
does not find the file (another machine, whose cache is its own) computes it for itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgekd.data import Split
from edgekd.data.augment import Augmentation
from edgekd.errors import UserError
from edgekd.io import atomic_write, cache_dir, fingerprint_model
from edgekd.measure import progress
from edgekd.training.distributed import SINGLE, World

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
VALUE_DTYPES = ("float32", "float16")
# Log-probabilities below this are clamped: exp() of it is 0 in float32 anyway, and it keeps
# float16 finite and the losses free of 0 * -inf.
_LOG_FLOOR = -1e4


def bytes_per_sample(k: int, num_classes: int, value_dtype: str = "float32") -> int:
    """Bytes one sample costs per augmentation epoch in the arrays (file headers aside)."""
    return k * (np.dtype(value_dtype).itemsize + _index_dtype(num_classes).itemsize) + 4


class TeacherOutputCache:
    """The teacher's top-k log-probabilities on `x`, per augmentation epoch, cached on disk.

    `logits(index, epoch)` gives dense teacher log-probabilities for the samples numbered `index`
    as augmented in `epoch`; `inputs(x, index, epoch)` gives the same augmented images for the
    student. Epochs past `n_epochs` reuse the augmentations of epoch % n_epochs, so the cache
    stays bounded when early stopping decides how long training runs. Nothing runs at
    construction: the teacher runs only for an epoch whose file is missing or broken.
    """

    def __init__(
        self,
        teacher: nn.Module,
        x: torch.Tensor | Split,
        *,
        k: int,
        augmentation: Augmentation | None = None,
        n_epochs: int = 1,
        value_dtype: str = "float32",
        teacher_fingerprint: str | None = None,
        data_fingerprint: str | None = None,
        root: str | Path | None = None,
        batch_size: int = 512,
        world: World = SINGLE,
    ):
        if k < 1:
            raise UserError(f"teacher cache: k (top-k classes kept) must be at least 1, got {k}")
        if n_epochs < 1:
            raise UserError(f"teacher cache: n_epochs must be at least 1, got {n_epochs}")
        if value_dtype not in VALUE_DTYPES:
            raise UserError(f"teacher cache: value_dtype must be one of {VALUE_DTYPES}, got {value_dtype!r}")
        if isinstance(x, torch.Tensor):
            if x.ndim != 4:
                raise ValueError(f"teacher cache needs images (N, C, H, W), got {tuple(x.shape)}")
            x = Split(x, torch.zeros(len(x), dtype=torch.int64))
        self.teacher, self.split, self.k, self.value_dtype = teacher, x, k, value_dtype
        self.batch_size = batch_size
        self.world = world
        height, width = x.input_shape[1:]
        # An augmentation that changes nothing is no augmentation: one epoch, keyed as none.
        if augmentation is not None and augmentation.is_identity(height, width):
            augmentation = None
        self.augmentation = augmentation
        self.n_epochs = n_epochs if augmentation is not None else 1
        self.key_parts: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "teacher": teacher_fingerprint or fingerprint_model(teacher),
            "data": data_fingerprint or x.source.fingerprint(),
            "augmentation": None if augmentation is None else {
                **augmentation.to_dict(), "shift_px": augmentation.resolved_shift_px(height, width)},
            "k": k,
            "value_dtype": value_dtype,
        }
        self.key = hashlib.sha256(json.dumps(self.key_parts, sort_keys=True).encode()).hexdigest()[:20]
        self.directory = Path(root) if root is not None else cache_dir() / "teacher_outputs"
        self.directory = self.directory / self.key
        self.num_classes: int | None = None  # known once an epoch is loaded or computed
        self._loaded_epoch: int | None = None
        self._arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ---- what training calls ---------------------------------------------------------------

    def epoch_slot(self, epoch: int) -> int:
        """Which cached augmentation epoch training epoch `epoch` (0-based) uses."""
        return epoch % self.n_epochs

    def inputs(self, x: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """The student's images: `x` (the samples numbered `index`) as the teacher saw them."""
        if self.augmentation is None:
            return x
        return self.augmentation.apply(x, index, self.epoch_slot(epoch))

    def logits(self, index: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """Dense teacher log-probabilities [B, C] (float32, CPU) for samples `index` in `epoch`."""
        values, indices, rest = self._lookup(index, epoch)
        num_classes = self._num_classes()
        if self.k == num_classes:
            dense = torch.empty(len(values), num_classes)
        else:
            spread = rest - math.log(num_classes - self.k)  # each tail class's share, in log space
            dense = spread[:, None].expand(-1, num_classes).clone()
        return dense.scatter_(1, indices, values)

    def tail_mass(self, index: torch.Tensor, epoch: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """[B]: the rebuilt distribution's mass outside the top k at `temperature`, R~_T. It bounds
        the total variation between rebuilt and true soft targets softmax(log p / T) for T >= 1:

        Both keep the top-k p_i and differ in the tail, where the rebuild puts the tail's mean m
        on every class. p -> p^(1/T) is concave for T >= 1, so (Jensen) (C-k) m^(1/T) >= the
        true tail's sum of p_j^(1/T): the rebuild's normaliser is the larger, so every top-k soft
        target shrinks, by R~_T - R_T in all. The tail's differences sum to the same R~_T - R_T
        and are at most R_T + R~_T in absolute value, so TV <= ((R~_T - R_T) + R_T + R~_T) / 2
        = R~_T. It is 0 when k == C."""
        if temperature < 1.0:
            raise ValueError(f"the tail-mass bound holds for temperature >= 1, got {temperature}")
        _, indices, _ = self._lookup(index, epoch)
        soft = F.softmax(self.logits(index, epoch) / temperature, dim=1)
        return 1.0 - soft.gather(1, indices).sum(dim=1)

    def prepare(self) -> None:
        """Compute and store every epoch whose file is missing or broken (one progress bar each)."""
        for slot in range(self.n_epochs):
            self._load_or_compute(slot, keep=False)

    # ---- storage -------------------------------------------------------------------------------

    def path(self, epoch: int) -> Path:
        return self.directory / f"epoch-{self.epoch_slot(epoch):04d}.npz"

    def _lookup(self, index: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slot = self.epoch_slot(epoch)
        if self._loaded_epoch != slot or self._arrays is None:
            self._arrays = self._load_or_compute(slot, keep=True)
            self._loaded_epoch = slot
        values, indices, rest = self._arrays
        rows = torch.as_tensor(index).reshape(-1).cpu().long()
        return values[rows].float(), indices[rows].long(), rest[rows]

    def _load_or_compute(self, slot: int, *, keep: bool):
        if not self.world.active:
            return self._load_or_compute_here(slot, keep=keep)
        arrays = self.world.on_main(lambda: self._load_or_compute_here(slot, keep=keep))
        if self.world.is_main:
            return arrays
        if not keep and self.path(slot).is_file():
            return None
        # Read rank 0's file; computed here only where it is missing (another machine's cache).
        return self._load_or_compute_here(slot, keep=keep)

    def _load_or_compute_here(self, slot: int, *, keep: bool):
        path = self.path(slot)
        if path.is_file():
            try:
                arrays = self._read(path, slot)
                log.debug("teacher outputs: epoch %d from %s", slot, path)
                return arrays
            except Exception as exc:  # noqa: BLE001 - a broken cache file is recomputed, not fatal
                log.warning("teacher output cache %s is unusable (%s); recomputing it", path, exc)
        values, indices, rest = self._compute(slot)
        self._write(path, slot, values, indices, rest)
        return (torch.from_numpy(values), torch.from_numpy(indices), torch.from_numpy(rest)) if keep else None

    def _meta(self, slot: int, num_classes: int) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "key": self.key, "epoch": slot, "num_samples": len(self.split),
                "num_classes": num_classes, "k": self.k, "value_dtype": self.value_dtype}

    def _read(self, path: Path, slot: int):
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            values, indices, rest = archive["values"], archive["indices"], archive["rest_logmass"]
        num_classes = int(meta.get("num_classes", -1))
        expected = self._meta(slot, num_classes)
        if meta != expected:
            raise ValueError(f"metadata {meta} differs from the key's {expected}")
        n, k = len(self.split), self.k
        if (values.shape != (n, k) or values.dtype != np.dtype(self.value_dtype)
                or indices.shape != (n, k) or indices.dtype != _index_dtype(num_classes)
                or rest.shape != (n,) or rest.dtype != np.float32):
            raise ValueError(f"array shapes/dtypes {values.shape} {values.dtype}, {indices.shape} "
                             f"{indices.dtype}, {rest.shape} {rest.dtype} are not those of N={n}, k={k}")
        if k > num_classes or (n and (indices.min() < 0 or indices.max() >= num_classes)):
            raise ValueError(f"class indices outside [0, {num_classes})")
        self.num_classes = num_classes
        return torch.from_numpy(values), torch.from_numpy(indices), torch.from_numpy(rest)

    def _write(self, path: Path, slot: int, values: np.ndarray, indices: np.ndarray, rest: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "key.json"
        if not key_file.is_file():
            atomic_write(key_file, lambda handle: handle.write(
                json.dumps(self.key_parts, indent=2, sort_keys=True).encode()))
        meta = np.array(json.dumps(self._meta(slot, self._num_classes())))
        atomic_write(path, lambda handle: np.savez(
            handle, values=values, indices=indices, rest_logmass=rest, meta=meta))
        log.info("teacher outputs: epoch %d of %d cached at %s (%.1f MB)",
                 slot + 1, self.n_epochs, path, path.stat().st_size / 1e6)

    def _num_classes(self) -> int:
        if self.num_classes is None:
            raise RuntimeError("number of classes unknown before an epoch is loaded or computed")
        return self.num_classes

    # ---- the teacher -------------------------------------------------------------------------

    def _compute(self, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.split)
        values = indices = None
        rest = np.empty(n, dtype=np.float32)
        device = next((p.device for p in self.teacher.parameters()), torch.device("cpu"))
        was_training = self.teacher.training
        self.teacher.eval()
        desc = f"teacher outputs epoch {slot + 1}/{self.n_epochs}"
        try:
            with torch.no_grad():
                batch_size = self.split.inference_batch(self.batch_size)
                steps = (n + batch_size - 1) // batch_size
                for batch, _, rows in progress(self.split.batches(batch_size), desc=desc, total=steps):
                    start = int(rows[0])  # in order: rows are start .. start + len - 1
                    batch = batch.to(device)
                    if self.augmentation is not None:
                        batch = self.augmentation.apply(batch, rows, slot)
                    log_probs = F.log_softmax(self.teacher(batch.to(device)).float(), dim=1).cpu()
                    if values is None:
                        values, indices = self._allocate(n, log_probs.shape[1])
                    top = log_probs.topk(self.k, dim=1)
                    values[start : start + len(rows)] = top.values.clamp_min(_LOG_FLOOR).numpy()
                    indices[start : start + len(rows)] = top.indices.numpy()
                    # logsumexp of the tail directly, not log(1 - sum of top-k p): that would
                    # cancel to noise for a confident teacher.
                    tail = log_probs.scatter(1, top.indices, float("-inf"))
                    rest[start : start + len(rows)] = tail.logsumexp(dim=1).clamp_min(_LOG_FLOOR).numpy()
        finally:
            self.teacher.train(was_training)
        if values is None:
            raise UserError("teacher cache: the dataset split is empty")
        return values, indices, rest

    def _allocate(self, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        if self.k > num_classes:
            raise UserError(f"teacher cache: k={self.k} exceeds the teacher's {num_classes} classes; "
                            f"use k <= {num_classes}")
        self.num_classes = num_classes
        return np.empty((n, self.k), dtype=self.value_dtype), np.empty((n, self.k), dtype=_index_dtype(num_classes))


def _index_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def teacher_outputs_for_run(ctx, teacher: nn.Module, n_epochs: int, *, alone: bool = False) -> TeacherOutputCache:
    """The cache for a run's training split with the recipe's augmentation and top-k: distillation
    fills it, and pruning's KD recovery (same teacher, data and augmentation) reads the same files.
    Each augmentation epoch is computed on first use, so early stopping saves the rest. `ctx` is
    the run's RunContext; `alone`: only this process uses it (a stage rank 0 runs by itself under
    torchrun), so it must not wait for the other ranks."""
    settings, data = ctx.recipe.distill, ctx.data
    crop = tuple(settings.augment_crop_scale) if settings.augment_crop_scale else None
    augmentation = (Augmentation(seed=ctx.spec.seed, shift_px=settings.augment_shift_px, crop_scale=crop,
                                 hflip=settings.augment_hflip) if settings.augment else None)
    return TeacherOutputCache(
        teacher, data.train, k=settings.teacher_top_k or data.num_classes, augmentation=augmentation,
        n_epochs=n_epochs, value_dtype=settings.teacher_cache_dtype, world=SINGLE if alone else ctx.world)
