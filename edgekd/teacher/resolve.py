"""The teacher of a run: the user's checkpoint, or one edgekd trains on first use and caches.

The cache (`$EDGEKD_CACHE_DIR`, else `$XDG_CACHE_HOME/edgekd`, else `~/.cache/edgekd`) is keyed by
the training data's content, the architecture, the seed and the training settings, so the
embedded default trains once per machine. The run dir keeps its own copy, so a run stays
reproducible when the cache is cleared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.data import DatasetSplits
from edgekd.errors import UserError
from edgekd.io import (
    cache_dir,
    fingerprint_file,
    first_line,
    load_weights_only,
    save_torch,
    write_json,
)
from edgekd.models import build_model, resolve_arch
from edgekd.teacher.hub import is_hub_name
from edgekd.teacher.loading import load_teacher
from edgekd.training import evaluate_accuracy, fit

if TYPE_CHECKING:
    from edgekd.run import RunContext, RunSpec

log = logging.getLogger(__name__)

# A teacher below this many times chance level on the validation split stops the run.
WEAK_TEACHER_FACTOR = 2.0


@dataclass
class Teacher:
    model: nn.Module
    arch: dict[str, Any] | None  # None for TorchScript / pickled teachers
    source: str  # where it came from, for the report
    val_accuracy: float


def resolve_teacher(ctx: "RunContext") -> Teacher:
    data = ctx.data
    channels, num_classes = data.input_shape[0], data.num_classes
    run_copy = ctx.run_dir / "teacher" / "teacher.pt"
    if ctx.spec.teacher is not None:
        return load_user_teacher(ctx.spec, data)
    if run_copy.with_suffix(".json").is_file():  # a resumed run keeps the teacher it started with
        info = json.loads(run_copy.with_suffix(".json").read_text())
        model = build_model(info["arch"], channels, num_classes)
        model.load_state_dict(load_weights_only(run_copy, what="the run's teacher copy"))
        return Teacher(model.eval(), info["arch"], info["source"], info["val_accuracy"])
    teacher = _cached_or_trained_teacher(ctx)
    run_copy.parent.mkdir(exist_ok=True)
    torch.save(teacher.model.state_dict(), run_copy)
    # The .json is written last and atomically: its presence marks a complete run copy.
    write_json(run_copy.with_suffix(".json"),
               {"arch": teacher.arch, "source": teacher.source, "val_accuracy": teacher.val_accuracy})
    return teacher


def load_user_teacher(spec: "RunSpec", data: DatasetSplits) -> Teacher:
    """The user's checkpoint, checked against the data's input shape and class count, and (on a
    resumed run) against the file the run started with."""
    if spec.teacher_sha256 is not None and Path(spec.teacher).is_file() \
            and fingerprint_file(spec.teacher) != spec.teacher_sha256:
        raise UserError(
            f"teacher '{spec.teacher}' changed since this run started (sha256 differs): the run's students "
            "were chosen and trained against the old file. Restore it, or start a new run without --resume"
        )
    hub = is_hub_name(spec.teacher_arch)
    arch = resolve_arch(spec.teacher_arch) if spec.teacher_arch and not hub else None
    model, kind = load_teacher(spec.teacher, spec.teacher_arch if hub else arch, data.input_shape[0],
                               data.num_classes, trust_pickle=spec.trust_pickle)
    _check_output_shape(model, data.input_shape, data.num_classes, spec.teacher)
    source = f"{spec.teacher} ({kind}{', ' + spec.teacher_arch if hub else ''})"
    # Only a built-in record rebuilds the architecture; any other teacher is its module.
    return Teacher(model, arch if kind == "state_dict" else None, source, evaluate_accuracy(model, data.val))


def _runs_on(model: nn.Module, shape: tuple[int, ...]) -> bool:
    try:
        with torch.no_grad():
            model(torch.zeros(2, *shape))
        return True
    except Exception:  # noqa: BLE001 - any failure: it does not take this shape either
        return False


def check_teacher_accuracy(teacher: Teacher, num_classes: int, *, allow_weak: bool) -> None:
    """A teacher near chance level on the validation split has almost always been given inputs it
    was not trained on. Stop before any search or training, naming the usual causes and the
    options that fix each; --allow-weak-teacher goes on anyway (the report says so)."""
    chance = 1.0 / num_classes
    if teacher.val_accuracy >= WEAK_TEACHER_FACTOR * chance:
        return
    message = (f"the teacher scores {teacher.val_accuracy:.1%} on the validation split, near chance ({chance:.1%} "
               f"for {num_classes} classes): it is probably not seeing the inputs it was trained on. Check its "
               "normalisation (--mean/--std, e.g. imagenet), channel order (data.channel_order) and count "
               "(--channels), input size (--image-size) and class order (--classes); or pass --allow-weak-teacher "
               "to go on anyway")
    if not allow_weak:
        raise UserError(message)
    log.warning("%s (going on: --allow-weak-teacher)", message.split(": it is probably")[0])


def _cached_or_trained_teacher(ctx: "RunContext") -> Teacher:
    data, settings = ctx.data, ctx.recipe.teacher
    arch = resolve_arch(settings.arch)
    key = _cache_key(ctx, arch)
    path = cache_dir() / "teachers" / f"{data.name}-{arch.get('name', 'custom')}-{key}.pt"
    torch.manual_seed(ctx.spec.seed)  # the cache key holds the seed, so the init must follow it
    model = build_model(arch, data.input_shape[0], data.num_classes)
    if path.is_file():
        try:
            model.load_state_dict(load_weights_only(path, what="cached teacher"))
            log.info("teacher: using cached %s", path)
            return Teacher(model.eval(), arch, f"trained by edgekd, cached at {path}", evaluate_accuracy(model, data.val))
        except Exception as exc:  # noqa: BLE001 - a broken cache entry is retrained, not fatal
            log.warning("teacher cache %s is unreadable (%s); retraining", path, exc)
    log.info("teacher: training %s on %s for up to %d epochs (first use; cached afterwards)",
             arch.get("name"), data.name, settings.epochs)
    result = fit(
        model, data.train, data.val, lambda logits, labels, _index, _epoch: F.cross_entropy(logits, labels),
        epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
        patience=settings.patience, seed=ctx.spec.seed, weight_decay=5e-4, desc="teacher",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch(model.state_dict(), path)
    log.info("teacher: val accuracy %.4f after %d epochs, cached at %s", result.best_val_accuracy, result.epochs_run, path)
    return Teacher(model, arch, f"trained by edgekd, cached at {path}", result.best_val_accuracy)


def _cache_key(ctx: "RunContext", arch: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(ctx.data.train.fingerprint().encode())
    settings = dataclasses.asdict(ctx.recipe.teacher)
    digest.update(json.dumps([arch, settings, ctx.spec.seed], sort_keys=True).encode())
    return digest.hexdigest()[:12]


def _check_output_shape(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, path: str) -> None:
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as exc:  # noqa: BLE001
        other = 3 if input_shape[0] == 1 else 1
        if _runs_on(model, (other, *input_shape[1:])):
            raise UserError(
                f"teacher '{path}' takes {other}-channel images, but the data has {input_shape[0]} channel(s); "
                f"convert them with --channels {other} (recipe: data.channels)"
            ) from exc
        raise UserError(
            f"teacher '{path}' fails on the data's input shape {tuple(input_shape)}: {first_line(exc)}"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise UserError(
            f"teacher '{path}' returns {type(out).__name__}, not one tensor of class scores; wrap it in a module "
            "whose forward returns the logits only"
        )
    if tuple(out.shape) != (2, num_classes):
        raise UserError(
            f"teacher '{path}' outputs shape {tuple(out.shape[1:])} per image, but the data has {num_classes} classes"
        )
