"""A target: one device and its runtime (targets/<name>.yaml), and the facts about it that every
stage needs: where its artifacts can run, and the precision a team would ship without edgekd.

edgekd times an artifact on the target's runtime: here (`runner: local`) or on the device over
SSH. Some targets cannot run here at all: a TensorRT engine needs TensorRT and an NVIDIA GPU, a
Core ML model needs macOS. Then the stages still do everything that can run here (export, the
Q/DQ ONNX checked in onnxruntime, CoreML conversion and validation) and use a *predicted*
latency (edgekd/latency/predicted.py), labelled so in every output, instead of a measured one.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.backends import KNOWN_BACKENDS, get_backend
from edgekd.config import (
    BenchConfig,
    above,
    at_least,
    check_values,
    from_mapping,
    one_of,
    read_yaml_mapping,
)
from edgekd.errors import MissingDependencyError, UserError
from edgekd.quantizers import QUANTIZERS

log = logging.getLogger(__name__)

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class DevicePeaks:
    """A device's published peak figures (dense, not 2:4-sparse), for the latency edgekd predicts
    when the device is not attached (edgekd/latency/analytical.py). null: not published."""

    int8_tops: float | None = above(0, default=None)
    fp16_tflops: float | None = above(0, default=None)
    fp32_tflops: float | None = above(0, default=None)
    memory_bandwidth_gbs: float | None = above(0, default=None)
    source: str = ""  # where the figures come from, cited in every predicted number


@dataclass
class Target:
    name: str
    description: str
    backend: str = one_of(KNOWN_BACKENDS)
    device: str
    precisions: list[str] = one_of(PRECISIONS)
    precision: str = one_of(PRECISIONS)
    quantizer: str = one_of(QUANTIZERS)
    channel_multiple: int = at_least(1, default=8)
    runner: str = "local"
    # A pool of devices of this kind, ssh:// URLs: each measurement goes to a free one, one job per
    # device at a time (edgekd/remote/pool.py). When given, `runner` is its first device.
    runners: list[str] = field(default_factory=list)
    bench: BenchConfig = field(default_factory=BenchConfig)
    sparse_2_4: bool = False  # the device's kernels run 2:4 structured sparsity faster (Ampere+)
    power_mode: str | None = None  # Jetson: the nvpmodel mode the numbers are for, recorded
    compute_units: str = "ALL"  # CoreML: ALL, CPU_AND_NE, CPU_AND_GPU, CPU_ONLY
    deployment_target: str | None = None  # CoreML: minimum OS of the ML Program, e.g. iOS17
    peaks: DevicePeaks = field(default_factory=DevicePeaks)


def known_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def target_from_dict(data: dict[str, Any]) -> Target:
    return from_mapping(Target, data, where="saved target")


def load_target(name_or_path: str) -> Target:
    """`x86-cpu` -> targets/x86-cpu.yaml; a path ending in .yaml/.yml loads that file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = TARGETS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = known_targets()
            close = difflib.get_close_matches(name_or_path, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown target {name_or_path!r}{hint} (known: {', '.join(known)})")
    elif not path.is_file():
        raise UserError(f"target file '{path}' does not exist")
    data = read_yaml_mapping(path)
    target = from_mapping(Target, data, where=str(path))
    try:
        check_values(target, "")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from exc
    if target.precision not in target.precisions:
        raise UserError(
            f"{path}: precision {target.precision!r} is not in precisions {target.precisions}"
        )
    if target.runners:
        if target.runner not in ("local", *target.runners):
            raise UserError(f"{path}: runner {target.runner!r} is not in runners {target.runners}; "
                            "give one device as runner, or several as runners")
        set_runners(target, target.runners, where=str(path))
    return target


def set_runners(target: Target, urls: list[str], *, where: str = "--device") -> None:
    """Measure on these devices (ssh:// URLs; several make a pool). `runner` becomes the first, so
    code that asks whether the target runs here keeps asking `runner`."""
    from edgekd.remote.ssh import parse_ssh_url

    if urls == ["local"]:
        target.runner, target.runners = "local", []
        return
    if "local" in urls:
        raise UserError(f"{where}: a pool of devices lists ssh://user@host[:port] devices only, got {urls}")
    for url in urls:
        try:
            parse_ssh_url(url)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    if len(set(urls)) != len(urls):
        raise UserError(f"{where}: a device is listed twice: {', '.join(urls)}")
    target.runner = urls[0]
    target.runners = list(urls) if len(urls) > 1 else []




def why_not_measurable(target: Target) -> str | None:
    """None when edgekd can time this target's artifacts; else the reason it cannot (the
    backend's own answer, e.g. no TensorRT here, or not macOS for Core ML)."""
    if target.runner != "local":
        return None  # the device behind the runner has the runtime (checked when it is reached)
    return get_backend(target.backend).runtime_missing()


def baseline_precision(target: Target) -> str:
    """The precision the teacher and the float student are deployed at: what a team would ship
    without edgekd (the backend's choice: fp16 where the runtime computes in fp16 anyway)."""
    return get_backend(target.backend).baseline_precision(target.precisions)


def runtime_version(backend) -> str:
    """The backend runtime's version, or "not installed here" (TensorRT off a GPU host)."""
    try:
        return backend.version()
    except MissingDependencyError:
        return "not installed here"
