"""Write the deployable artifacts: the target backend's artifact for the teacher and the float
student at the baseline precision (fp32 on OpenVINO; fp16 on TensorRT and Core ML, what a team
would ship without edgekd), and for the student at the deployed precision (INT8, from the target's
own quantizer), plus the student's fp32 ONNX. The role keys stay "student_fp32" / "student_int8"
(float / quantized); each artifact's metadata says its actual precision and where it came from.

TensorRT: each model's ONNX (a Q/DQ ONNX from ModelOpt for INT8, checked in onnxruntime against the
fake-quantized torch model), then the engine where TensorRT is here; the exact trtexec commands
always go to export/build_engines.sh. Core ML: ML Programs validated and their ops listed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import torch

from edgekd.backends import get_backend
from edgekd.distill.stage import FP32_CHECKPOINT, INT8_CHECKPOINT
from edgekd.models.student import student_from_record
from edgekd.quantizers import get_quantizer
from edgekd.run import RunContext
from edgekd.target import baseline_precision, runtime_version, why_not_measurable
from edgekd.version import __version__

log = logging.getLogger(__name__)


def artifact_paths(ctx: RunContext) -> dict[str, Path]:
    """Where export writes each model; bench reads the same names."""
    suffix = get_backend(ctx.target.backend).SUFFIX
    out = ctx.run_dir / "export"
    paths = {"teacher": out / f"teacher_{baseline_precision(ctx.target)}{suffix}",
             "student_fp32": out / f"student_fp32{suffix}"}
    if ctx.target.precision == "int8":
        paths["student_int8"] = out / f"student_int8{suffix}"
    return paths


def onnx_path_for(artifact: Path) -> Path:
    """The ONNX a TensorRT engine is built from, kept beside it (a Q/DQ ONNX for INT8)."""
    return artifact.with_suffix(".trt.onnx")


def load_models(ctx: RunContext) -> dict[str, tuple[torch.nn.Module, dict[str, Any] | None, str]]:
    """(torch model, arch record, precision) behind each artifact: the teacher, the distilled float
    student and, for INT8 targets, the quantization-aware student as the target's quantizer left it."""
    target = ctx.target
    arch = ctx.result("search")["chosen_arch"]
    distill_dir = ctx.run_dir / "distill"
    student = student_from_record(ctx, arch)
    student.load_state_dict(torch.load(distill_dir / FP32_CHECKPOINT, map_location="cpu", weights_only=True))
    student.eval()
    baseline = baseline_precision(target)
    models = {"teacher": (ctx.teacher.model, ctx.teacher.arch, baseline), "student_fp32": (student, arch, baseline)}
    if target.precision == "int8":
        quantizer = get_quantizer(target.quantizer)
        fresh = student_from_record(ctx, arch)
        models["student_int8"] = (quantizer.load_int8(fresh, distill_dir / INT8_CHECKPOINT), arch, "int8")
    return models


def run(ctx: RunContext) -> dict[str, Any]:
    target = ctx.target
    backend = get_backend(target.backend)
    example = ctx.data.train.x[:1]
    paths = artifact_paths(ctx)
    ctx.stage_dir("export")
    models = load_models(ctx)
    writer = {"tensorrt": _export_tensorrt, "coreml": _export_coreml}.get(target.backend, _export_plain)
    written, extra = writer(ctx, backend, models, paths, example)
    arch = models["student_fp32"][1]
    onnx_path = ctx.run_dir / "export" / "student_fp32.onnx"
    get_backend("onnx").export(models["student_fp32"][0], example, onnx_path,
                               metadata=_metadata(ctx, arch, "fp32", role="student_fp32"))
    written["student_fp32_onnx"] = str(onnx_path.relative_to(ctx.run_dir))
    return {"artifacts": written, "backend": target.backend, "backend_version": runtime_version(backend), **extra}


def _export_plain(ctx, backend, models, paths, example):
    """OpenVINO (and ONNX Runtime): the backend converts each torch model, quantized ones included."""
    written = {}
    for key, (model, arch, precision) in models.items():
        backend.export(model, example, paths[key], metadata=_metadata(ctx, arch, precision, role=key))
        written[key] = str(paths[key].relative_to(ctx.run_dir))
        log.info("export: %s -> %s", key, paths[key])
    return written, {}


