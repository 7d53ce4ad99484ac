"""Building TensorRT engines: with the Python bindings when they are here, else with trtexec.

`tensorrt_api.trt` is read at call time (not imported by name), so that a test that patches it
to None sees TensorRT as absent everywhere.
"""

from __future__ import annotations

from pathlib import Path

from edgekd.backends.tensorrt import api as tensorrt_api
from edgekd.backends.tensorrt import trtexec as tensorrt_trtexec
from edgekd.backends.tensorrt.api import major_version
from edgekd.backends.tensorrt.trtexec import (
    _build_with_trtexec,
    builder_flags,
    find_trtexec,
    trtexec_version,
)
from edgekd.errors import MissingDependencyError, UserError


def missing_tensorrt() -> MissingDependencyError:
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


def strongly_typed_for(version_string: str) -> bool:
    """TensorRT 11 removed weak typing (and the FP16/INT8 flags); 10 still defaults to it."""
    return major_version(version_string) >= 11


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
    builder, trt_version = require_builder()
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
            input_shape=onnx_input_shape(onnx_path),
            **kwargs,
        )
    return {
        "builder": "python" if builder == "python" else "trtexec",
        "tensorrt_version": trt_version,
        "strongly_typed": str(strongly_typed).lower(),
    }


def require_builder() -> tuple[str, str]:
    """("python", version) or (trtexec path, version); MissingDependencyError when neither."""
    if tensorrt_api.trt is not None:
        return "python", tensorrt_api.trt.__version__
    exe = find_trtexec()
    if exe is None:
        raise missing_tensorrt()
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


def onnx_input_shape(onnx_path: Path) -> tuple[int, ...]:
    import onnx

    dims = (
        onnx.load(str(onnx_path), load_external_data=False)
        .graph.input[0]
        .type.tensor_type.shape.dim
    )
    return tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in dims)
