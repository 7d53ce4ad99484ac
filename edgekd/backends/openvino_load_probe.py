"""First-load time and peak memory of one OpenVINO IR, measured in a fresh process.

Run as a script by `edgekd.backends.openvino.measure_load` (by file path, not `-m`, so that the
edgekd package, and torch with it, is never imported here: the process holds the interpreter,
numpy and openvino, and then the model). Prints one JSON line.

What the numbers mean:
- load_ms: ov.Core() (the CPU plugin is loaded on first compile), read_model, reshape to batch 1,
  compile_model; what an application pays before its first inference, minus Python start-up.
- first_inference_ms: the first infer() of the compiled model (lazy allocations happen here).
- peak_memory_mb: the resident-set high-water mark over the load and one inference, minus the
  resident set right after `import openvino`, in MB (1e6 bytes). The interpreter, numpy and the
  openvino module are not counted; the plugin, the model, compiled kernels and the inference's
  buffers are.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's VmHWM to the current RSS (Linux >= 4.0), so that the peak we read later
    is the peak of the load, not of the imports before it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _maxrss_kb() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, kB on Linux


def _mb(kib: int) -> float:
    return round(kib * 1024 / 1e6, 2)  # MB of 1e6 bytes, as edgekd's sizes


def main(argv: list[str]) -> int:
    xml_path, config = argv[1], json.loads(argv[2])
    baseline_kb = _status_kb("VmRSS")
    if baseline_kb is not None and _reset_peak():
        method = "VmHWM after resetting it post-import (/proc/self/clear_refs), minus VmRSS after import"
    else:  # no /proc (macOS): the peak since start-up, which may include the imports' own peak
        baseline_kb = _maxrss_kb()
        method = "ru_maxrss minus ru_maxrss after import (an upper bound: imports may have peaked higher)"

    start = time.perf_counter()
    core = ov.Core()
    model = core.read_model(xml_path)
    shape = model.input(0).get_partial_shape()
    model.reshape({0: ov.PartialShape([1, *list(shape)[1:]])})
    compiled = core.compile_model(model, "CPU", config)
    loaded = time.perf_counter()

    request = compiled.create_infer_request()
    port = compiled.input(0)
    data = np.random.default_rng(0).random(tuple(port.get_shape())).astype(port.get_element_type().to_dtype())
    infer_start = time.perf_counter()
    request.infer({0: data})
    inferred = time.perf_counter()

    peak_kb = _status_kb("VmHWM") if method.startswith("VmHWM") else _maxrss_kb()
    print(json.dumps({
        "load_ms": round((loaded - start) * 1000, 3),
        "first_inference_ms": round((inferred - infer_start) * 1000, 3),
        "peak_memory_mb": _mb(max(0, peak_kb - baseline_kb)),
        "baseline_memory_mb": _mb(baseline_kb),
        "memory_method": method,
        "openvino": ov.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
