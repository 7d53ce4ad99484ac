"""The report.json fields added for the HTML report, built from plain dicts (bench's result,
the target's latency records), so that whatever produces those dicts can feed them.

- each model keeps bench's entry (per_layer, load_ms, first_inference_ms, peak_memory_mb, ... when
  bench measured them) but its raw `timings_ms` become `timings`, a summary; the raw samples stay
  in bench/bench.json, and the HTML histogram reads them from there (`raw_timings`);
- `predicted_vs_measured`: the target's records that hold both a prediction and a measurement;
- the environment gains the GPU, power mode and precision hint.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from edgekd.measure import timings_summary


def models_for_report(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """bench's model entries without their raw timings, with a summary of them instead."""
    result = {}
    for key, entry in models.items():
        entry = {k: v for k, v in entry.items() if k != "timings_ms"}
        if models[key].get("timings_ms"):
            entry["timings"] = timings_summary(models[key]["timings_ms"])
        result[key] = entry
    return result


def raw_timings(models: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """Model key -> every timed call (ms), for the models whose bench kept them."""
    return {key: entry["timings_ms"] for key, entry in models.items() if entry.get("timings_ms")}


def predicted_vs_measured(target_name: str, input_shape, precision: str) -> list[dict[str, Any]]:
    """The target's latency records at this input shape and precision that carry the prediction
    made before measuring, oldest first (edgekd/latency/records.py)."""
    from edgekd.latency.records import load_records

    keep = ("name", "precision", "predicted_ms", "measured_p50_ms", "date", "device", "runtime", "run_dir")
    return [{key: record.get(key) for key in keep}
            for record in load_records(target_name, list(input_shape), precision)
            if record.get("predicted_ms") is not None]


def environment_extras(conditions: dict[str, Any]) -> dict[str, str]:
    """What the tool versions do not say: GPU, power mode, the runtime's precision hint."""
    if conditions.get("nvpmodel_mode") not in (None, "unknown"):  # measured on a Jetson (bench's jetson_state)
        power = f"{conditions['nvpmodel_mode']} (nvpmodel), jetson_clocks {conditions.get('jetson_clocks', 'unknown')}"
    elif conditions.get("power_mode_expected"):
        power = f"{conditions['power_mode_expected']} (the target's expected mode; not read from a device)"
    else:
        power = "n/a (not a Jetson)"
    return {"gpu": gpu_name(), "power_mode": power,
            "precision_hint": str(conditions.get("runtime_precision", "n/a"))}


def gpu_name() -> str:
    """The GPU(s) nvidia-smi lists, or "none" where there is no NVIDIA driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "none (no nvidia-smi)"
    try:
        done = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (nvidia-smi did not answer)"
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return ", ".join(names) if done.returncode == 0 and names else "none (nvidia-smi lists no GPU)"
