"""What bench measures about each artifact beyond its latency percentiles, for the report: the
per-layer time and execution precision, the first-load (compile) time and the peak memory.

One call per artifact, `profile_artifact`; its keys go into the artifact's entry of bench.json.
Where the runtime has no per-layer counters here, the entry says why instead of leaving a gap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgekd.backends import get_backend
from edgekd.errors import UserError
from edgekd.io import first_line

log = logging.getLogger(__name__)

def profile_artifact(backend_name: str, path: Path, *, warmup: int, runs: int, threads: int | None = None,
                     work_dir: Path | None = None) -> dict[str, Any]:
    """{"per_layer": {...}, "load_ms", "first_inference_ms", "peak_memory_mb", "memory_includes"}
    for an OpenVINO IR; {"per_layer", "timings_ms", "load_ms", "gpu_memory_mb", ...} for a
    TensorRT engine on a TensorRT host (trtexec's exported files go to `work_dir`); otherwise
    {"profile_unavailable": reason}. A failure to profile is logged and returned as
    {"profile_error": message}: the latency measured beside it still stands."""
    path = Path(path)
    backend = get_backend(backend_name)
    try:
        return backend.profile_artifact(path, warmup=warmup, runs=runs, threads=threads, work_dir=work_dir)
    except (UserError, RuntimeError) as exc:  # RuntimeError: what the runtimes raise on a model they reject
        message = first_line(exc)
        message = message if path.name in message else f"{path.name}: {message}"
        log.warning("bench: could not profile %s: %s", path.name, message)
        return {"profile_error": message}
