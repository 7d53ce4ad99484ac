"""Build and run TensorRT engines with the `tensorrt` Python bindings.

The backend (backends.tensorrt) decides whether the bindings or trtexec build an engine and checks
that what is needed is there; this module only drives the bindings. Importing it does not need
them: `trt` is None when they are missing, and only the functions that use it fail.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from edgekd.backends import require_file, to_numpy
from edgekd.errors import UserError

try:
    import tensorrt as trt
except (ImportError, OSError):  # OSError: a bindings-only wheel without the TensorRT libraries
    trt = None  # trtexec alone still builds and times engines

log = logging.getLogger(__name__)


def major_version(version_string: str) -> int:
    """The major number of a TensorRT version string ("10.3.0" -> 10), 0 if there is none."""
    match = re.match(r"(\d+)", version_string)
    return int(match.group(1)) if match else 0


def network_creation_flags(trt_module, major: int, *, strongly_typed: bool) -> int:
    """The bit mask for Builder.create_network in this TensorRT major version."""
    flag_enum = trt_module.NetworkDefinitionCreationFlag
    if major < 10:
        # TensorRT 8/9: explicit batch must be asked for; 10 made it the only mode.
        return 1 << int(flag_enum.EXPLICIT_BATCH)
    if strongly_typed and major == 10:
        return 1 << int(flag_enum.STRONGLY_TYPED)
    return 0  # 10 weakly typed; 11 is always strongly typed (the flag is deprecated and ignored)


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    *,
    flags: list[str],
    max_batch: int,
    timing_cache: Path | None,
    workspace_mb: int | None,
    strongly_typed: bool,
) -> None:
    """Build `engine_path` from `onnx_path`, setting the trt.BuilderFlag members in `flags`."""
    logger = _trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(
        network_creation_flags(trt, major_version(trt.__version__), strongly_typed=strongly_typed)
    )
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(
            f"TensorRT cannot parse {onnx_path.name}: {errors[0] if errors else 'no error given'}"
        )
    config = builder.create_builder_config()
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.add_optimization_profile(_batch_profile(builder, network, max_batch))
    if timing_cache is not None:
        cache_bytes = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        # ignore_mismatch=False: a cache from another GPU or TensorRT version is rejected,
        # not misused
        config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(
            f"TensorRT could not build an engine from {onnx_path.name}; its errors are logged above"
        )
    engine_path.write_bytes(bytes(serialized))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))


def _batch_profile(builder, network, max_batch: int):
    """Optimization profile for the dynamic batch axis: 1..max_batch, tuned for max_batch."""
    tensor = network.get_input(0)
    chw = tuple(tensor.shape)[1:]
    if any(dim < 0 for dim in chw):
        raise UserError(
            f"TensorRT engines need static C, H, W; input {tensor.name!r} has {tuple(tensor.shape)}"
        )
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (1, *chw), (max_batch, *chw), (max_batch, *chw))
    return profile


def predict_logits(path: Path, x: np.ndarray | torch.Tensor, *, batch_size: int) -> np.ndarray:
    """Engine outputs for all samples in `x` ([N, C, H, W]), run on the CUDA GPU torch uses.

    The caller checks that the bindings and a CUDA GPU are there.
    """
    engine = trt.Runtime(_trt_logger()).deserialize_cuda_engine(
        require_file(Path(path)).read_bytes()
    )
    if engine is None:
        raise UserError(f"TensorRT cannot load {path}: built for another GPU or TensorRT version?")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    output_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    max_batch = engine.get_tensor_profile_shape(input_name, 0)[2][0]
    inputs = torch.from_numpy(to_numpy(x))
    stream = torch.cuda.current_stream()
    chunks = []
    for start in range(0, len(inputs), min(batch_size, max_batch)):
        batch = inputs[start : start + min(batch_size, max_batch)].cuda()
        context.set_input_shape(input_name, tuple(batch.shape))
        output = torch.empty(
            tuple(context.get_tensor_shape(output_name)), dtype=torch.float32, device="cuda"
        )
        context.set_tensor_address(input_name, batch.data_ptr())
        context.set_tensor_address(output_name, output.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise UserError(f"TensorRT inference failed on {path}")
        stream.synchronize()
        chunks.append(output.cpu().numpy())
    return np.concatenate(chunks) if chunks else np.empty((0,), dtype=np.float32)


def _trt_logger():
    """A TensorRT logger that writes into `logging` instead of stderr."""
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,  # TensorRT's INFO is build chatter
        trt.ILogger.Severity.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg: str) -> None:
            log.log(levels.get(severity, logging.INFO), "[TensorRT] %s", msg)

    return _Logger()
