"""Where the student's weights start (distill.init): random, the teacher's kept weights, or a
checkpoint. MEAL V2 credits much of its gain to a good student initialisation.

- "random": the builder's initialisation (a student cut from the teacher module is re-drawn).
- "teacher": a teacher-derived student (search family "teacher-derived", edgekd/models/derived.py)
  keeps the first blocks of each teacher stage, thinner; it starts from the teacher's weights of
  those blocks, the channels kept chosen by Torch-Pruning's group L2 magnitude (as derived.py cuts
  them). A student cut from a teacher module already holds them. Any other student cannot, and
  the stage logs why and trains from random weights.
- a path: a state dict loaded with torch.load(weights_only=True) (no code runs); a missing,
  corrupt or mismatched file is a UserError.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.io import PickledObjectError, load_weights_only, unwrap_state_dict
from edgekd.models.student import is_derived, reinitialise_

log = logging.getLogger(__name__)

INIT_CHOICES = "random, teacher, or the path of a state dict (.pt)"


def check_init(init: str) -> None:
    """Fail early on an init that can never work (a checkpoint path that does not exist)."""
    if init in ("random", "teacher"):
        return
    if not Path(init).is_file():
        raise UserError(f"distill.init {init!r}: no such checkpoint file; use {INIT_CHOICES}")


def initialise_student_(
    student: nn.Module,
    arch: dict[str, Any],
    init: str,
    teacher: nn.Module,
    teacher_arch: dict[str, Any] | None,
    example_input: torch.Tensor,
) -> str:
    """Set the student's starting weights in place; returns what was done, for the metrics.
    A student cut from the teacher module (family "derived", edgekd/models/student.py) is built
    with the teacher's kept weights: "teacher" keeps them, "random" draws fresh ones."""
    derived = is_derived(arch)
    if init == "random":
        if derived:
            reinitialise_(student)
        return "random"
    if init == "teacher" and derived:
        log.info("distill: student starts from the teacher's kept weights (it was cut from the teacher)")
        return "teacher"
    if init == "teacher":
        reason = teacher_init_blocker(arch, teacher_arch)
        if reason is None:
            try:
                load_teacher_weights_(student, arch, teacher, example_input)
                log.info("distill: student starts from the teacher's kept weights")
                return "teacher"
            except _CannotInit as exc:
                reason = str(exc)
        log.warning("distill.init teacher: not possible, %s; the student starts from random weights", reason)
        return f"random (teacher init not possible: {reason})"
    load_checkpoint_(student, Path(init))
    log.info("distill: student starts from checkpoint %s", init)
    return f"checkpoint {init}"


def teacher_init_blocker(arch: dict[str, Any], teacher_arch: dict[str, Any] | None) -> str | None:
    """Why the student cannot start from the teacher's weights, or None when it can."""
    name = arch.get("name", arch.get("family"))
    if arch.get("origin") != "teacher-derived":
        return (f"the chosen student {name} comes from the {arch.get('family')!r} search family, not cut "
                "from the teacher (add 'teacher-derived' to search.families, or use it alone)")
    if teacher_arch is None:
        return "the teacher is not a built-in architecture, so its blocks cannot be matched by name"
    if teacher_arch.get("family") != arch.get("family"):
        return f"the teacher is a {teacher_arch.get('family')} and the student a {arch.get('family')}"
    return None


class _CannotInit(Exception):
    pass


def load_teacher_weights_(
    student: nn.Module, arch: dict[str, Any], teacher: nn.Module, example_input: torch.Tensor
) -> None:
    """Copy the teacher, cut each stage to the student's depth (its first blocks, which is how
    derive_from_record cuts), thin its channels to the student's widths, and load the result."""
    cut = copy.deepcopy(teacher).eval()
    student_stages, teacher_stages = getattr(student, "stages", None), getattr(cut, "stages", None)
    if not isinstance(student_stages, nn.Sequential) or not isinstance(teacher_stages, nn.Sequential) \
            or len(student_stages) != len(teacher_stages):
        raise _CannotInit("the student's stages do not match the teacher's")
    for index, stage in enumerate(student_stages):
        if len(stage) > len(teacher_stages[index]):
            raise _CannotInit(f"stage {index} of the student is deeper than the teacher's")
        teacher_stages[index] = nn.Sequential(*list(teacher_stages[index])[: len(stage)])
    try:
        _thin_to_(cut, student, example_input[:1])
    except _CannotInit:
        raise
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises many kinds
        raise _CannotInit(f"thinning the teacher's channels failed: {str(exc).splitlines()[0]}") from exc
    wanted = {k: v.shape for k, v in student.state_dict().items()}
    got = {k: v.shape for k, v in cut.state_dict().items()}
    if wanted != got:
        differ = sorted(k for k in wanted.keys() | got.keys() if wanted.get(k) != got.get(k))
        raise _CannotInit(f"the thinned teacher's weights do not fit the student ({differ[:3]} differ)")
    student.load_state_dict(cut.state_dict())


def _thin_to_(model: nn.Module, student: nn.Module, example: torch.Tensor) -> None:
    """Prune `model`'s output channels layer by layer down to the same-named student layer's,
    keeping the channels of largest group L2 magnitude; coupled layers (residual adds, depthwise
    convs) shrink with their group."""
    import torch_pruning as tp  # heavy import; only a teacher-initialised student needs it

    targets = {name: m for name, m in student.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    classifier = layers[-1][0]  # its outputs are the classes: never pruned
    for p in model.parameters():  # the dependency graph is read from autograd
        p.requires_grad_(True)
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for name, layer in layers:
        if name == classifier or name not in targets:
            continue
        conv = isinstance(layer, nn.Conv2d)
        have = layer.out_channels if conv else layer.out_features
        want = targets[name].out_channels if conv else targets[name].out_features
        if have <= want or (conv and layer.groups > 1):
            continue  # already thin enough, or a depthwise conv that shrinks with its group
        prune = tp.prune_conv_out_channels if conv else tp.prune_linear_out_channels
        scores = importance(graph.get_pruning_group(layer, prune, idxs=list(range(have))))
        drop = torch.argsort(scores)[: have - want].tolist()
        group = graph.get_pruning_group(layer, prune, idxs=drop)
        if not graph.check_pruning_group(group):
            raise _CannotInit(f"layer {name} cannot be thinned from {have} to {want} channels")
        group.prune()
    for p in model.parameters():
        p.requires_grad_(False)


def load_checkpoint_(student: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise UserError(f"distill.init checkpoint '{path}' does not exist; use {INIT_CHOICES}")
    try:
        obj = load_weights_only(path, what="distill.init checkpoint")
    except PickledObjectError as exc:
        raise UserError(f"{exc}; save torch.save(model.state_dict(), path) instead") from exc
    obj = unwrap_state_dict(obj, path, what="distill.init checkpoint")
    own = student.state_dict()
    missing = sorted(own.keys() - obj.keys())
    unexpected = sorted(obj.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & obj.keys() if own[k].shape != obj[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", wrong)) if keys]
        raise UserError(f"distill.init checkpoint '{path}' does not fit the chosen student "
                        f"({'; '.join(parts)}); it must be a state dict of this architecture")
    student.load_state_dict(obj)
