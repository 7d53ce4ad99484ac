"""Deployment backends, one module (or package) per runtime, imported lazily by name:
openvino.py, onnx.py, coreml.py, tensorrt/.

Every backend module meets the `Backend` contract below (tests/backends/test_contract.py checks
it): the runtime's own verbs (export, benchmark, accuracy, ...) and the verbs the stages call, so
that no stage branches on a backend's name and a new runtime touches one folder. Importing this
package must stay cheap and must not import any runtime, so that a user without OpenVINO can still
use the ONNX backend and vice versa.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from edgekd.errors import UserError

if TYPE_CHECKING:
    from edgekd.measure import LatencyStats
    from edgekd.target import Target

log = logging.getLogger(__name__)

KNOWN_BACKENDS = ("openvino", "onnx", "coreml", "tensorrt")


@runtime_checkable
class Backend(Protocol):
    """What a backend module provides. The first group is the runtime itself; the second is what
    the stages ask of it (search times candidates, export writes and checks artifacts, bench times
    them and measures their accuracy)."""

    NAME: str  # the name in targets/*.yaml
    SUFFIX: str  # of the deployed artifact
    PRECISIONS: tuple[str, ...]

    # -- the runtime ---------------------------------------------------------------------------
    def version(self) -> str: ...  # MissingDependencyError when the runtime is not installed
    def precision_note(self) -> str: ...  # what the timed numbers mean, for reports
    def export(self, model: torch.nn.Module, example_input: torch.Tensor, path: Path, *,
               metadata: dict[str, str]) -> Path: ...
    def read_metadata(self, path: Path) -> dict[str, str]: ...
    def benchmark(self, path: Path, *, warmup: int, runs: int, batch: int = 1,
                  threads: int | None = None) -> LatencyStats: ...
    def predict_logits(self, path: Path, x: Any) -> np.ndarray: ...
    def accuracy(self, path: Path, x: Any, y: Any) -> float: ...
    def size_mb(self, path: Path) -> float: ...
    def predictor(self, path: Path) -> Any: ...  # a function: a batch of inputs -> its logits (numpy)
    def profile_artifact(self, path: Path, *, warmup: int, runs: int, threads: int | None = None,
                         work_dir: Path | None = None) -> dict[str, Any]: ...
    # ^ per-layer time and precision, first-load time, peak memory; {"profile_unavailable": why} where not measured

    # -- what the stages call ------------------------------------------------------------------
    def runtime_missing(self) -> str | None:
        """Why this machine cannot run the artifacts (no TensorRT, not macOS); None when it can."""

    def baseline_precision(self, precisions: list[str]) -> str:
        """The precision a team would ship the float models at without edgekd."""

    def write_artifact(self, model: torch.nn.Module, example_input: torch.Tensor, path: Path, *,
                       precision: str, metadata: dict[str, str], quantizer: Any, target: Target,
                       max_batch: int) -> dict[str, Any]:
        """Write the deployable artifact at `path` (an INT8 model is the target quantizer's, written
        with that quantizer's export where the runtime needs it); returns what the report should
        know (e.g. the files written besides). Where the runtime is not here, what can be built is."""

    def write_for_timing(self, model: torch.nn.Module, example_input: torch.Tensor, path: Path, *,
                         precision: str, quantizer: Any) -> Path:
        """The lightest file the runtime times, for the search's candidates (returns its path)."""

    def check_artifact(self, model: torch.nn.Module, path: Path, inputs: torch.Tensor,
                       num_classes: int) -> dict[str, Any] | None:
        """Check the written artifact against the torch model it came from; None: nothing to check."""

    def finish_export(self, run_dir: Path, written: dict[str, dict[str, Any]], target: Target) -> dict[str, Any]:
        """After every model is written: files for the whole run (e.g. TensorRT's engine-build script)."""

    def timed_path(self, path: Path) -> Path:
        """The file the runtime times for the artifact at `path` (TensorRT: the ONNX when no engine)."""

    def device_conditions(self) -> dict[str, str]:
        """The device's settings a latency depends on (a Jetson's power mode and clocks), recorded
        with every measurement made here; {} where there are none to read."""

    def accuracy_stand_in(self, path: Path) -> tuple[Backend, Path, str] | None:
        """Where the runtime is not here: the closest runnable stand-in for the artifact at `path`
        (a backend, the file it runs, and how to name it); None when there is none (the caller
        then measures the torch model)."""


def get_backend(name: str) -> Backend:
    """Import and return `edgekd.backends.<name>`.

    Raises UserError for an unknown name, MissingDependencyError when its runtime is missing.
    """
    if name not in KNOWN_BACKENDS:
        known = ", ".join(KNOWN_BACKENDS)
        raise UserError(f"unknown backend {name!r}; known backends: {known}")
    log.debug("loading backend %s", name)
    return importlib.import_module(f"{__name__}.{name}")  # type: ignore[return-value]: a module meeting Backend


# Helpers shared by the backend modules. They live here, not in a backend, because a backend
# module imports its runtime at import time and the others must not depend on it.


# Contract verbs that most runtimes answer the same way; a backend binds them by name
# (e.g. `finish_export = nothing_to_finish`) and writes its own only where it differs.


def nothing_to_finish(run_dir: Path, written: dict[str, dict], target: Any) -> dict:
    """finish_export for a runtime whose artifacts need no run-wide file."""
    return {}


def the_artifact_itself(path: Path) -> Path:
    """timed_path for a runtime that times the artifact it deploys."""
    return Path(path)


def no_device_settings() -> dict[str, str]:
    """device_conditions where the device has no settings to read (bench records the CPU for all)."""
    return {}


def artifact_accuracy(backend: Backend, path: Path, split: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of the artifact at `path` on a split (edgekd.data.Split), batch by batch: the
    split may stream from disk, and only one batch is in memory at a time."""
    run = backend.predictor(path)
    correct = 0
    for images, labels, _ in split.batches(split.inference_batch(batch_size)):
        correct += int((np.argmax(run(images), axis=1) == labels.numpy()).sum())
    return correct / max(1, len(split))


def accuracy_here(backend: Backend, path: Path, split: Any, model: torch.nn.Module, *,
                  runtime_here: bool) -> tuple[float, str]:
    """(top-1 accuracy, what ran) of the artifact at `path` in its runtime; where that runtime is not
    here, of the closest stand-in that runs here (the backend's, e.g. an engine's ONNX in
    onnxruntime, else the torch model it was converted from), named in the second value."""
    if runtime_here and Path(path).exists():
        return artifact_accuracy(backend, path, split), f"{backend.NAME} artifact"
    stand_in = backend.accuracy_stand_in(path)
    if stand_in is not None:
        runner, file, name = stand_in
        return artifact_accuracy(runner, file, split), name
    from edgekd.training import evaluate_accuracy  # torch training helpers, only on this path

    return evaluate_accuracy(model, split), "torch model the artifact was converted from (the runtime is not here)"


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
