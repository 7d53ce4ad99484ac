"""ONNX backend: export a torch model to .onnx and run it with ONNX Runtime on CPU.

NNCF-quantized models are stripped to torch-native fake-quantizers first, which the legacy
(TorchScript) exporter writes as standard QuantizeLinear/DequantizeLinear pairs.
"""

from __future__ import annotations

import logging
import sys
import warnings
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
    import onnx
    import onnxruntime as ort
except ImportError as exc:  # optional dependency: say which extra to install
    raise MissingDependencyError("onnxruntime", "onnx") from exc

log = logging.getLogger(__name__)

NAME = "onnx"
SUFFIX = ".onnx"
PRECISIONS = ("fp32", "int8")  # int8: a Q/DQ ONNX, run by onnxruntime's QDQ kernels

_OPSET = 17
_INPUT_NAME = "input"
_OUTPUT_NAME = "logits"
_PROVIDERS = ["CPUExecutionProvider"]


def version() -> str:
    return ort.__version__


def precision_note() -> str:
    return "onnxruntime CPUExecutionProvider, default graph optimizations"


def export(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    metadata: dict[str, str],
) -> Path:
    """Export `model` to `path` with a dynamic batch axis; `metadata` goes into metadata_props."""
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"ONNX model path must end in {SUFFIX}: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)

    was_training = model.training
    model.eval()  # dropout/batch-norm must be in inference mode while tracing
    try:
        exportable = _strip_nncf(model, example_input)
        _torch_export(exportable, example_input, path)
    finally:
        model.train(was_training)  # leave the caller's model as we found it

    onnx_model = onnx.load(str(path))
    onnx.helper.set_model_props(onnx_model, {key: str(value) for key, value in metadata.items()})
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))
    log.info("wrote ONNX model %s (%.3f MB)", path, size_mb(path))
    return path


def _strip_nncf(model: torch.nn.Module, example_input: torch.Tensor) -> torch.nn.Module:
    """A copy with NNCF quantizers replaced by torch FakeQuantize, or `model` if not NNCF."""
    if not _is_nncf_model(model):
        return model
    import nncf  # present: _is_nncf_model said so

    log.debug("stripping NNCF quantizers before ONNX export")
    return nncf.strip(model, example_input=example_input)  # copies; the caller's model is kept


def _is_nncf_model(model: torch.nn.Module) -> bool:
    # A model can carry NNCF hooks only if nncf was imported in this process; checking first
    # spares fp32 exports the slow nncf import.
    if "nncf" not in sys.modules:
        return False
    try:
        # nncf.quantize on torch (nncf >= 3) returns the same class with hooks injected, which
        # nncf.torch.is_wrapped_model does NOT recognise; function_hook's is_wrapped does.
        from nncf.torch.function_hook.wrapper import is_wrapped
    except ImportError:
        return False
    return is_wrapped(model)


def _torch_export(model: torch.nn.Module, example_input: torch.Tensor, path: Path) -> None:
    batch_axis = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # We choose the legacy exporter on purpose (it writes NNCF fake-quantizers as
            # standard Q/DQ nodes); its deprecation warning and tracer warnings from NNCF
            # internals are not actionable by the user.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (example_input,),
                str(path),
                dynamo=False,
                opset_version=_OPSET,
                input_names=[_INPUT_NAME],
                output_names=[_OUTPUT_NAME],
                dynamic_axes={_INPUT_NAME: batch_axis, _OUTPUT_NAME: batch_axis},
            )
    except Exception as exc:  # export of arbitrary user models fails in many ways
        log.debug("ONNX export failed:\n%s", exc)
        first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise UserError(
            f"ONNX cannot export this model: {first_line or type(exc).__name__}"
        ) from exc


def read_metadata(path: Path) -> dict[str, str]:
    """The model's metadata_props as a dict."""
    # load_external_data=False: we only need the header, not the weights.
    onnx_model = onnx.load(str(require_file(Path(path))), load_external_data=False)
    return {entry.key: entry.value for entry in onnx_model.metadata_props}


