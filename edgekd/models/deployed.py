"""The torch models behind a run's artifacts: the teacher, the distilled float student and, for
INT8 targets, the quantization-aware student as the target's quantizer left it. Export converts
them; bench uses them to predict latency and as the accuracy stand-in where the runtime is absent."""

from __future__ import annotations

from typing import Any

import torch

from edgekd.io import load_weights_only
from edgekd.models.student import student_from_record
from edgekd.quantizers import get_quantizer
from edgekd.run import RunContext
from edgekd.target import baseline_precision

# role -> (torch model, arch record or None, precision it deploys at)
DeployedModels = dict[str, tuple[torch.nn.Module, dict[str, Any] | None, str]]


def load_deployed_models(ctx: RunContext) -> DeployedModels:
    target = ctx.target
    arch = ctx.result("search").chosen_arch
    distill = ctx.result("distill")
    student = student_from_record(ctx, arch)
    student.load_state_dict(load_weights_only(ctx.run_dir / distill.fp32_checkpoint, what="distilled student"))
    student.eval()
    baseline = baseline_precision(target)
    models = {"teacher": (ctx.teacher.model, ctx.teacher.arch, baseline), "student_fp32": (student, arch, baseline)}
    if distill.int8_checkpoint is not None:
        quantizer = get_quantizer(target.quantizer)
        fresh = student_from_record(ctx, arch)
        models["student_int8"] = (quantizer.load_int8(fresh, ctx.run_dir / distill.int8_checkpoint), arch, "int8")
    return models
