"""CoreML backend: torch model -> TorchScript trace -> ML Program (.mlpackage) with coremltools.

Conversion, weight compression, metadata, op inventory and spec checks run on any OS. Running a
model (prediction, timing, accuracy) needs the Core ML framework, i.e. macOS: coremltools says
"Model prediction is only supported on macOS" elsewhere, and so do we, as a UserError.

Precisions: fp32 and fp16 are the compute precision of the ML Program. int8 and palettized
compress the weights only (int8 linear symmetric per channel, or a k-means lookup table); Core ML
decompresses them at load time and computes in fp16, so they shrink the file and the memory
traffic, not the arithmetic. W8A8 (int8 activations too, which the Neural Engine of A17 Pro/M4
and later runs natively) needs activation statistics from predictions on sample data
(`coremltools.optimize.coreml.experimental.linear_quantize_activations`), hence macOS; it is not
offered here. W8A8 comes from training instead: a model from the CoreML quantizer
(edgekd.quantizers.coreml_int8, coremltools' LinearQuantizer, calibrated and QAT-trained in torch)
is finalized and converted with its activation scales as quantize/dequantize ops and its weights
int8 (constexpr_affine_dequantize); that needs iOS17/macOS14 or later.
"""

from __future__ import annotations

import logging
import platform
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from edgekd.backends import (
    no_device_settings,
    nothing_to_finish,
    the_artifact_itself,
    to_numpy,
    top1_accuracy,
)
from edgekd.errors import MissingDependencyError, UserError
from edgekd.io import first_line
from edgekd.measure import LatencyStats, time_calls
from edgekd.version import __version__

try:
    import coremltools as ct
    import coremltools.optimize.coreml as cto
except ImportError as exc:  # optional dependency: say which extra to install
    raise MissingDependencyError("coremltools", "coreml") from exc

log = logging.getLogger(__name__)
# coremltools logs every graph pass at INFO ("Removing op ...": ~1,400 lines for three small
# models); edgekd's own lines say what was converted. Its warnings still show.
logging.getLogger("coremltools").setLevel(logging.WARNING)

NAME = "coreml"
SUFFIX = ".mlpackage"
PRECISIONS = ("fp32", "fp16", "int8", "palettized")

_INPUT_NAME = "input"
_OUTPUT_NAME = "logits"
# Keys coremltools writes into user_defined_metadata itself (version, source framework, date).
_COREMLTOOLS_KEY_PREFIX = "com.github.apple.coremltools."
# Activation quantize/dequantize ops in an ML Program need Core ML 7 (iOS17 / macOS14).
_W8A8_MINIMUM_TARGET = "iOS17"
_DEFAULT_TARGET = "iOS16"
# coremltools' own default: smaller tensors gain little and their scales/LUTs cost bytes.
_WEIGHT_THRESHOLD = 2048
_PREDICTION_ONLY_ON_MACOS = (
    "CoreML prediction needs macOS (coremltools: 'Model prediction is only supported on "
    "macOS'); convert here and run bench/accuracy on a Mac"
)


def version() -> str:
    return ct.__version__


def precision_note() -> str:
    """What the precision of a CoreML number means, to be written into reports."""
    return (
        "Core ML compute precision fp16 unless exported fp32; int8/palettized compress weights only"
    )