def _export_tensorrt(ctx, backend, models, paths, example):
    """The ONNX of each model (a Q/DQ ONNX from the target's quantizer for INT8), then the engine
    where TensorRT is here. The exact build commands always go to export/build_engines.sh, so the
    same engines can be built on the device."""
    from edgekd.backends.tensorrt.trtexec import build_trtexec_command

    target = ctx.target
    reason = why_not_measurable(target) if target.runner == "local" else "the engine is built on the device"
    max_batch = ctx.recipe.bench.throughput_batch
    written, commands, checks = {}, [], {}
    for key, (model, arch, precision) in models.items():
        metadata = _metadata(ctx, arch, precision, role=key)
        onnx_path = onnx_path_for(paths[key])
        if precision == "int8":
            quantizer = get_quantizer(target.quantizer)
            quantizer.export_onnx(model, example, onnx_path, metadata=metadata)
            # The Q/DQ ONNX in onnxruntime against the fake-quantized torch model it came from.
            check = quantizer.compare_with_onnxruntime(model, onnx_path, ctx.data.test.x)
            log.info("export: %s Q/DQ ONNX vs torch on %d test images: argmax agreement %.4f, max |diff| %.4g",
                     key, check["samples"], check["argmax_agreement"], check["max_abs_diff"])
            checks[key] = check
        else:
            backend.export_onnx(model, example, onnx_path, metadata=metadata, precision=precision)
        written[f"{key}_onnx"] = str(onnx_path.relative_to(ctx.run_dir))
        command = build_trtexec_command(
            onnx_path.relative_to(ctx.run_dir), paths[key].relative_to(ctx.run_dir), precision=precision,
            input_name=backend.onnx_input_name(onnx_path), input_shape=tuple(example.shape), max_batch=max_batch,
            timing_cache=Path("export/timing.cache"))
        commands.append(shlex.join(command))
        if reason is None:
            backend.export_from_onnx(onnx_path, paths[key], metadata=metadata, precision=precision,
                                     input_chw=tuple(example.shape[1:]), max_batch=max_batch,
                                     timing_cache=ctx.run_dir / "export" / "timing.cache")
            written[key] = str(paths[key].relative_to(ctx.run_dir))
        log.info("export: %s -> %s%s", key, onnx_path, "" if reason else f" and {paths[key].name}")
    script = ctx.run_dir / "export" / "build_engines.sh"
    script.write_text(_build_script(ctx, commands))
    script.chmod(0o755)
    if reason is not None:
        log.warning("export: no TensorRT engine built (%s); build them on the device with %s", reason, script)
    return written, {"qdq_onnx_checks": checks, "engine_build_commands": commands, "engine_build_script": str(script.relative_to(ctx.run_dir)),
                     "engines_built": reason is None, "engines_not_built_reason": reason}


def _build_script(ctx: RunContext, commands: list[str]) -> str:
    return "\n".join([
        "#!/bin/sh",
        f"# Build the TensorRT engines of this run ({ctx.target.name}) on the device, from the run dir:",
        "#   cd <run dir> && sh export/build_engines.sh",
        "# Written for TensorRT 10 (JetPack 6). On TensorRT 11 (strongly typed; no --fp16/--int8 flags) drop",
        "# the precision flags and add --stronglyTyped: the Q/DQ ONNX already carries INT8.",
        "set -e",
        "command -v trtexec >/dev/null || PATH=$PATH:/usr/src/tensorrt/bin",
        *commands,
        "",
    ])


def _export_coreml(ctx, backend, models, paths, example):
    """An ML Program per model, validated (spec checks, op inventory) here; the INT8 student from the
    target's quantizer (coremltools LinearQuantizer, W8A8)."""
    target = ctx.target
    written, checks = {}, {}
    for key, (model, arch, precision) in models.items():
        metadata = _metadata(ctx, arch, precision, role=key)
        options = {"compute_units": target.compute_units}
        if target.deployment_target:
            options["deployment_target"] = target.deployment_target
        if precision == "int8":
            get_quantizer(target.quantizer).export_mlpackage(model, example, paths[key], metadata=metadata, **options)
        else:
            backend.export(model, example, paths[key], metadata=metadata, precision=precision, **options)
        backend.validate(paths[key])
        checks[key] = {"valid": True, "ops": backend.op_inventory(paths[key])}
        written[key] = str(paths[key].relative_to(ctx.run_dir))
        log.info("export: %s -> %s (validated, %d op types)", key, paths[key], len(checks[key]["ops"]))
    return written, {"coreml_checks": checks}


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
