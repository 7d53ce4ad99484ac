"""OpenVINO backend: export a torch model to OpenVINO IR (.xml + .bin), run and time it on CPU.

Works for plain torch models and for NNCF fake-quantized ones: the IR then holds FakeQuantize
ops, which the CPU plugin executes as INT8.
"""

from __future__ import annotations

import logging
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from edgekd.backends import (
    no_device_settings,
    nothing_to_finish,
    require_file,
    the_artifact_itself,
    to_numpy,
    top1_accuracy,
)
from edgekd.errors import MissingDependencyError, UserError
from edgekd.measure import LatencyStats, time_calls

try:
    import openvino as ov
except ImportError as exc:  # optional dependency: say which extra to install
    raise MissingDependencyError("openvino", "openvino") from exc

log = logging.getLogger(__name__)

NAME = "openvino"
SUFFIX = ".xml"
PRECISIONS = ("fp32", "int8")

_DEVICE = "CPU"
# The CPU plugin may default to bf16 on CPUs that support it; we want the numbers we report to
# be those of the fp32 model (or of INT8 ops + f32 for the rest), so we always ask for f32.
_INFERENCE_PRECISION = "f32"
_RT_INFO_SECTION = "edgekd"


def version() -> str:
    return ov.__version__


def precision_note() -> str:
    """What we set for inference precision, to be written into reports."""
    return f"{_INFERENCE_PRECISION} inference precision hint"


@lru_cache(maxsize=1)
def _core() -> ov.Core:
    # One Core per process: creating it loads plugins, which is not free.
    return ov.Core()


def export(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    metadata: dict[str, str],
) -> Path:
    """Convert `model` to IR at `path` (.xml, plus .bin beside it) with a dynamic batch dimension.

    `example_input` is one batch shaped [N, C, H, W]; C, H, W stay static in the IR.
    `metadata` is stored in the IR's rt_info under the "edgekd" section.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"OpenVINO IR path must end in {SUFFIX}: {path}")

    input_shape = ov.PartialShape([-1, *example_input.shape[1:]])
    ov_model = _convert(model, example_input, input_shape)
    for key, value in metadata.items():
        ov_model.set_rt_info(str(value), [_RT_INFO_SECTION, key])

    path.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16=False: the default would silently halve fp32 weights, and we report fp32.
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    log.info("wrote OpenVINO IR %s (%.3f MB)", path, size_mb(path))
    return path


def _convert(
    model: torch.nn.Module, example_input: torch.Tensor, input_shape: ov.PartialShape
) -> ov.Model:
    was_training = model.training
    model.eval()  # dropout/batch-norm must be in inference mode while tracing
    # A failed conversion leaves the root logger at ERROR (OpenVINO's torch frontend sets it while
    # it retries), which would silence every later warning of the caller's program: restore it.
    root_level = logging.getLogger().level
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # OpenVINO traces through TorchScript: torch's deprecation notice for it and tracer
            # warnings from NNCF internals are not actionable by the user.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return ov.convert_model(model, example_input=example_input, input=[input_shape])
    except Exception as exc:  # conversion of arbitrary user models fails in many ways
        log.debug("OpenVINO conversion failed:\n%s", exc)
        raise UserError(
            f"OpenVINO cannot convert this model: {_conversion_error_summary(exc)}"
        ) from exc
    finally:
        model.train(was_training)  # leave the caller's model as we found it
        logging.getLogger().setLevel(root_level)


def _conversion_error_summary(exc: Exception) -> str:
    """Pick the informative line out of OpenVINO's multi-line conversion error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # Unsupported ops: the frontend's report ends with a "Summary:" of "-- ..." lines naming them;
    # its first line ("Check 'false' failed at src/...") tells the user nothing.
    if "Summary:" in lines:
        summary = lines[lines.index("Summary:") + 1 :]
        items = [line.removeprefix("-- ") for line in summary if line.startswith("-- ")]
        if items:
            return "; ".join(items)
    # Tracing failure: the model's own exception follows an "Exception:" line.
    if "Exception:" in lines:
        position = lines.index("Exception:")
        if position + 1 < len(lines):
            return lines[position + 1]
    return lines[0] if lines else type(exc).__name__