def export(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: Path,
    *,
    metadata: dict[str, str],
    precision: str = "fp16",
    compute_units: str = "ALL",
    deployment_target: str | None = None,
    palette_bits: int = 6,
    weight_threshold: int = _WEIGHT_THRESHOLD,
) -> Path:
    """Convert `model` to an ML Program at `path` (.mlpackage, a directory).

    The input shape is fixed to `example_input`'s: the Neural Engine runs static shapes only.
    `compute_units` (ALL, CPU_AND_NE, CPU_AND_GPU, CPU_ONLY) is what the converter validates
    against; the app chooses again at load time. iOS16 is the same Core ML version as macOS13.
    Weight tensors with fewer than `weight_threshold` elements stay uncompressed.

    A W8A8 model from the CoreML quantizer is finalized first; its weights are int8 already, so
    `precision` then only sets the compute precision of what is not quantized (fp16 or fp32;
    int8 means fp16), and `deployment_target` defaults to, and must be at least, iOS17.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"CoreML model path must end in {SUFFIX}: {path}")
    if precision not in PRECISIONS:
        raise UserError(
            f"CoreML precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "palettized" and palette_bits not in (1, 2, 3, 4, 6, 8):
        raise UserError(f"palette_bits must be 1, 2, 3, 4, 6 or 8, got {palette_bits}")

    w8a8 = _is_w8a8(model)
    if w8a8:
        deployment_target = _check_w8a8(precision, deployment_target)
        model = sys.modules["edgekd.quantizers.coreml_int8"].finalize(model)
    deployment_target = deployment_target or _DEFAULT_TARGET
    mlmodel = _convert(
        _trace(model, example_input),
        tuple(example_input.shape),
        precision=precision,
        compute_units=_compute_unit(compute_units),
        target=_target(deployment_target),
    )
    if w8a8:
        precision = "w8a8"  # its weights are int8 already; this names what the package holds
    else:
        mlmodel = _compress(mlmodel, precision, palette_bits=palette_bits, threshold=weight_threshold)
    for key, value in metadata.items():
        mlmodel.user_defined_metadata[key] = str(value)
    mlmodel.author = f"edgekd {__version__}"
    mlmodel.short_description = (
        f"{precision} ML Program for {deployment_target}, converted for compute units "
        f"{compute_units}; input {_INPUT_NAME!r} float32 NCHW in [0, 1], output {_OUTPUT_NAME!r}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(path))
    log.info("wrote CoreML model %s (%.3f MB, %s)", path, size_mb(path), precision)
    return path


def _is_w8a8(model: torch.nn.Module) -> bool:
    # Such a model exists only if its quantizer module was imported; checking first spares float
    # exports the import.
    quantizer = sys.modules.get("edgekd.quantizers.coreml_int8")
    return quantizer is not None and isinstance(model, quantizer.W8A8Model)


def _check_w8a8(precision: str, deployment_target: str | None) -> str:
    if precision == "palettized":
        raise UserError(
            "this model is W8A8-quantized (CoreML quantizer); palettizing its int8 weights is not "
            "supported: export it as int8, or palettize the float model"
        )
    target = deployment_target or _W8A8_MINIMUM_TARGET
    if _target(target) < _target(_W8A8_MINIMUM_TARGET):
        raise UserError(
            f"W8A8 ML Programs need deployment target {_W8A8_MINIMUM_TARGET} (macOS14) or later, "
            f"got {target}: set the target's deployment_target to iOS17 or later"
        )
    return target


def _trace(model: torch.nn.Module, example_input: torch.Tensor) -> torch.jit.ScriptModule:
    was_training = model.training
    model.eval()  # dropout/batch-norm must be in inference mode while tracing
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch's TorchScript deprecation notice is not actionable by the user.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.trace(model, example_input)
    except Exception as exc:  # tracing arbitrary user models fails in many ways
        raise UserError(f"CoreML cannot trace this model: {first_line(exc)}") from exc
    finally:
        model.train(was_training)  # leave the caller's model as we found it


def _convert(traced, shape: tuple[int, ...], *, precision: str, compute_units, target):
    # Weight compression is applied after conversion, on an fp16 program.
    compute_precision = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    try:
        return ct.convert(
            traced,
            convert_to="mlprogram",
            inputs=[ct.TensorType(name=_INPUT_NAME, shape=shape, dtype=np.float32)],
            # float32 I/O whatever the compute precision: the caller's arrays are float32.
            outputs=[ct.TensorType(name=_OUTPUT_NAME, dtype=np.float32)],
            compute_precision=compute_precision,
            compute_units=compute_units,
            minimum_deployment_target=target,
        )
    except Exception as exc:  # unsupported ops and the like, from deep inside the converter
        log.debug("CoreML conversion failed", exc_info=True)
        raise UserError(f"CoreML cannot convert this model: {first_line(exc)}") from exc


def _compress(mlmodel, precision: str, *, palette_bits: int, threshold: int):
    if precision == "int8":
        op_config = cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", weight_threshold=threshold
        )
        return cto.linear_quantize_weights(
            mlmodel, config=cto.OptimizationConfig(global_config=op_config)
        )
    if precision == "palettized":
        op_config = cto.OpPalettizerConfig(
            mode="kmeans", nbits=palette_bits, weight_threshold=threshold
        )
        return cto.palettize_weights(
            mlmodel, config=cto.OptimizationConfig(global_config=op_config)
        )
    return mlmodel


def _compute_unit(name: str):
    try:
        return ct.ComputeUnit[name]
    except KeyError:
        known = ", ".join(ct.ComputeUnit.__members__)
        raise UserError(f"unknown CoreML compute units {name!r}; known: {known}") from None


def _target(name: str):
    try:
        return getattr(ct.target, name)
    except AttributeError:
        raise UserError(
            f"unknown CoreML deployment target {name!r}; e.g. iOS16, macOS13, iOS18"
        ) from None


# --- reading a package: any OS ----------------------------------------------------------------


def _require_package(path: Path) -> Path:
    # An .mlpackage is a directory, so require_file() does not apply.
    if not Path(path).is_dir():
        raise UserError(f"model file not found: {path}")
    return Path(path)


def _load_spec(path: Path):
    # skip_model_load: compiling the model for execution needs Core ML (macOS); the spec does not.
    return ct.models.MLModel(str(_require_package(path)), skip_model_load=True).get_spec()


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata passed to export (coremltools' own entries left out)."""
    spec = _load_spec(path)
    entries = spec.description.metadata.userDefined
    return {
        key: value for key, value in entries.items() if not key.startswith(_COREMLTOOLS_KEY_PREFIX)
    }


