"""What bench measures about each artifact beyond its latency percentiles, for the report: the
per-layer time and execution precision, the first-load (compile) time and the peak memory.

One call per artifact, `profile_artifact`; its keys go into the artifact's entry of bench.json.
Where the runtime has no per-layer counters here, the entry says why instead of leaving a gap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgekd.errors import UserError
from edgekd.io import first_line

log = logging.getLogger(__name__)

# trtexec warms up by time, not by count; this is its default.
_TRTEXEC_WARMUP_MS = 200


def profile_artifact(backend_name: str, path: Path, *, warmup: int, runs: int, threads: int | None = None,
                     work_dir: Path | None = None) -> dict[str, Any]:
    """{"per_layer": {...}, "load_ms", "first_inference_ms", "peak_memory_mb", "memory_includes"}
    for an OpenVINO IR; {"per_layer", "timings_ms", "load_ms", "gpu_memory_mb", ...} for a
    TensorRT engine on a TensorRT host (trtexec's exported files go to `work_dir`); otherwise
    {"profile_unavailable": reason}. A failure to profile is logged and returned as
    {"profile_error": message}: the latency measured beside it still stands."""
    path = Path(path)
    try:
        if backend_name == "openvino":
            return _profile_openvino(path, warmup=warmup, runs=runs, threads=threads)
        if backend_name == "tensorrt" and path.suffix == ".engine" and path.is_file():
            from edgekd.backends.tensorrt.layer_profile import profile_engine

            return profile_engine(path, work_dir or path.parent / f"{path.stem}-profile", runs=runs,
                                  warmup_ms=_TRTEXEC_WARMUP_MS)
    except (UserError, RuntimeError) as exc:  # RuntimeError: what the runtimes raise on a model they reject
        message = first_line(exc)
        message = message if path.name in message else f"{path.name}: {message}"
        log.warning("bench: could not profile %s: %s", path.name, message)
        return {"profile_error": message}
    if backend_name == "tensorrt":
        return {"profile_unavailable": "no TensorRT engine was built here (per-layer times need trtexec on the device)"}
    return {"profile_unavailable": f"per-layer counters, load time and memory are measured for OpenVINO and "
                                   f"TensorRT artifacts, not for {backend_name}"}


def _profile_openvino(path: Path, *, warmup: int, runs: int, threads: int | None) -> dict[str, Any]:
    from edgekd.backends import openvino

    per_layer = openvino.profile_layers(path, warmup=warmup, runs=runs, threads=threads)
    load = openvino.measure_load(path, threads=threads)
    log.info("bench: %s loads in %.1f ms, peak memory %.1f MB; %d layers profiled, %d compute layers not INT8",
             path.name, load["load_ms"], load["peak_memory_mb"], len(per_layer["layers"]), len(per_layer["compute_float"]))
    return {"per_layer": per_layer, **{key: load[key] for key in
                                       ("load_ms", "first_inference_ms", "peak_memory_mb", "memory_includes",
                                        "memory_method")}}
