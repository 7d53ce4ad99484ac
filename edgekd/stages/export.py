"""Write the deployable artifacts: the target backend's IR for the teacher (fp32, the baseline
bench compares against) and the student (fp32 and the deployed precision), plus the fp32 ONNX.
Each artifact carries metadata saying what it is and where it came from."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from edgekd import __version__
from edgekd.backends import get_backend
from edgekd.models import build_model
from edgekd.quantizers import get_quantizer
from edgekd.run import RunContext
from edgekd.stages.distill import FP32_CHECKPOINT, INT8_CHECKPOINT

log = logging.getLogger(__name__)


def artifact_paths(ctx: RunContext) -> dict[str, Path]:
    """Where export writes each model; bench reads the same names."""
    suffix = get_backend(ctx.target.backend).SUFFIX
    out = ctx.run_dir / "export"
    paths = {"teacher": out / f"teacher_fp32{suffix}", "student_fp32": out / f"student_fp32{suffix}"}
    if ctx.target.precision == "int8":
        paths["student_int8"] = out / f"student_int8{suffix}"
    return paths


def run(ctx: RunContext) -> dict[str, Any]:
    data, target = ctx.data, ctx.target
    backend = get_backend(target.backend)
    onnx_backend = get_backend("onnx")
    arch = ctx.result("search")["chosen_arch"]
    distill_dir = ctx.run_dir / "distill"
    example = data.train.x[:1]
    paths = artifact_paths(ctx)
    ctx.stage_dir("export")

    student = build_model(arch, data.input_shape[0], data.num_classes)
    student.load_state_dict(torch.load(distill_dir / FP32_CHECKPOINT, map_location="cpu", weights_only=True))
    student.eval()
    teacher_arch = ctx.teacher.arch
    models = {"teacher": (ctx.teacher.model, teacher_arch, "fp32"), "student_fp32": (student, arch, "fp32")}
    if "student_int8" in paths:
        quantizer = get_quantizer(target.quantizer)
        fresh = build_model(arch, data.input_shape[0], data.num_classes)
        models["student_int8"] = (quantizer.load_int8(fresh, distill_dir / INT8_CHECKPOINT), arch, "int8")

    written = {}
    for key, (model, model_arch, precision) in models.items():
        metadata = _metadata(ctx, model_arch, precision, role=key)
        backend.export(model, example, paths[key], metadata=metadata)
        written[key] = str(paths[key].relative_to(ctx.run_dir))
        log.info("export: %s -> %s", key, paths[key])
    onnx_path = ctx.run_dir / "export" / "student_fp32.onnx"
    onnx_backend.export(student, example, onnx_path, metadata=_metadata(ctx, arch, "fp32", role="student_fp32"))
    written["student_fp32_onnx"] = str(onnx_path.relative_to(ctx.run_dir))
    return {"artifacts": written, "backend": target.backend, "backend_version": backend.version()}


def _metadata(ctx: RunContext, arch: dict[str, Any] | None, precision: str, role: str) -> dict[str, str]:
    recipe_json = json.dumps(ctx.spec.recipe, sort_keys=True)
    return {
        "edgekd_version": __version__,
        "target": ctx.target.name,
        "role": role,
        "arch": json.dumps(arch) if arch else "unknown (TorchScript or pickled teacher)",
        "precision": precision,
        "dataset": ctx.data.name,
        "input_shape": json.dumps([1, *ctx.data.input_shape]),
        "input_range": "float32 in [0, 1], NCHW",
        "classes": json.dumps(ctx.data.classes),
        "recipe_sha256": hashlib.sha256(recipe_json.encode()).hexdigest()[:16],
    }


def summary(metrics: dict[str, Any]) -> str:
    return f"{len(metrics['artifacts'])} artifacts for {metrics['backend']} {metrics['backend_version']}"
