"""Per-layer latency and precision of a TensorRT engine, from the files trtexec exports.
(Not named profile.py: the package has a function `profile`, which a submodule of that name would
replace as an attribute of the package once imported.)

No TensorRT import: the parsers read text, so they are tested on any machine; only
`profile_engine` runs trtexec. The formats (TensorRT 8.6-10.x, samples/common/sampleReporting.cpp
and sampleEngines.cpp; NVIDIA's trt-engine-explorer reads the same files):

- `--exportProfile=P.json`: a JSON list; its first element is `{"count": N}` (profiled
  inferences), then one object per engine layer in execution order: `name`, `timeMs` (total over
  the N), `averageMs`, `medianMs` (TensorRT >= 8.6) and `percentage` (of the summed layer time).
- `--exportLayerInfo=L.json`: `{"Layers": [...], "Bindings": [...]}`. With an engine built with
  `--profilingVerbosity=detailed`, each layer is an object with `Name`, `LayerType`, `Inputs` /
  `Outputs` (each with a `Format/Datatype` text such as "Row major linear FP32" or "Thirty-two
  wide channel vectorized row major Int8 format"), `Weights` (`{"Type": "Int8", "Count": n}`) and
  `TacticName`; otherwise each layer is only its name.
- `--exportTimes=T.json`: a JSON list, one object per timed inference, with `latencyMs`.
- The log: "Engine deserialized in S sec." and "[MemUsageChange] TensorRT-managed allocation in
  ...: CPU +a, GPU +b, now: CPU c, GPU d (MiB)".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgekd.errors import UserError

# Data-type words of TensorRT's format strings, old and new spellings ("Half"/"FP16", "Float"/"FP32").
_TYPE_WORDS = (
    ("BFloat16", "BF16"), ("FP8", "FP8"), ("Int8", "INT8"), ("INT8", "INT8"), ("UInt8", "UINT8"),
    ("FP16", "FP16"), ("Half", "FP16"), ("FP32", "FP32"), ("Float", "FP32"), ("Int32", "INT32"),
    ("INT32", "INT32"), ("Int64", "INT64"), ("BOOL", "BOOL"), ("Bool", "BOOL"),
)
_TYPE_PATTERN = re.compile(r"\b(" + "|".join(word for word, _ in _TYPE_WORDS) + r")\b")
_TYPE_NAMES = dict(_TYPE_WORDS)
# Engine layers that compute; reformatting, shuffles and no-ops may stay in float in an INT8 engine.
_COMPUTE_LAYER_TYPES = ("Convolution", "Deconvolution", "FullyConnected", "MatrixMultiply", "Gemm")
_DESERIALIZED = re.compile(r"Engine deserialized in ([0-9.eE+-]+) sec")
_TRT_MANAGED = re.compile(r"TensorRT-managed allocation in (.+?): CPU \+?(-?\d+), GPU \+?(-?\d+), "
                          r"now: CPU (\d+), GPU (\d+) \(MiB\)")


def _load_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"could not read trtexec's {what} {path}: {exc}") from exc


def parse_profile(path: Path) -> dict:
    """trtexec --exportProfile: {"count", "layers": [{"name", "average_ms", "median_ms",
    "total_ms", "percentage"}]} in execution order."""
    data = _load_json(path, "profile")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "count" not in data[0]:
        raise UserError(f"{path} is not a trtexec --exportProfile file (no leading {{\"count\": N}})")
    layers = []
    for record in data[1:]:
        if not isinstance(record, dict) or "name" not in record or "averageMs" not in record:
            raise UserError(f"{path}: a profile record has no name/averageMs: {str(record)[:80]}")
        layers.append({"name": record["name"], "average_ms": float(record["averageMs"]),
                       "median_ms": float(record.get("medianMs", record["averageMs"])),  # < 8.6: no median
                       "total_ms": float(record.get("timeMs", 0.0)), "percentage": float(record.get("percentage", 0.0))})
    return {"count": int(data[0]["count"]), "layers": layers}


def format_precision(format_text: str) -> str | None:
    """"Thirty-two wide channel vectorized row major Int8 format" -> "INT8"; None if no type word."""
    found = _TYPE_PATTERN.search(format_text.replace(".", ""))
    return _TYPE_NAMES[found.group(1)] if found else None


def parse_layer_info(path: Path) -> dict[str, dict]:
    """trtexec --exportLayerInfo: layer name -> {"type", "precision", "weights", "tactic"}.
    A layer's precision is that of its first input (as trt-engine-explorer reads it), its weights'
    type where it has weights. Names-only files (engine not built with detailed profiling
    verbosity) give layers with None for everything but the name."""
    data = _load_json(path, "layer info")
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise UserError(f"{path} is not a trtexec --exportLayerInfo file (no \"Layers\" list)")
    layers = {}
    for layer in data["Layers"]:
        if isinstance(layer, str):  # --profilingVerbosity=layer_names_only
            layers[layer] = {"type": None, "precision": None, "weights": None, "tactic": None}
            continue
        inputs = layer.get("Inputs") or []
        precision = format_precision(inputs[0].get("Format/Datatype", "")) if inputs else None
        weights = layer.get("Weights") or layer.get("ConvWeights")
        layers[layer["Name"]] = {
            "type": layer.get("LayerType"), "parameter_type": layer.get("ParameterType"),
            "precision": precision,
            "weights": _TYPE_NAMES.get(weights.get("Type"), weights.get("Type")) if isinstance(weights, dict) else None,
            "tactic": layer.get("TacticName"),
        }
    return layers


def parse_times(path: Path) -> list[float]:
    """trtexec --exportTimes: each timed inference's host latency (ms), in order."""
    data = _load_json(path, "times")
    if not isinstance(data, list) or any(not isinstance(r, dict) or "latencyMs" not in r for r in data):
        raise UserError(f"{path} is not a trtexec --exportTimes file (records without latencyMs)")
    return [float(record["latencyMs"]) for record in data]