def op_inventory(path: Path) -> dict[str, int]:
    """How many of each MIL op the ML Program's main function holds (nested blocks included).

    Shows what a model became: e.g. weight compression appears as constexpr_* ops, which Core ML
    expands into the weights at load time (constexpr_affine_dequantize / constexpr_lut_to_dense
    up to iOS17, constexpr_blockwise_shift_scale / constexpr_lut_to_dense from iOS18).
    """
    spec = _load_spec(path)
    if spec.WhichOneof("Type") != "mlProgram":
        raise UserError(f"{path} is not an ML Program (it is a {spec.WhichOneof('Type')} model)")
    main = spec.mlProgram.functions["main"]
    counts: Counter[str] = Counter()
    _count_ops(main.block_specializations[main.opset], counts)
    return dict(sorted(counts.items()))


def _count_ops(block, counts: Counter) -> None:
    for operation in block.operations:
        counts[operation.type] += 1
        for nested in operation.blocks:  # control flow (cond, while_loop) holds blocks
            _count_ops(nested, counts)


def validate(
    path: Path, *, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
) -> dict:
    """Check the package's interface: one input "input" [N, C, H, W], one output "logits" [N, K].

    Returns {"input_shape", "output_shape", "spec_version"}; UserError on the first mismatch.
    """
    spec = _load_spec(path)
    inputs, outputs = list(spec.description.input), list(spec.description.output)
    if [i.name for i in inputs] != [_INPUT_NAME] or [o.name for o in outputs] != [_OUTPUT_NAME]:
        raise UserError(
            f"{path}: expected input {_INPUT_NAME!r} and output {_OUTPUT_NAME!r}, found "
            f"{[i.name for i in inputs]} and {[o.name for o in outputs]}"
        )
    got_input = tuple(inputs[0].type.multiArrayType.shape)
    got_output = tuple(outputs[0].type.multiArrayType.shape)
    if len(got_input) != 4 or (input_shape is not None and got_input != tuple(input_shape)):
        raise UserError(
            f"{path}: input shape {got_input}, expected {input_shape or '[N, C, H, W]'}"
        )
    # An output shape may be left empty by the converter; check it only when recorded.
    if num_classes is not None and got_output and got_output[-1] != num_classes:
        raise UserError(f"{path}: output shape {got_output}, expected {num_classes} classes")
    return {
        "input_shape": got_input,
        "output_shape": got_output,
        "spec_version": spec.specificationVersion,
    }


def size_mb(path: Path) -> float:
    """Size on disk of the .mlpackage directory in MB (1e6 bytes)."""
    files = (f for f in _require_package(path).rglob("*") if f.is_file())
    return sum(f.stat().st_size for f in files) / 1e6


# --- running a package: macOS only ------------------------------------------------------------


def _require_macos() -> None:
    if platform.system() != "Darwin":
        raise UserError(_PREDICTION_ONLY_ON_MACOS)


def _load(path: Path, compute_units: str):
    _require_macos()
    return ct.models.MLModel(
        str(_require_package(path)), compute_units=_compute_unit(compute_units)
    )


def _model_batch(mlmodel) -> int:
    return int(mlmodel.get_spec().description.input[0].type.multiArrayType.shape[0])


