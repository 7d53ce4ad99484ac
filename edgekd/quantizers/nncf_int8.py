"""INT8 with NNCF, the quantizer whose INT8 layout OpenVINO runs fast.

`prepare_int8` inserts NNCF fake-quantizers initialised from calibration data (PTQ). The result
is still a trainable torch module, so the distill loop fine-tunes it (QAT) like any other model.
Modules named in `exclude` stay float (NNCF's IgnoredScope, mapped from torch module names).
A quantized model is saved as a weights-only state dict plus NNCF's JSON config, so loading it
never unpickles code.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import MissingDependencyError, UserError
from edgekd.quantizers.exclude import check_exclude

# NNCF compiles a C++ extension on first use and gives up after 60 s by default; on a 2-core
# machine that is busy the build takes longer (seen: a failed first quantize in CI-like runs).
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")

try:
    import nncf
    import nncf.torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
    from nncf.torch.graph.operator_metatypes import (
        PTConstNoopMetatype,
        PTInputNoopMetatype,
        PTOutputNoopMetatype,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependencyError("nncf", "openvino") from exc

log = logging.getLogger(__name__)

# Graph nodes that are tensors, not operations: weights/buffers, model inputs and outputs.
# NNCF's public API has no name mapping; build_nncf_graph is internal to NNCF 3.x (tested).
_NOT_OPERATIONS = (PTConstNoopMetatype, PTInputNoopMetatype, PTOutputNoopMetatype)


def prepare_int8(
    model: nn.Module,
    calibration_x: torch.Tensor,
    *,
    batch_size: int = 64,
    exclude: Sequence[str] = (),
    bias_correction: bool = False,
) -> nn.Module:
    """A fake-quantized copy of `model` (symmetric INT8 weights and activations, CPU preset).

    `exclude`: torch module names (`model.named_modules()`) left in float: NNCF quantizes neither
    their weights nor the activations only they consume. A container (a block) leaves every
    operation inside it in float.

    `bias_correction`: NNCF's FastBiasCorrection, on by default in `nncf.quantize`, off here.
    On trained Fashion-MNIST models it lowered PTQ accuracy on the exported IR instead of
    restoring it: by 6.35 and 3.62 points on two ResNets, 0.78 and 0.04 on two MobileNets
    (benchmarks/results/nncf-bias-correction/). QAT mostly trains such a shift away, but PTQ
    (distill.mode ptq) and the per-layer sensitivity sweep keep it.
    """
    model = model.eval()
    exclude = check_exclude(model, exclude)
    batches = [calibration_x[s : s + batch_size] for s in range(0, len(calibration_x), batch_size)]
    dataset = nncf.Dataset(batches)
    ignored = None
    if exclude:
        graph = build_nncf_graph(model, calibration_x[:1])  # one trace for all names
        names = [name for module in exclude for name in _module_nodes(graph, model, module)]
        ignored = nncf.IgnoredScope(names=sorted(set(names)))
        log.debug("nncf: leaving %s in float (graph nodes %s)", exclude, ignored.names)
    # NNCF draws two progress bars per call on stdout, with no switch to turn them off; a search
    # or a latency table quantizes hundreds of small models, and edgekd shows its own progress.
    # Its INFO lines about ignored nodes repeat for every excluded layer of a sensitivity sweep
    # (we log the mapping above at DEBUG).
    with contextlib.redirect_stdout(io.StringIO()), _nncf_log_level(logging.WARNING):
        quantized = nncf.quantize(
            model,
            dataset,
            subset_size=len(batches),  # NNCF counts dataset items, and each item here is a batch
            target_device=nncf.TargetDevice.CPU,
            ignored_scope=ignored,
            advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=not bias_correction),
        )
    return quantized


def quantize_ir(fp32_path: Path, int8_path: Path, calibration_x: np.ndarray | torch.Tensor) -> Path:
    """NNCF PTQ of an exported fp32 OpenVINO IR (the same CPU preset and bias-correction setting as
    `prepare_int8`), written to `int8_path`. Several times faster than quantizing the torch model
    and converting it again (no torch tracing through NNCF's hooks), so a search that times many
    INT8 candidates uses it; the artifact that ships still comes from the torch model (QAT)."""
    import openvino as ov

    calibration = np.ascontiguousarray(
        calibration_x.detach().cpu().numpy() if isinstance(calibration_x, torch.Tensor) else calibration_x,
        dtype=np.float32)
    model = ov.Core().read_model(str(fp32_path))
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    with contextlib.redirect_stdout(io.StringIO()), _nncf_log_level(logging.WARNING):
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration), target_device=nncf.TargetDevice.CPU,
                                  advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(int8_path), compress_to_fp16=False)
    return int8_path


@contextlib.contextmanager
def _nncf_log_level(level: int) -> Iterator[None]:
    logger = logging.getLogger("nncf")
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def nncf_node_names(model: nn.Module, example_x: torch.Tensor, module_name: str) -> list[str]:
    """The NNCF graph nodes (operations) that the torch module `module_name` runs.

    NNCF names an operation "<module path with / for .>/<function>/<call index>" (e.g.
    "layers/0/conv/conv2d/0" for module "layers.0.conv"), but builds the path from the modules
    that called each other through their parents: a submodule called directly by an ancestor
    (`self.layers[0](x)` skips the Sequential) gets a shorter path. Weights are named exactly
    ("layers.0.conv.weight"), so an operation counts as the module's when its path starts with
    the module's, or when it consumes one of the module's parameters.
    """
    return _module_nodes(build_nncf_graph(model, example_x), model, module_name)


def _module_nodes(graph, model: nn.Module, module_name: str) -> list[str]:
    prefix = module_name.replace(".", "/") + "/"
    params = {f"{module_name}.{name}" for name, _ in model.get_submodule(module_name).named_parameters()}
    found = set()
    for node in graph.get_all_nodes():
        if node.metatype in _NOT_OPERATIONS:
            if node.node_name in params:
                found.update(n.node_name for n in graph.get_next_nodes(node))
        elif node.node_name.startswith(prefix):
            found.add(node.node_name)
    if not found:
        raise UserError(
            f"module {module_name!r} runs no operation in the model's forward pass as NNCF traces it; "
            "exclude a module that the model calls"
        )
    return sorted(found)


def save_int8(model: nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)
    path.with_suffix(".nncf.json").write_text(json.dumps(nncf.torch.get_config(model)))


def load_int8(float_model: nn.Module, path: Path) -> nn.Module:
    """Rebuild a saved quantized model on a freshly built float model of the same architecture."""
    config = json.loads(path.with_suffix(".nncf.json").read_text())
    model = nncf.torch.load_from_config(float_model.eval(), config)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def version() -> str:
    return nncf.__version__