def per_layer(profile: dict, layer_info: dict[str, dict] | None = None) -> dict:
    """The profile and the layer info joined into the report's per-layer shape (the same keys as
    backends.openvino.profile_layers): each layer's median time, share, type and precision;
    `compute_float` lists the compute layers that did not run in INT8."""
    info = layer_info or {}
    total = sum(layer["median_ms"] for layer in profile["layers"])
    layers = []
    for layer in profile["layers"]:
        details = info.get(layer["name"], {})
        precision = details.get("weights") or details.get("precision") or "unknown"
        layers.append({"name": layer["name"], "type": details.get("parameter_type") or details.get("type") or "unknown",
                       "exec_type": details.get("tactic") or "", "precision": precision,
                       "median_ms": round(layer["median_ms"], 5),
                       "share": round(layer["median_ms"] / total, 4) if total > 0 else 0.0})
    compute = [layer for layer in layers if any(kind in layer["type"] for kind in _COMPUTE_LAYER_TYPES)]
    return {
        "source": "trtexec --exportProfile" + (" and --exportLayerInfo" if layer_info else ""),
        "runs": profile["count"], "layers": layers, "total_ms": round(total, 5),
        "compute_int8": [layer["name"] for layer in compute if layer["precision"] == "INT8"],
        "compute_float": [layer["name"] for layer in compute if layer["precision"] != "INT8"],
    }


def load_stats_from_log(text: str) -> dict:
    """Engine deserialization time and TensorRT-managed memory from trtexec's log: load_ms, and
    gpu_memory_mb / cpu_memory_mb, the largest "now" totals of TensorRT's own allocations (engine
    weights, then the execution context's activations). CUDA's and cuDNN's own start-up memory is
    not TensorRT-managed and not counted."""
    result: dict = {"load_ms": None, "gpu_memory_mb": None, "cpu_memory_mb": None}
    seconds = _DESERIALIZED.findall(text)
    if seconds:
        result["load_ms"] = round(float(seconds[-1]) * 1000, 3)
    allocations = _TRT_MANAGED.findall(text)
    if allocations:
        mib = 1024 * 1024 / 1e6  # trtexec prints MiB; edgekd's MB are 1e6 bytes
        result["cpu_memory_mb"] = round(max(int(a[3]) for a in allocations) * mib, 2)
        result["gpu_memory_mb"] = round(max(int(a[4]) for a in allocations) * mib, 2)
    return result


def build_trtexec_profile_command(engine_path: Path, out_dir: Path, *, runs: int, warmup_ms: int,
                                  shapes: str | None = None, trtexec: str = "trtexec") -> list[str]:
    """trtexec arguments that time `runs` inferences and export per-layer profile, layer info and
    per-inference times into `out_dir`. --separateProfileRun: the per-layer profiling (which
    synchronises after each layer) runs apart from the timed run, so the end-to-end numbers stay
    clean. Detailed layer info needs an engine built with --profilingVerbosity=detailed."""
    command = [trtexec, f"--loadEngine={engine_path}"]
    if shapes:
        command.append(f"--shapes={shapes}")
    return command + [
        f"--warmUp={warmup_ms}", f"--iterations={runs}", "--duration=0", "--avgRuns=1", "--useSpinWait",
        "--separateProfileRun", "--profilingVerbosity=detailed",
        f"--exportProfile={out_dir / 'profile.json'}", f"--exportLayerInfo={out_dir / 'layer_info.json'}",
        f"--exportTimes={out_dir / 'times.json'}",
    ]


def profile_engine(engine_path: Path, out_dir: Path, *, runs: int, warmup_ms: int, shapes: str | None = None) -> dict:
    """Run trtexec on a TensorRT host and return {"per_layer", "timings_ms", "load_ms",
    "gpu_memory_mb", "cpu_memory_mb"} at batch 1; the exported files stay in `out_dir`."""
    from edgekd.backends.tensorrt.sidecar import read_metadata
    from edgekd.backends.tensorrt.trtexec import _run_trtexec, find_trtexec

    metadata = read_metadata(engine_path)
    if shapes is None and "input_name" in metadata and "input_chw" in metadata:
        shapes = f"{metadata['input_name']}:1x{metadata['input_chw']}"  # a dynamic-batch engine needs one
    exe = find_trtexec()
    if exe is None:
        raise UserError("trtexec not found (on a Jetson it is in /usr/src/tensorrt/bin)")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _run_trtexec(build_trtexec_profile_command(engine_path, out_dir, runs=runs, warmup_ms=warmup_ms,
                                                     shapes=shapes, trtexec=exe))
    (out_dir / "trtexec.log").write_text(log)
    layer_info = parse_layer_info(out_dir / "layer_info.json")
    return {"per_layer": per_layer(parse_profile(out_dir / "profile.json"), layer_info),
            "timings_ms": parse_times(out_dir / "times.json"), **load_stats_from_log(log)}
