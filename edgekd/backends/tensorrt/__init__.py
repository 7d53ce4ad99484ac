"""TensorRT backend: torch model -> ONNX (backends.onnx) -> TensorRT engine, timed by trtexec.

An engine is built with the `tensorrt` Python API when it imports, else with `trtexec` (JetPack
ships it in /usr/src/tensorrt/bin, not on PATH). Importing this module needs neither: the parts
that are plain data (trtexec command lines, builder flags, output parsing) work, and are tested,
on machines without TensorRT. Finding, driving and reading trtexec is in backends.tensorrt_trtexec
(its output parser in backends.trtexec_output), the Q/DQ checks in backends.tensorrt_qdq, the
Python-API build and inference in backends.tensorrt_api, the Jetson device state in
backends.jetson.

INT8 is explicit quantization only: the ONNX must carry QuantizeLinear/DequantizeLinear pairs
(from NNCF or ModelOpt QAT/PTQ). TensorRT 10 deprecated implicit INT8 calibration and TensorRT 11
removed it, together with the FP16/INT8 builder flags: in TensorRT 11 every network is strongly
typed and the precision comes from the ONNX itself. So precision means:

    TensorRT 10 (weakly typed): fp16 -> FP16 flag; int8 -> Q/DQ ONNX + INT8 flag
    TensorRT 11 (strongly typed): fp16 -> an FP16 ONNX (ModelOpt AutoCast); int8 -> Q/DQ ONNX

TensorRT's Q/DQ support is signed INT8 with zero point 0 (symmetric). NNCF quantizes non-negative
activations (after ReLU, image input) as uint8 with zero point 0, which TensorRT rejects, so
`export_onnx` rewrites those as int8 with twice the scale (tensorrt_qdq): same range, one bit less
resolution.
Engine metadata lives in a JSON file beside the engine (`<name>.engine.json`): a plan file has
no metadata field.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import numpy as np
import torch

from edgekd.backends import require_file, top1_accuracy
from edgekd.backends.tensorrt import api as tensorrt_api
from edgekd.backends.tensorrt import trtexec as tensorrt_trtexec
from edgekd.backends.tensorrt.build import (
    build_engine,
    missing_tensorrt,
    onnx_input_name,
    onnx_input_shape,
    require_builder,
    strongly_typed_for,  # noqa: F401 - part of this backend's API (tests, callers)
)
from edgekd.backends.tensorrt.qdq import prepare_int8_onnx
from edgekd.backends.tensorrt.sidecar import read_metadata, write_metadata
from edgekd.backends.tensorrt.trtexec import (
    _run_trtexec,
    _shape_text,
    build_trtexec_benchmark_command,
    build_trtexec_command,
    check_precision,
    find_trtexec,
    latency_stats_from_trtexec,
    trtexec_version,
    write_build_script,
)
from edgekd.backends.tensorrt.trtexec_output import parse_trtexec_output
from edgekd.errors import UserError
from edgekd.measure import LatencyStats

log = logging.getLogger(__name__)

NAME = "tensorrt"
SUFFIX = ".engine"
PRECISIONS = tensorrt_trtexec.PRECISIONS  # fp32, fp16, int8; the builder flags check them
_DEFAULT_WARMUP_MS = 200  # trtexec's own default


# --- finding TensorRT -------------------------------------------------------------------------


def version() -> str:
    """TensorRT version of the Python bindings, else of trtexec."""
    if tensorrt_api.trt is not None:
        return tensorrt_api.trt.__version__
    exe = find_trtexec()
    if exe is None:
        raise missing_tensorrt()
    return trtexec_version(exe) or "unknown"


def precision_note() -> str:
    """What our latency numbers mean, to be written into reports."""
    return (
        "trtexec 'Latency' (H2D copy + GPU compute + D2H copy, --useSpinWait); "
        "GPU compute time alone is in the trtexec profile"
    )


def export_onnx(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    metadata: dict[str, str],
    precision: str,
) -> Path:
    """The ONNX TensorRT builds from: edgekd's ONNX export, made TensorRT-ready for int8."""
    from edgekd.backends import onnx as onnx_backend

    check_precision(precision)
    path = onnx_backend.export(model, example_input, Path(path), metadata=metadata)
    if precision != "int8":
        return path
    prepare_int8_onnx(path)
    return path


