"""INT8 with NNCF, the quantizer whose INT8 layout OpenVINO runs fast.

`prepare_int8` inserts NNCF fake-quantizers initialised from calibration data (PTQ). The result
is still a trainable torch module, so the distill loop fine-tunes it (QAT) like any other model.
A quantized model is saved as a weights-only state dict plus NNCF's JSON config, so loading it
never unpickles code.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import MissingDependencyError

# NNCF compiles a C++ extension on first use and gives up after 60 s by default; on a 2-core
# machine that is busy the build takes longer (seen: a failed first quantize in CI-like runs).
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")

try:
    import nncf
    import nncf.torch
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependencyError("nncf", "openvino") from exc

log = logging.getLogger(__name__)


def prepare_int8(model: nn.Module, calibration_x: torch.Tensor, *, batch_size: int = 64) -> nn.Module:
    """A fake-quantized copy of `model` (symmetric INT8 weights and activations, CPU preset)."""
    model = model.eval()
    batches = [calibration_x[s : s + batch_size] for s in range(0, len(calibration_x), batch_size)]
    dataset = nncf.Dataset(batches)
    # NNCF draws two progress bars per call on stdout, with no switch to turn them off; a search
    # or a latency table quantizes hundreds of small models, and edgekd shows its own progress.
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(
            model,
            dataset,
            subset_size=len(batches),  # NNCF counts dataset items, and each item here is a batch
            target_device=nncf.TargetDevice.CPU,
        )
    return quantized


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