def predict_logits(
    path: Path, x: np.ndarray | torch.Tensor, *, batch_size: int = 256, compute_units: str = "ALL"
) -> np.ndarray:
    """Model outputs for all samples in `x` ([N, C, H, W]). macOS only.

    The package has a fixed batch size; `batch_size` is accepted for interface parity, and
    inputs go through in the package's batch, the last one zero-padded.
    """
    mlmodel = _load(path, compute_units)
    model_batch = _model_batch(mlmodel)
    inputs = to_numpy(x)
    chunks = []
    for start in range(0, len(inputs), model_batch):
        chunk = inputs[start : start + model_batch]
        padded = np.zeros((model_batch, *inputs.shape[1:]), dtype=np.float32)
        padded[: len(chunk)] = chunk
        logits = mlmodel.predict({_INPUT_NAME: padded})[_OUTPUT_NAME]
        chunks.append(np.asarray(logits, dtype=np.float32)[: len(chunk)])
    return np.concatenate(chunks) if chunks else np.empty((0,), dtype=np.float32)


def accuracy(
    path: Path, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, batch_size: int = 256
) -> float:
    """Top-1 accuracy of the package on (x, y), as a fraction in [0, 1]. macOS only."""
    return top1_accuracy(predict_logits(path, x, batch_size=batch_size), y)


def benchmark(
    path: Path,
    *,
    warmup: int,
    runs: int,
    batch: int = 1,
    threads: int | None = None,
    compute_units: str = "ALL",
) -> LatencyStats:
    """Latency of one synchronous predict() of a `batch`-sized random input. macOS only.

    `batch` must be the package's batch size (its shapes are fixed). `threads` does not apply:
    Core ML schedules its own threads and units.
    """
    mlmodel = _load(path, compute_units)
    if batch != _model_batch(mlmodel):
        raise UserError(
            f"{path} was exported for batch {_model_batch(mlmodel)}, not {batch}; re-export"
        )
    if threads is not None:
        log.debug("threads=%s ignored: Core ML schedules its own threads", threads)
    shape = tuple(mlmodel.get_spec().description.input[0].type.multiArrayType.shape)
    # Random data rather than zeros: some kernels have fast paths for zeros.
    data = {_INPUT_NAME: np.random.default_rng(0).random(shape).astype(np.float32)}
    return time_calls(
        lambda: mlmodel.predict(data),
        warmup=warmup,
        runs=runs,
        batch=batch,
        desc=f"timing {Path(path).name} b{batch}",
    )


# --- what the stages call (edgekd.backends.Backend) -------------------------------------------


def runtime_missing() -> str | None:
    if platform.system() != "Darwin":
        return "Core ML runs models only on macOS; run edgekd on a Mac to measure"
    return None


def baseline_precision(precisions: list[str]) -> str:
    """fp16: Core ML computes in fp16 on the GPU and Neural Engine anyway."""
    return "fp16" if "fp16" in precisions else "fp32"


def write_artifact(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                   metadata: dict[str, str], quantizer, target, max_batch: int) -> dict:
    """An ML Program for the target's compute units and minimum OS; an INT8 model from the CoreML
    quantizer becomes a W8A8 program (export finalizes it)."""
    options = {"compute_units": target.compute_units}
    if target.deployment_target:
        options["deployment_target"] = target.deployment_target
    export(model, example_input, path, metadata=metadata, precision=precision, **options)
    return {}


def write_for_timing(model: torch.nn.Module, example_input: torch.Tensor, path: Path, *, precision: str,
                     quantizer) -> Path:
    return export(model, example_input, Path(path).with_suffix(SUFFIX), metadata={"purpose": "latency probe"},
                  precision=precision)


def check_artifact(model: torch.nn.Module, path: Path, inputs: torch.Tensor, num_classes: int) -> dict | None:
    """The package's interface against the data (batch-1 input of the data's shape, one logit per
    class; `validate` raises on a mismatch) and its op inventory (quantize/dequantize ops show W8A8)."""
    checked = validate(path, input_shape=(1, *inputs.shape[1:]), num_classes=num_classes)
    return {"valid": True, "input_shape": list(checked["input_shape"]), "output_shape": list(checked["output_shape"]),
            "spec_version": checked["spec_version"], "ops": op_inventory(path)}


finish_export = nothing_to_finish


timed_path = the_artifact_itself


def accuracy_stand_in(path: Path):
    return None  # no runtime runs an ML Program off macOS: the torch model stands in


device_conditions = no_device_settings


def predictor(path: Path):
    """A function batch -> logits (macOS only); loads the package on each call."""
    return lambda x: predict_logits(path, x)


def profile_artifact(path: Path, *, warmup: int, runs: int, threads: int | None = None, work_dir=None) -> dict:
    return {"profile_unavailable": "Core ML per-layer times need Xcode's Core ML performance report on a Mac"}