def read_metadata(path: Path) -> dict[str, str]:
    """The "edgekd" rt_info section of the IR at `path` ({} if it has none)."""
    ov_model = _read_model(path)
    if not ov_model.has_rt_info([_RT_INFO_SECTION]):
        return {}
    section = ov_model.get_rt_info([_RT_INFO_SECTION]).astype(dict)
    return {key: value.astype(str) for key, value in section.items()}


def _read_model(path: Path) -> ov.Model:
    path = require_file(Path(path))
    return _core().read_model(str(path))


def compile_config(threads: int | None = None) -> dict:
    """The CPU plugin settings every measurement uses (also the load probe's, see measure_load)."""
    config = {
        "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION,
        # LATENCY: one stream serving one request at a time, as on a single-camera edge device.
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def compile(
    path: Path,
    *,
    threads: int | None = None,
    batch: int | None = None,
    extra_config: dict | None = None,
) -> ov.CompiledModel:
    """Compile the IR for CPU; with `batch`, fix the batch dimension (static shapes run faster).
    `extra_config` adds plugin properties (e.g. PERF_COUNT for per-layer counters)."""
    ov_model = _read_model(path)
    if batch is not None:
        shape = ov_model.input(0).get_partial_shape()
        ov_model.reshape({0: ov.PartialShape([batch, *list(shape)[1:]])})
    config = compile_config(threads) | (extra_config or {})
    log.debug("compiling %s for %s with %s", path, _DEVICE, config)
    return _core().compile_model(ov_model, _DEVICE, config)


def benchmark(
    path: Path, *, warmup: int, runs: int, batch: int = 1, threads: int | None = None
) -> LatencyStats:
    """Latency of one synchronous inference of a `batch`-sized random input."""
    path = Path(path)
    compiled = compile(path, threads=threads, batch=batch)
    request = compiled.create_infer_request()
    input_port = compiled.input(0)
    # Random data rather than zeros: some kernels have fast paths for zeros.
    rng = np.random.default_rng(0)
    dtype = input_port.get_element_type().to_dtype()
    data = rng.random(tuple(input_port.get_shape())).astype(dtype)
    # Set the input once so that the timed call is inference only, not a host-side copy.
    request.set_input_tensor(ov.Tensor(data))

    def infer_once() -> None:
        # share_outputs=True: hand back views of the output buffers instead of copying them,
        # so the timing is of inference, not of a host-side copy we would throw away.
        request.infer(share_outputs=True)

    return time_calls(
        infer_once, warmup=warmup, runs=runs, batch=batch, desc=f"timing {path.name} b{batch}"
    )


def predict_logits(
    path: Path, x: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> np.ndarray:
    """Model outputs for all samples in `x` ([N, C, H, W]), computed `batch_size` at a time.

    One thread, so that outputs are reproducible: on CPUs without VNNI (AVX2 only, as on
    this project's machines) OpenVINO's INT8 kernels give logits that differ by up to ~1.0
    between identical calls when several threads split the work (measured 2026-11-21), which
    flips the odd borderline prediction. Latency is measured separately, with all threads."""
    run = predictor(path)
    inputs = to_numpy(x)
    chunks = [run(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)]
    return np.concatenate(chunks) if chunks else np.empty((0,), dtype=np.float32)


def predictor(path: Path):
    """A function batch -> logits over one compiled model (one thread: see predict_logits)."""
    compiled = compile(path, threads=1)  # dynamic batch: the last chunk may be smaller
    request = compiled.create_infer_request()
    output_port = compiled.output(0)

    def run(x) -> np.ndarray:
        result = request.infer({0: to_numpy(x)})
        # Copy: the result buffer belongs to the request and is reused by the next infer().
        return np.array(result[output_port], copy=True)

    return run


def accuracy(
    path: Path, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> float:
    """Top-1 accuracy of the IR on (x, y), as a fraction in [0, 1]."""
    return top1_accuracy(predict_logits(path, x, batch_size=batch_size), y)


def size_mb(path: Path) -> float:
    """Size on disk of the IR: .xml plus .bin, in MB (1e6 bytes)."""
    xml_path = require_file(Path(path))
    bin_path = xml_path.with_suffix(".bin")
    total_bytes = xml_path.stat().st_size + (bin_path.stat().st_size if bin_path.exists() else 0)
    return total_bytes / 1e6


# --- per-layer counters, first-load time, peak memory (for the report) -----------------------

# Layers whose INT8 execution is what quantization buys. Others (reorders, pooling, the
# FakeQuantize that quantizes the input) may run in float in a correctly quantized model.
_COMPUTE_LAYER_TYPES = frozenset({
    "Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "FullyConnectedQuantized",
    "FullyConnectedQuantizedLegacy", "MatMul", "BinaryConvolution",
})
_EXEC_PRECISIONS = {"i8": "INT8", "u8": "INT8", "f32": "FP32", "fp32": "FP32", "bf16": "BF16",
                    "f16": "FP16", "fp16": "FP16", "i32": "INT32"}
_LOAD_PROBE = Path(__file__).with_name("openvino_load_probe.py")
_LOAD_PROBE_TIMEOUT_S = 600


def execution_precision(exec_type: str) -> str:
    """The precision a CPU-plugin primitive ran in, from its implementation name
    ("brgconv_avx512_I8" -> INT8, "jit_avx2_FP32" / "gemm_mlas_f32" -> FP32)."""
    suffix = exec_type.rsplit("_", 1)[-1].lower()
    return _EXEC_PRECISIONS.get(suffix, "other")


def profile_layers(
    path: Path, *, warmup: int, runs: int, threads: int | None = None, batch: int = 1
) -> dict:
    """Per-layer latency and execution precision from the CPU plugin's performance counters
    (PERF_COUNT), over `runs` inferences after `warmup`: each executed layer's median time.

    The counters of one inference are per primitive after fusion: a convolution's fused bias,
    activation and output FakeQuantize are counted in it. `compute_float` lists the compute
    layers (convolutions, fully connected, MatMul) that did not run in INT8: in an INT8 artifact,
    the layers that fell back."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    compiled = compile(Path(path), threads=threads, batch=batch, extra_config={"PERF_COUNT": True})
    request = compiled.create_infer_request()
    port = compiled.input(0)
    data = np.random.default_rng(0).random(tuple(port.get_shape())).astype(port.get_element_type().to_dtype())
    request.set_input_tensor(ov.Tensor(data))
    for _ in range(warmup):
        request.infer(share_outputs=True)
    times_ms: dict[str, list[float]] = {}
    kinds: dict[str, tuple[str, str]] = {}
    for _ in range(runs):
        request.infer(share_outputs=True)
        for info in request.get_profiling_info():
            if info.status != ov.ProfilingInfo.Status.EXECUTED:
                continue  # fused into another primitive, or a constant
            times_ms.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1000.0)
            kinds[info.node_name] = (info.node_type, info.exec_type)
    origins = _layer_origins(compiled)
    layers = []
    for name, samples in times_ms.items():  # execution order
        node_type, exec_type = kinds[name]
        layers.append({"name": name, "origin": origins.get(name, name), "type": node_type, "exec_type": exec_type,
                       "precision": execution_precision(exec_type), "median_ms": round(float(np.median(samples)), 5)})
    total = sum(layer["median_ms"] for layer in layers)
    for layer in layers:
        layer["share"] = round(layer["median_ms"] / total, 4) if total > 0 else 0.0
    compute = [layer for layer in layers if layer["type"] in _COMPUTE_LAYER_TYPES]
    return {
        "source": "OpenVINO CPU performance counters (PERF_COUNT, InferRequest.get_profiling_info)",
        "runtime": f"openvino {ov.__version__}", "runs": runs, "warmup": warmup, "batch": batch,
        "layers": layers, "total_ms": round(total, 5),
        "compute_int8": [layer["name"] for layer in compute if layer["precision"] == "INT8"],
        "compute_float": [layer["name"] for layer in compute if layer["precision"] != "INT8"],
    }


def _layer_origins(compiled: ov.CompiledModel) -> dict[str, str]:
    """Executed primitive -> the torch module it came from. After quantization and fusion a
    convolution is named after a Multiply ("Multiply_139870"); the runtime model's
    originalLayersNames still lists the source layers ("__module.stages.0.0.conv1.1/aten::...")."""
    origins = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt_info = op.get_rt_info()
        if "originalLayersNames" not in rt_info:
            continue
        names = rt_info["originalLayersNames"].astype(str).split(",")
        modules = [n.removeprefix("__module.").split("/")[0] for n in names if n.startswith("__module.")]
        if modules:
            origins[op.get_friendly_name()] = modules[0] + (f" (+{len(names) - 1} fused)" if len(names) > 1 else "")
    return origins


def measure_load(path: Path, *, threads: int | None = None) -> dict:
    """First-load (read + compile) time, first-inference time and peak memory of the IR at
    batch 1, each measured in a fresh Python process (openvino_load_probe.py says exactly what
    is counted), so that nothing this process already loaded or cached is missed."""
    import json
    import subprocess
    import sys

    path = require_file(Path(path))
    # -I: the script's own folder (which holds this module, openvino.py) must not shadow the
    # openvino package, and no PYTHON* variable or user site should change what is loaded.
    command = [sys.executable, "-I", str(_LOAD_PROBE), str(path), json.dumps(compile_config(threads))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_LOAD_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"loading {path.name} in a fresh process took over {_LOAD_PROBE_TIMEOUT_S} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise UserError(f"could not load {path.name} in a fresh process: {errors[-1]}")
    result = json.loads(lines[-1])
    result["memory_includes"] = ("OpenVINO's CPU plugin, the model read and compiled at batch 1, one infer request "
                                 "and one inference; not the Python interpreter, numpy or the openvino module")
    return result


# --- what the stages call (edgekd.backends.Backend) -------------------------------------------


def runtime_missing() -> str | None:
    return None  # the CPU plugin runs wherever the package imports


def baseline_precision(precisions: list[str]) -> str:
    return "fp32"


def write_artifact(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                   metadata: dict[str, str], quantizer, target, max_batch: int) -> dict:
    """The IR; an NNCF INT8 model converts to an IR whose FakeQuantize ops the CPU plugin runs as INT8."""
    export(model, example_input, path, metadata=metadata)
    return {}


def write_for_timing(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                     quantizer) -> Path:
    return export(model, example_input, Path(path).with_suffix(SUFFIX), metadata={"purpose": "latency probe"})


def check_artifact(model: torch.nn.Module, path: Path, inputs: torch.Tensor, num_classes: int) -> dict | None:
    return None  # bench measures the IR's own accuracy


finish_export = nothing_to_finish


timed_path = the_artifact_itself


def accuracy_stand_in(path: Path):
    """With a remote runner the IR still runs here: the same file, on this CPU."""
    return (sys.modules[__name__], Path(path), f"{NAME} artifact") if Path(path).exists() else None


device_conditions = no_device_settings


def profile_artifact(path: Path, *, warmup: int, runs: int, threads: int | None = None, work_dir=None) -> dict:
    """Per-layer time and precision (profile_layers) and first-load time and peak memory
    (measure_load) of the IR, for the report."""
    per_layer = profile_layers(path, warmup=warmup, runs=runs, threads=threads)
    load = measure_load(path, threads=threads)
    log.info("bench: %s loads in %.1f ms, peak memory %.1f MB; %d layers profiled, %d compute layers not INT8",
             Path(path).name, load["load_ms"], load["peak_memory_mb"], len(per_layer["layers"]),
             len(per_layer["compute_float"]))
    return {"per_layer": per_layer, **{key: load[key] for key in
                                       ("load_ms", "first_inference_ms", "peak_memory_mb", "memory_includes",
                                        "memory_method")}}
