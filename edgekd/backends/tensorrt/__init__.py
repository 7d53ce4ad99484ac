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

import json
import logging
from pathlib import Path

import numpy as np
import torch

from edgekd.backends import require_file, top1_accuracy
from edgekd.backends.tensorrt import api as tensorrt_api
from edgekd.backends.tensorrt import trtexec as tensorrt_trtexec
from edgekd.backends.tensorrt.api import (  # trt: None without the bindings
    major_version,
    trt,
)
from edgekd.backends.tensorrt.qdq import prepare_int8_onnx
from edgekd.backends.tensorrt.trtexec import (
    _build_with_trtexec,
    _run_trtexec,
    _shape_text,
    build_trtexec_benchmark_command,
    builder_flags,
    check_precision,
    find_trtexec,
    latency_stats_from_trtexec,
    trtexec_version,
)
from edgekd.backends.tensorrt.trtexec_output import parse_trtexec_output
from edgekd.errors import MissingDependencyError, UserError
from edgekd.measure import LatencyStats

log = logging.getLogger(__name__)

NAME = "tensorrt"
SUFFIX = ".engine"
PRECISIONS = tensorrt_trtexec.PRECISIONS  # fp32, fp16, int8; the builder flags check them
_DEFAULT_WARMUP_MS = 200  # trtexec's own default


# --- finding TensorRT -------------------------------------------------------------------------


def _missing_tensorrt() -> MissingDependencyError:
    error = MissingDependencyError("tensorrt", "tensorrt")
    # Read through the module, so that a test patching the fallback paths patches them here too.
    locations = ", ".join(str(path.parent) for path in tensorrt_trtexec._TRTEXEC_FALLBACK_PATHS)
    # MissingDependencyError builds its message from (package, extra); we add the trtexec half.
    message = (
        f"{error.args[0]}; and trtexec was not found on PATH or in {locations}. TensorRT itself "
        "comes with JetPack on a Jetson, or from NVIDIA's package index on an x86 GPU host"
    )
    error.args = (message,)
    return error


def version() -> str:
    """TensorRT version of the Python bindings, else of trtexec."""
    if trt is not None:
        return trt.__version__
    exe = find_trtexec()
    if exe is None:
        raise _missing_tensorrt()
    return trtexec_version(exe) or "unknown"


def strongly_typed_for(version_string: str) -> bool:
    """TensorRT 11 removed weak typing (and the FP16/INT8 flags); 10 still defaults to it."""
    return major_version(version_string) >= 11


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
    _require_builder()  # fail before writing anything
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
    _sidecar(path).write_text(json.dumps(record, indent=2, sort_keys=True))
    log.info("wrote TensorRT engine %s (%.3f MB, %s)", path, size_mb(path), precision)
    return path


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    max_batch: int,
    sparsity: bool = False,
    timing_cache: Path | None = None,
    workspace_mb: int | None = None,
) -> dict[str, str]:
    """Build `engine_path` from `onnx_path`.

    Returns {"builder", "tensorrt_version", "strongly_typed"} for the engine's metadata.
    """
    builder, trt_version = _require_builder()
    strongly_typed = strongly_typed_for(trt_version)
    onnx_path = _fp16_onnx_if_needed(Path(onnx_path), precision, strongly_typed)
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {
        "precision": precision,
        "max_batch": max_batch,
        "sparsity": sparsity,
        "timing_cache": timing_cache,
        "workspace_mb": workspace_mb,
        "strongly_typed": strongly_typed,
    }
    if builder == "python":
        _build_with_python_api(onnx_path, engine_path, **kwargs)
    else:
        _build_with_trtexec(
            builder,
            onnx_path,
            engine_path,
            input_name=onnx_input_name(onnx_path),
            input_shape=_onnx_input_shape(onnx_path),
            **kwargs,
        )
    return {
        "builder": "python" if builder == "python" else "trtexec",
        "tensorrt_version": trt_version,
        "strongly_typed": str(strongly_typed).lower(),
    }


def _require_builder() -> tuple[str, str]:
    """("python", version) or (trtexec path, version); MissingDependencyError when neither."""
    if trt is not None:
        return "python", trt.__version__
    exe = find_trtexec()
    if exe is None:
        raise _missing_tensorrt()
    return exe, trtexec_version(exe) or "unknown"


def _fp16_onnx_if_needed(onnx_path: Path, precision: str, strongly_typed: bool) -> Path:
    """In a strongly typed build, fp16 must be in the graph: convert with ModelOpt AutoCast."""
    if precision != "fp16" or not strongly_typed:
        return onnx_path
    try:
        import onnx
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        raise UserError(
            "TensorRT 11 builds fp16 only from an FP16 ONNX (it removed the FP16 flag); "
            "install nvidia-modelopt for its AutoCast, or use precision fp32/int8"
        ) from exc
    converted = convert_to_mixed_precision(
        onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True
    )
    fp16_path = onnx_path.with_suffix(".fp16.onnx")
    onnx.save(converted, str(fp16_path))
    return fp16_path


def _build_with_python_api(
    onnx_path: Path, engine_path: Path, *, precision: str, sparsity: bool, **kwargs
) -> None:
    flags = builder_flags(precision, sparsity=sparsity, strongly_typed=kwargs["strongly_typed"])
    tensorrt_api.build_engine(onnx_path, engine_path, flags=flags, **kwargs)


def onnx_input_name(onnx_path: Path) -> str:
    import onnx

    return onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name


def _onnx_input_shape(onnx_path: Path) -> tuple[int, ...]:
    import onnx

    dims = (
        onnx.load(str(onnx_path), load_external_data=False)
        .graph.input[0]
        .type.tensor_type.shape.dim
    )
    return tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in dims)


# --- metadata, timing, prediction -------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return Path(f"{path}.json")


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata recorded beside the engine at export ({} if there is none)."""
    sidecar = _sidecar(require_file(Path(path)))
    if not sidecar.is_file():
        return {}
    return {key: str(value) for key, value in json.loads(sidecar.read_text()).items()}


def profile(path: Path, *, runs: int, warmup_ms: int = _DEFAULT_WARMUP_MS, batch: int = 1) -> dict:
    """Run trtexec on the engine and return its parsed performance summary (see trtexec_output)."""
    path = require_file(Path(path))
    exe = find_trtexec()
    if exe is None:
        raise (
            _missing_tensorrt()
            if trt is None
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
    chw = tuple(_onnx_input_shape(onnx_path)[1:])
    return export_from_onnx(onnx_path, engine_path, metadata={"source_onnx": onnx_path.name}, precision=precision,
                            input_chw=chw, max_batch=max_batch)


def predict_logits(
    path: Path, x: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> np.ndarray:
    """Engine outputs for all samples in `x` ([N, C, H, W]); needs the Python bindings and CUDA."""
    if trt is None:
        raise _missing_tensorrt()
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
