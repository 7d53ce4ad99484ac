"""W8A8 for CoreML with coremltools' LinearQuantizer (coremltools.optimize.torch.quantization).

`prepare_int8` traces the model with torch.fx and inserts torch.ao fake-quantizers where Core ML
runs INT8: weights int8 symmetric per output channel, activations 8-bit (zero point 0 after a
ReLU, 128 otherwise: coremltools' "symmetric" scheme), convolution + batch norm fused as Core ML
runs them. Scales come from calibration data (PTQ), then follow QAT in training mode only.

`finalize` turns the trained model into the reference-quantized model coremltools converts into an
ML Program with quantize/dequantize ops (backends.coreml does this on export; iOS17/macOS14 or
later run activation quantization). Saved as a weights-only state dict plus the example input shape
and excluded layers, to rebuild the same graph on load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import MissingDependencyError, UserError
from edgekd.quantizers.exclude import check_exclude

try:
    import coremltools
    from coremltools.optimize.torch.quantization import (
        LinearQuantizer,
        LinearQuantizerConfig,
        ModuleLinearQuantizerConfig,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependencyError("coremltools", "coreml") from exc

log = logging.getLogger(__name__)

_FORMAT = "edgekd-coreml-w8a8/1"


class W8A8Model(nn.Module):
    """The fake-quantized GraphModule with what finalize and load need; observers follow the mode.

    torch.ao's observers run whenever enabled, in eval mode too; here they run in training mode
    only (QAT moves weights and activations, so the scales follow), and are frozen by eval(), so
    evaluating or exporting never changes the model. A wrapper rather than a hook on the
    GraphModule: a GraphModule's deepcopy drops forward hooks.
    """

    def __init__(self, graph_module: nn.Module, quantizer: LinearQuantizer, *,
                 example_shape: tuple[int, ...], exclude: list[str]):
        super().__init__()
        self.graph_module = graph_module
        self.quantizer = quantizer  # finalize needs its qconfig mapping
        self.example_shape = tuple(example_shape)
        self.exclude = list(exclude)

    def train(self, mode: bool = True) -> W8A8Model:
        super().train(mode)
        observer = torch.ao.quantization.enable_observer if mode else torch.ao.quantization.disable_observer
        self.graph_module.apply(observer)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)


def prepare_int8(
    model: nn.Module,
    calibration_x: torch.Tensor,
    *,
    batch_size: int = 64,
    exclude: Sequence[str] = (),
) -> W8A8Model:
    """A W8A8 fake-quantized copy of `model`, calibrated on `calibration_x`.

    `exclude`: names from model.named_modules() kept in floating point.
    """
    excluded = check_exclude(model, exclude)
    prepared = _prepare(model, (1, *calibration_x.shape[1:]), excluded)
    # Calibration observes in eval mode: batch norm keeps its statistics, observers record ranges.
    prepared.graph_module.apply(torch.ao.quantization.enable_observer)
    with torch.no_grad():
        for start in range(0, len(calibration_x), batch_size):
            prepared(calibration_x[start : start + batch_size])
    prepared.eval()
    log.info(
        "coreml w8a8: %d fake-quantizers, %d modules excluded, calibrated on %d samples",
        len(fake_quantizers(prepared)),
        len(excluded),
        len(calibration_x),
    )
    return prepared


def _config(excluded: list[str]) -> LinearQuantizerConfig:
    # milestones=None: no schedule to step through (the distill loop knows nothing of
    # quantizer.step()); W8A8Model switches observers with train/eval instead.
    return LinearQuantizerConfig(
        global_config=ModuleLinearQuantizerConfig(quantization_scheme="symmetric", milestones=None),
        module_name_configs={name: None for name in excluded},  # None: not quantized
    )


def _prepare(model: nn.Module, example_shape: tuple[int, ...], excluded: list[str]) -> W8A8Model:
    was_training = model.training
    quantizer = LinearQuantizer(model, _config(excluded))
    try:
        # inplace=False: LinearQuantizer deep-copies the model, so the caller's model stays float.
        graph_module = quantizer.prepare(example_inputs=(torch.zeros(example_shape),))
    except Exception as exc:  # torch.fx cannot trace every model (data-dependent control flow)
        raise UserError(
            f"the CoreML quantizer cannot trace this model with torch.fx: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    finally:
        model.train(was_training)  # LinearQuantizer switches the model it copies to train mode
    wrapped = W8A8Model(graph_module, quantizer, example_shape=example_shape, exclude=excluded)
    return wrapped.eval()


def fake_quantizers(model: nn.Module) -> list[str]:
    """Names of the model's torch.ao fake-quantizers (weights and activations)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.ao.quantization.FakeQuantizeBase)
    ]


def finalize(model: W8A8Model) -> nn.Module:
    """The reference-quantized model coremltools converts to W8A8 (a copy; `model` is kept)."""
    if not isinstance(model, W8A8Model):
        raise UserError("finalize needs a model from the CoreML quantizer's prepare_int8/load_int8")
    was_training = model.training
    try:
        return model.quantizer.finalize(model.graph_module, inplace=False)
    finally:
        model.train(was_training)  # finalize puts the model (not only its copy) in eval mode


def export_mlpackage(
    model: W8A8Model,
    example_input: torch.Tensor,
    path: Path,
    *,
    metadata: dict[str, str],
    compute_units: str = "ALL",
    deployment_target: str | None = None,
) -> Path:
    """Write the W8A8 ML Program (.mlpackage) of a prepared or loaded model: backends.coreml's
    export, which finalizes it; the deployment target defaults to, and must be at least, iOS17."""
    from edgekd.backends import coreml as coreml_backend

    if not isinstance(model, W8A8Model):
        raise UserError("export_mlpackage needs a model from the CoreML quantizer's prepare_int8/load_int8")
    return coreml_backend.export(
        model,
        example_input,
        path,
        metadata=metadata,
        precision="int8",
        compute_units=compute_units,
        deployment_target=deployment_target,
    )


def save_int8(model: nn.Module, path: Path) -> None:
    checkpoint = {
        "format": _FORMAT,
        "coremltools_version": coremltools.__version__,
        "state_dict": model.state_dict(),
        "example_shape": list(model.example_shape),
        "exclude": model.exclude,
    }
    torch.save(checkpoint, path)


def load_int8(float_model: nn.Module, path: Path) -> W8A8Model:
    """Rebuild a saved quantized model on a freshly built float model of the same architecture."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _FORMAT:
        raise UserError(f"{path} is not an edgekd CoreML W8A8 checkpoint (save_int8 writes one)")
    model = _prepare(float_model.eval(), tuple(checkpoint["example_shape"]), checkpoint["exclude"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def version() -> str:
    return coremltools.__version__
