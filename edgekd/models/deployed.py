"""The torch models behind a run's artifacts: the teacher, the float student and, for INT8 targets,
the quantization-aware student as the target's quantizer left it. Export converts them; bench uses
them to predict latency and as the accuracy stand-in where the runtime is absent.

The student is the distilled one, or the pruned one when the prune stage shipped it (its weights
narrow the unpruned architecture: edgekd/models/resize.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from edgekd.io import load_weights_only
from edgekd.models.resize import narrow_to_state_dict_
from edgekd.models.student import student_from_record
from edgekd.quantizers import get_quantizer
from edgekd.run import RunContext
from edgekd.target import baseline_precision

# role -> (torch model, arch record or None, precision it deploys at)
DeployedModels = dict[str, tuple[torch.nn.Module, dict[str, Any] | None, str]]


def load_deployed_models(ctx: RunContext) -> DeployedModels:
    target = ctx.target
    arch, fresh, fp32_checkpoint, int8_checkpoint = shipped_student(ctx)
    student = load_float(fresh(), ctx.run_dir / fp32_checkpoint, "student")
    baseline = baseline_precision(target)
    models = {"teacher": (ctx.teacher.model, ctx.teacher.arch, baseline), "student_fp32": (student, arch, baseline)}
    if int8_checkpoint is not None:
        quantizer = get_quantizer(target.quantizer)
        narrowed = load_float(fresh(), ctx.run_dir / fp32_checkpoint, "student")  # the int8 wrapper's float shape
        models["student_int8"] = (quantizer.load_int8(narrowed, ctx.run_dir / int8_checkpoint), arch, "int8")
    return models


def shipped_student(ctx: RunContext):
    """(arch record, a function building its unpruned module, fp32 checkpoint, INT8 checkpoint or
    None) of the student that ships: the prune stage's when it shipped, else distillation's."""
    distill = ctx.result("distill")
    prune = ctx.result("prune") if ctx.is_done("prune") else None
    if prune is not None and prune.shipped:
        if prune.flow == "teacher":
            def fresh():
                return copy.deepcopy(ctx.teacher.model)
        else:
            def fresh():
                return student_from_record(ctx, ctx.result("search").chosen_arch)
        return prune.arch, fresh, prune.fp32_checkpoint, prune.int8_checkpoint
    arch = ctx.result("search").chosen_arch
    return arch, lambda: student_from_record(ctx, arch), distill.fp32_checkpoint, distill.int8_checkpoint


def load_float(model: torch.nn.Module, path: Path, what: str) -> torch.nn.Module:
    """`model` with the weights at `path`, narrowed first where they are of a pruned model."""
    narrow_to_state_dict_(model, load_weights_only(path, what=f"{what} weights"))
    return model.eval()
