"""Deployment backends (OpenVINO, ONNX Runtime), imported lazily by name.

Each backend is a module with the same functions (export, read_metadata, predict_logits,
accuracy, size_mb, ...). Importing this package must stay cheap and must not import any
runtime, so that a user without OpenVINO can still use the ONNX backend and vice versa.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from edgekd.errors import UserError

log = logging.getLogger(__name__)

KNOWN_BACKENDS = ("openvino", "onnx", "coreml", "tensorrt")


def get_backend(name: str) -> ModuleType:
    """Import and return `edgekd.backends.<name>`.

    Raises UserError for an unknown name, MissingDependencyError when its runtime is missing.
    """
    if name not in KNOWN_BACKENDS:
        known = ", ".join(KNOWN_BACKENDS)
        raise UserError(f"unknown backend {name!r}; known backends: {known}")
    log.debug("loading backend %s", name)
    return importlib.import_module(f"{__name__}.{name}")


# Helpers shared by the backend modules. They live here, not in a backend, because a backend
# module imports its runtime at import time and the others must not depend on it.


def require_file(path: Path) -> Path:
    """`path` if it is an existing file, else a UserError naming it."""
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    return path


def to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A contiguous float32 numpy copy-or-view of a batch, as runtimes expect."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def top1_accuracy(logits: np.ndarray, y: np.ndarray | torch.Tensor) -> float:
    """Fraction of rows whose argmax equals the label."""
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if len(labels) == 0:
        raise ValueError("accuracy needs at least one sample")
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions but {len(labels)} labels")
    return float(np.mean(np.argmax(logits, axis=1) == labels))
