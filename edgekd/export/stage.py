"""Write the deployable artifacts: the target backend's artifact for the teacher and the float
student at the baseline precision (fp32 on OpenVINO; fp16 on TensorRT and Core ML, what a team
would ship without edgekd), and for the student at the deployed precision (INT8, from the target's
own quantizer), plus the student's fp32 ONNX. The role keys stay "student_fp32" / "student_int8"
(float / quantized); each artifact's metadata says its actual precision and where it came from.

What a backend writes, and checks, is its own (edgekd/backends: `write_artifact`,
`check_artifact`, `finish_export`): e.g. TensorRT writes each model's ONNX (a Q/DQ ONNX for INT8),
the engine where TensorRT is here and export/build_engines.sh always; Core ML validates each ML
Program against the data's shape and class count and lists its ops.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from edgekd.backends import get_backend
from edgekd.models.deployed import load_deployed_models
from edgekd.quantizers import get_quantizer
from edgekd.results import ExportResult
from edgekd.run import RunContext
from edgekd.target import baseline_precision, runtime_version
from edgekd.version import __version__

log = logging.getLogger(__name__)

# Test images an artifact is checked on against its torch model (the whole test split at small sizes).
CHECK_IMAGES = 512


def artifact_paths(ctx: RunContext) -> dict[str, Path]:
    """Where export writes each model's artifact."""
    suffix = get_backend(ctx.target.backend).SUFFIX
    out = ctx.run_dir / "export"
    paths = {"teacher": out / f"teacher_{baseline_precision(ctx.target)}{suffix}",
             "student_fp32": out / f"student_fp32{suffix}"}
    if ctx.target.precision == "int8":
        paths["student_int8"] = out / f"student_int8{suffix}"
    return paths


def run(ctx: RunContext) -> ExportResult:
    target, data = ctx.target, ctx.data
    backend = get_backend(target.backend)
    example = ctx.example
    paths = artifact_paths(ctx)
    ctx.stage_dir("export")
    models = load_deployed_models(ctx)
    prune = ctx.result("prune") if ctx.is_done("prune") else None
    sparse = prune is not None and prune.shipped and prune.method == "2:4"
    artifacts: dict[str, str] = {}
    written: dict[str, dict[str, Any]] = {}
    checks: dict[str, Any] = {}
    for key, (model, arch, precision) in models.items():
        quantizer = get_quantizer(target.quantizer) if precision == "int8" else None
        written[key] = backend.write_artifact(
            model, example, paths[key], precision=precision,
            metadata=_metadata(ctx, arch, precision, role=key) | ({"sparsity": "2:4"} if sparse and key != "teacher" else {}),
            quantizer=quantizer, target=target, max_batch=ctx.recipe.bench.throughput_batch)
        artifacts[key] = str(paths[key].relative_to(ctx.run_dir))  # also where a device builds it later
        if "onnx" in written[key]:  # the file the artifact is built from, where it is built elsewhere
            artifacts[f"{key}_onnx"] = str((paths[key].parent / written[key]["onnx"]).relative_to(ctx.run_dir))
        check = backend.check_artifact(model, paths[key], data.test.head(CHECK_IMAGES), data.num_classes)
        if check is not None:
            checks[key] = check
            log.info("export: %s checked: %s", key, _check_line(check))
        log.info("export: %s -> %s", key, paths[key] if paths[key].exists() else artifacts.get(f"{key}_onnx"))
    details = backend.finish_export(ctx.run_dir, written, target)
    if sparse:
        details["sparsity_2_4"] = _check_2_4(ctx, prune, models, written, paths)
    if checks:
        details["artifact_checks"] = checks
    onnx_path = ctx.run_dir / "export" / "student_fp32.onnx"
    get_backend("onnx").export(models["student_fp32"][0], example, onnx_path,
                               metadata=_metadata(ctx, models["student_fp32"][1], "fp32", role="student_fp32"))
    artifacts["student_fp32_onnx"] = str(onnx_path.relative_to(ctx.run_dir))
    return ExportResult(artifacts=artifacts, backend=target.backend, backend_version=runtime_version(backend),
                        details=details)


def _check_2_4(ctx: RunContext, prune, models, written, paths) -> dict[str, Any]:
    """Whether each student ONNX the engines are built from kept the 2:4 pattern of the layers the
    prune stage sparsified (a Q/DQ export or a graph rewrite could lose it)."""
    from edgekd.prune.sparse_onnx import check_onnx_2_4

    layers = [row["layer"] for row in prune.plan.get("layers", []) if row.get("sparse")]
    out: dict[str, Any] = {"layers": layers}
    for key in ("student_fp32", "student_int8"):
        if key not in written or "onnx" not in written[key]:
            continue
        float_model = models["student_fp32"][0]
        expected = {name: tuple(float_model.get_submodule(name).weight.shape) for name in layers}
        check = check_onnx_2_4(paths[key].parent / written[key]["onnx"], expected)
        out[key] = check.to_dict()
        (log.info if check.ok else log.warning)("export: %s ONNX 2:4 pattern %s (missing %s, dense %s)", key,
                                                "kept" if check.ok else "LOST", check.missing, check.dense)
    return out


def _check_line(check: dict[str, Any]) -> str:
    if "argmax_agreement" in check:
        return (f"onnxruntime vs torch on {check['samples']} test images: argmax agreement "
                f"{check['argmax_agreement']:.4f}, max |diff| {check['max_abs_diff']:.4g}")
    return ", ".join(f"{key} {value}" for key, value in check.items() if key != "ops")


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
        # The inputs the artifact takes: the normalisation is not inside it, the application applies it.
        "preprocessing": ctx.data.preprocessing,
        "classes": json.dumps(ctx.data.classes),
        "recipe_sha256": hashlib.sha256(recipe_json.encode()).hexdigest()[:16],
    }


def summary(result: ExportResult) -> str:
    return f"{len(result.artifacts)} artifacts for {result.backend} {result.backend_version}"