# --- build: needs TensorRT --------------------------------------------------------------------


def export(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    metadata: dict[str, str],
    precision: str = "fp16",
    max_batch: int | None = None,
    sparsity: bool = False,
    timing_cache: Path | None = None,
    workspace_mb: int | None = None,
) -> Path:
    """Build a TensorRT engine at `path` (.engine) for batches 1..max_batch (default: the
    example's N).

    The intermediate ONNX is kept beside it as `<name>.trt.onnx`; `metadata`, plus what is needed
    to run the engine, goes into `<name>.engine.json`.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"TensorRT engine path must end in {SUFFIX}: {path}")
    check_precision(precision)
    require_builder()  # fail before writing anything
    onnx_path = export_onnx(
        model, example_input, path.with_suffix(".trt.onnx"), metadata=metadata, precision=precision
    )
    return export_from_onnx(
        onnx_path,
        path,
        metadata=metadata,
        precision=precision,
        input_chw=tuple(example_input.shape[1:]),
        max_batch=max_batch or int(example_input.shape[0]),
        sparsity=sparsity,
        timing_cache=timing_cache,
        workspace_mb=workspace_mb,
    )


def export_from_onnx(
    onnx_path: Path,
    path: Path,
    *,
    metadata: dict[str, str],
    precision: str,
    input_chw: tuple[int, ...],
    max_batch: int = 1,
    sparsity: bool = False,
    timing_cache: Path | None = None,
    workspace_mb: int | None = None,
) -> Path:
    """Build the engine at `path` from an ONNX already written (e.g. a quantizer's Q/DQ ONNX),
    with `metadata` and what is needed to run the engine in `<name>.engine.json`."""
    path = Path(path)
    info = build_engine(
        onnx_path,
        path,
        precision=precision,
        max_batch=max_batch,
        sparsity=sparsity,
        timing_cache=timing_cache,
        workspace_mb=workspace_mb,
    )
    record = {
        **{key: str(value) for key, value in metadata.items()},
        "precision": precision,
        "input_name": onnx_input_name(onnx_path),
        "input_chw": _shape_text(input_chw),
        "max_batch": str(max_batch),
        "sparsity": str(sparsity).lower(),
        **info,
    }
    write_metadata(path, record)
    log.info("wrote TensorRT engine %s (%.3f MB, %s)", path, size_mb(path), precision)
    return path


# --- metadata, timing, prediction -------------------------------------------------------------


def profile(path: Path, *, runs: int, warmup_ms: int = _DEFAULT_WARMUP_MS, batch: int = 1) -> dict:
    """Run trtexec on the engine and return its parsed performance summary (see trtexec_output)."""
    path = require_file(Path(path))
    exe = find_trtexec()
    if exe is None:
        raise (
            missing_tensorrt()
            if tensorrt_api.trt is None
            else UserError(
                "timing TensorRT engines needs trtexec, which ships with TensorRT (on a Jetson: "
                "/usr/src/tensorrt/bin/trtexec); put it on PATH"
            )
        )
    metadata = read_metadata(path)
    if batch > int(metadata.get("max_batch", batch)):
        raise UserError(
            f"batch {batch} exceeds the engine's max_batch {metadata['max_batch']}; "
            "re-export with a larger one"
        )
    shapes = None
    if "input_name" in metadata and "input_chw" in metadata:
        shapes = f"{metadata['input_name']}:{batch}x{metadata['input_chw']}"
    command = build_trtexec_benchmark_command(
        path, runs=runs, warmup_ms=warmup_ms, shapes=shapes, trtexec=exe
    )
    return parse_trtexec_output(_run_trtexec(command))


def benchmark(
    path: Path,
    *,
    warmup: int,
    runs: int,
    batch: int = 1,
    threads: int | None = None,
    warmup_ms: int = _DEFAULT_WARMUP_MS,
) -> LatencyStats:
    """End-to-end latency of one `batch`-sized inference, timed by trtexec.

    trtexec warms up for a duration (`warmup_ms`), not a count, so `warmup` is not used as such:
    the stats record how many warm-up queries trtexec actually ran. `threads` does not apply to
    GPU inference and is ignored.
    """
    if Path(path).suffix == ".onnx":
        path = engine_for_onnx(Path(path), max_batch=batch)
    if threads is not None:
        log.debug("threads=%s ignored: TensorRT inference runs on the GPU", threads)
    log.debug("warmup=%d requested; trtexec warms up for %d ms instead", warmup, warmup_ms)
    return latency_stats_from_trtexec(
        profile(path, runs=runs, warmup_ms=warmup_ms, batch=batch), batch=batch, runs=runs
    )


def engine_for_onnx(onnx_path: Path, *, max_batch: int = 1) -> Path:
    """The engine of an ONNX that was copied to the device (edgekd measures over SSH from a host
    without TensorRT): built beside it, INT8 when the ONNX carries Q/DQ nodes, else FP16, and
    reused when it is already there."""
    import onnx

    onnx_path = require_file(Path(onnx_path))
    engine_path = onnx_path.with_name(onnx_path.name.removesuffix(".onnx").removesuffix(".trt") + f"-b{max_batch}.engine")
    if engine_path.is_file():
        return engine_path
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    precision = "int8" if any(node.op_type == "QuantizeLinear" for node in graph.node) else "fp16"
    chw = tuple(onnx_input_shape(onnx_path)[1:])
    return export_from_onnx(onnx_path, engine_path, metadata={"source_onnx": onnx_path.name}, precision=precision,
                            input_chw=chw, max_batch=max_batch)


def predict_logits(
    path: Path, x: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> np.ndarray:
    """Engine outputs for all samples in `x` ([N, C, H, W]); needs the Python bindings and CUDA."""
    if tensorrt_api.trt is None:
        raise missing_tensorrt()
    if not torch.cuda.is_available():
        raise UserError(
            "TensorRT prediction needs a CUDA GPU visible to torch "
            "(torch.cuda.is_available() is False)"
        )
    return tensorrt_api.predict_logits(path, x, batch_size=batch_size)


def accuracy(
    path: Path, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> float:
    """Top-1 accuracy of the engine on (x, y), as a fraction in [0, 1]."""
    return top1_accuracy(predict_logits(path, x, batch_size=batch_size), y)


def size_mb(path: Path) -> float:
    """Size on disk of the engine in MB (1e6 bytes)."""
    return require_file(Path(path)).stat().st_size / 1e6


# --- what the stages call (edgekd.backends.Backend) -------------------------------------------


def runtime_missing() -> str | None:
    if tensorrt_api.trt is None and find_trtexec() is None:
        return ("TensorRT is not installed here (neither the tensorrt Python package nor trtexec); "
                "run edgekd on the device, or give it with --device ssh://user@host")
    return None


def baseline_precision(precisions: list[str]) -> str:
    """fp16: what a team ships on a GPU without edgekd (TensorRT builds fp16 kernels for it)."""
    return "fp16" if "fp16" in precisions else "fp32"


def write_artifact(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                   metadata: dict[str, str], quantizer, target, max_batch: int) -> dict:
    """The ONNX the engine is built from (for INT8 the target quantizer's Q/DQ ONNX), then the
    engine where TensorRT is here and the runner is local; the exact trtexec command always, so
    the same engine can be built on the device (finish_export writes them into one script)."""
    path = Path(path)
    onnx_path = onnx_path_for(path)
    # A 2:4 sparse model (edgekd/prune, metadata "sparsity": "2:4"): trtexec --sparsity=enable lets
    # TensorRT pick sparse tactics where they are faster.
    sparsity = metadata.get("sparsity") == "2:4"
    if precision == "int8":
        quantizer.export_onnx(model, example_input, onnx_path, metadata=metadata)
    else:
        export_onnx(model, example_input, onnx_path, metadata=metadata, precision=precision)
    timing_cache = path.parent / "timing.cache"
    built = target.runner == "local" and runtime_missing() is None
    if built:
        export_from_onnx(onnx_path, path, metadata=metadata, precision=precision,
                         input_chw=tuple(example_input.shape[1:]), max_batch=max_batch, timing_cache=timing_cache,
                         sparsity=sparsity)
    command = build_trtexec_command(
        Path(onnx_path.parent.name) / onnx_path.name, Path(path.parent.name) / path.name, precision=precision,
        input_name=onnx_input_name(onnx_path), input_shape=tuple(example_input.shape), max_batch=max_batch,
        timing_cache=Path(path.parent.name) / timing_cache.name, sparsity=sparsity)
    return {"onnx": onnx_path.name, "engine_built": built, "build_command": shlex.join(command)}


def write_for_timing(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                     quantizer) -> Path:
    """The ONNX (Q/DQ for INT8): TensorRT builds its engine where it runs, here or on the device
    behind the runner (benchmark of an ONNX)."""
    onnx_path = onnx_path_for(Path(path).with_suffix(SUFFIX))
    if precision == "int8":
        return quantizer.export_onnx(model, example_input, onnx_path)
    return export_onnx(model, example_input, onnx_path, metadata={"purpose": "latency probe"}, precision=precision)


def check_artifact(model: torch.nn.Module, path: Path, inputs: torch.Tensor, num_classes: int) -> dict | None:
    """The engine's ONNX in onnxruntime against the torch model (for INT8: the fake-quantized one)."""
    from edgekd.backends import onnx as onnx_backend

    return onnx_backend.compare_with_torch(model, onnx_path_for(Path(path)), inputs)


def finish_export(run_dir: Path, written: dict[str, dict], target) -> dict:
    commands = [details["build_command"] for details in written.values()]
    script = write_build_script(run_dir / "export" / "build_engines.sh", target.name, commands)
    built = all(details["engine_built"] for details in written.values())
    reason = None if built else ("the engine is built on the device" if target.runner != "local"
                                 else runtime_missing())
    if reason is not None:
        log.warning("export: no TensorRT engine built (%s); build them on the device with %s", reason, script)
    return {"engine_build_commands": commands, "engine_build_script": str(script.relative_to(run_dir)),
            "engines_built": built, "engines_not_built_reason": reason}


def onnx_path_for(artifact: Path) -> Path:
    """The ONNX a TensorRT engine is built from, kept beside it (a Q/DQ ONNX for INT8)."""
    return Path(artifact).with_suffix(".trt.onnx")


def timed_path(path: Path) -> Path:
    """The engine; where it could not be built here (a remote device), the ONNX it is built from,
    which the device turns into an engine."""
    return Path(path) if Path(path).exists() else onnx_path_for(path)


def accuracy_stand_in(path: Path):
    """The engine's ONNX in onnxruntime: the same graph (Q/DQ for INT8) the engine is built from."""
    from edgekd.backends import onnx as onnx_backend

    onnx_path = onnx_path_for(Path(path))
    if not onnx_path.exists():
        return None
    return onnx_backend, onnx_path, f"onnxruntime on {onnx_path.name} (the engine's ONNX)"


def device_conditions() -> dict[str, str]:
    """nvpmodel mode, jetson_clocks, L4T/JetPack ("unknown" off a Jetson)."""
    from edgekd.backends.tensorrt.jetson import jetson_state

    return jetson_state()


def predictor(path: Path):
    """A function batch -> logits (needs the bindings and CUDA); loads the engine on each call."""
    return lambda x: predict_logits(path, x)


def profile_artifact(path: Path, *, warmup: int, runs: int, threads: int | None = None, work_dir=None) -> dict:
    """trtexec's exported per-layer profile, layer info and load log of a built engine."""
    path = Path(path)
    if path.suffix != SUFFIX or not path.is_file():
        return {"profile_unavailable": "no TensorRT engine was built here (per-layer times need trtexec on the device)"}
    from edgekd.backends.tensorrt.layer_profile import profile_engine

    return profile_engine(path, work_dir or path.parent / f"{path.stem}-profile", runs=runs,
                          warmup_ms=_DEFAULT_WARMUP_MS)
