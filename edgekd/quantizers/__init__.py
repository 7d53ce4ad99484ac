"""Each target's own quantizer, imported on first use: NNCF for OpenVINO, ModelOpt (explicit
Q/DQ) for TensorRT, coremltools' LinearQuantizer (W8A8) for CoreML."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekd.errors import UserError

_MODULES = {
    "nncf": "edgekd.quantizers.nncf_int8",
    "modelopt": "edgekd.quantizers.modelopt_int8",
    "coreml": "edgekd.quantizers.coreml_int8",
}


QUANTIZERS = tuple(_MODULES)


def get_quantizer(name: str) -> ModuleType:
    if name not in _MODULES:
        raise UserError(f"unknown quantizer {name!r}; known: {', '.join(sorted(_MODULES))}")
    return importlib.import_module(_MODULES[name])