def _session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(require_file(Path(path))), sess_options=options, providers=_PROVIDERS)


def benchmark(path: Path, *, warmup: int, runs: int, batch: int = 1, threads: int | None = None) -> LatencyStats:
    """Latency of one synchronous `batch`-sized inference of random input in onnxruntime."""
    session = _session(path, threads)
    model_input = session.get_inputs()[0]
    # Random data rather than zeros: some kernels have fast paths for zeros.
    data = np.random.default_rng(0).random((batch, *model_input.shape[1:])).astype(np.float32)
    feed = {model_input.name: data}
    return time_calls(lambda: session.run(None, feed), warmup=warmup, runs=runs, batch=batch,
                      desc=f"timing {Path(path).name} b{batch}")


def predict_logits(
    path: Path, x: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> np.ndarray:
    """Model outputs for all samples in `x` ([N, C, H, W]), computed `batch_size` at a time."""
    run = predictor(path)
    inputs = to_numpy(x)
    chunks = [run(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)]
    return np.concatenate(chunks) if chunks else np.empty((0,), dtype=np.float32)


def predictor(path: Path):
    """A function batch -> logits over one onnxruntime session."""
    session = _session(path)
    input_name = session.get_inputs()[0].name
    return lambda x: session.run(None, {input_name: to_numpy(x)})[0]


def accuracy(
    path: Path, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> float:
    """Top-1 accuracy of the model on (x, y), as a fraction in [0, 1]."""
    return top1_accuracy(predict_logits(path, x, batch_size=batch_size), y)


def size_mb(path: Path) -> float:
    """Size on disk of the .onnx file in MB (1e6 bytes); we never write external data."""
    return require_file(Path(path)).stat().st_size / 1e6


def compare_with_torch(model: torch.nn.Module, onnx_path: Path, x: torch.Tensor, *,
                       batch_size: int = 256) -> dict[str, float]:
    """How closely onnxruntime's run of the exported ONNX follows the torch model it came from (a
    fake-quantized one for a Q/DQ ONNX) on `x`: max absolute logit difference and the fraction of
    samples with the same top-1."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = torch.cat([model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    expected = expected.numpy()
    actual = predict_logits(onnx_path, x, batch_size=batch_size)
    result = {
        "max_abs_diff": float(np.max(np.abs(actual - expected))),
        "argmax_agreement": float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))),
        "samples": len(x),
    }
    log.info("onnxruntime vs torch on %d samples: max |diff| %.3g, top-1 agreement %.4f",
             result["samples"], result["max_abs_diff"], result["argmax_agreement"])
    return result


# --- what the stages call (edgekd.backends.Backend) -------------------------------------------


def runtime_missing() -> str | None:
    return None


def baseline_precision(precisions: list[str]) -> str:
    return "fp32"


def write_artifact(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                   metadata: dict[str, str], quantizer, target, max_batch: int) -> dict:
    if precision == "int8" and hasattr(quantizer, "export_onnx"):
        quantizer.export_onnx(model, example_input, path, metadata=metadata)  # the quantizer's own Q/DQ layout
    else:
        export(model, example_input, path, metadata=metadata)
    return {}


def write_for_timing(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                     quantizer) -> Path:
    path = Path(path).with_suffix(SUFFIX)
    write_artifact(model, example_input, path, precision=precision, metadata={"purpose": "latency probe"},
                   quantizer=quantizer, target=None, max_batch=1)
    return path


def check_artifact(model: torch.nn.Module, path: Path, inputs: torch.Tensor, num_classes: int) -> dict | None:
    return compare_with_torch(model, path, inputs)


finish_export = nothing_to_finish


timed_path = the_artifact_itself


def accuracy_stand_in(path: Path):
    return (sys.modules[__name__], Path(path), f"{NAME} artifact") if Path(path).exists() else None


device_conditions = no_device_settings


def profile_artifact(path: Path, *, warmup: int, runs: int, threads: int | None = None, work_dir=None) -> dict:
    return {"profile_unavailable": "per-layer counters, load time and memory are not measured for onnxruntime yet"}
