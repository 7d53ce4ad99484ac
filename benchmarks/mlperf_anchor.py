"""Anchor check of the analytical latency predictor (edgekd/latency/analytical.py) against a
published measurement it was not fitted on.

    .venv/bin/python benchmarks/mlperf_anchor.py [--out benchmarks/results/mlperf-anchor]

1. Fit: the predictor's two constants (compute efficiency, per-layer fixed cost) by least
   squares of the relative error on three MLPerf Inference v3.1 single-stream results that are
   NOT the anchor (RetinaNet on Jetson AGX Orin and on Orin NX, ResNet-50 on Orin NX), and
   check that the constants in the module are that fit, rounded.
2. Anchor: predict ResNet-50 v1.5 INT8 batch 1 on targets/jetson-orin.yaml with the module's
   constants and compare with NVIDIA's published MLPerf Inference v3.1 single-stream result for
   Jetson AGX Orin (90th percentile 0.640 ms): pass within +-25%.

Models are built on the meta device (shapes only), so the whole run takes seconds. Nothing here
is measured: every latency it writes is either a cited publication or a prediction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mlperf_models beside this script

from mlperf_models import resnet50, retinanet_resnext50_fpn

from edgekd.latency import analytical
from edgekd.target import load_target

RESULTS_REPO = "https://github.com/mlcommons/inference_results_v3.1/blob/main/closed/NVIDIA/results"
TOLERANCE = 0.25


@dataclass(frozen=True)
class Device:
    name: str
    int8_tops: float  # dense, GPU only: single-stream runs on the GPU (the DLAs only in Offline)
    bandwidth_gbs: float
    source: str


ORIN_NX_16GB = Device(
    "Jetson Orin NX 16GB", 30.0, 102.4,
    "Jetson Orin NX Series data sheet (1024 CUDA cores, 32 tensor cores, 128-bit LPDDR5 102.4 GB/s); "
    "GPU max clock 918 MHz (deviceQuery on Orin NX 16GB). Dense INT8 = AGX Orin's per-tensor-core rate "
    "(85 TOPS / 64 TC / 1.3 GHz) x 32 TC x 0.918 GHz = 30.0 TOPS",
)


@dataclass(frozen=True)
class Published:
    model: str
    device: str
    p90_ms: float
    p50_ms: float
    path: str  # under RESULTS_REPO


# MLPerf Inference v3.1, closed division, NVIDIA, TensorRT 8.5.2 / JetPack 5.1.1, SingleStream,
# performance run_1 mlperf_log_summary.txt. The single-stream metric is the 90th percentile.
CALIBRATION = [
    Published("retinanet", "agx", 11.672065, 11.560481, "Orin_TRT/retinanet/SingleStream/performance/run_1/mlperf_log_summary.txt"),
    Published("retinanet", "nx", 28.625606, 28.428865, "Orin_NX_TRT/retinanet/SingleStream/performance/run_1/mlperf_log_summary.txt"),
    Published("resnet50", "nx", 1.082300, 1.078494, "Orin_NX_TRT/resnet50/SingleStream/performance/run_1/mlperf_log_summary.txt"),
]
ANCHOR = Published("resnet50", "agx", 0.640258, 0.636227, "Orin_TRT/resnet50/SingleStream/performance/run_1/mlperf_log_summary.txt")

MODELS = {  # (builder, input shape): MLPerf's inputs
    "resnet50": (resnet50, (3, 224, 224)),
    "retinanet": (retinanet_resnext50_fpn, (3, 800, 800)),
}


def layers_of(model_name: str) -> list[analytical.LayerWork]:
    build, shape = MODELS[model_name]
    with torch.device("meta"):
        model = build()
    return analytical.profile_layers(model, shape)


def device_peaks(key: str) -> tuple[float, float, str]:
    if key == "nx":
        return ORIN_NX_16GB.int8_tops, ORIN_NX_16GB.bandwidth_gbs, ORIN_NX_16GB.source
    peaks = load_target("jetson-orin").peaks
    return peaks.int8_tops, peaks.memory_bandwidth_gbs, peaks.source


def predict(layers, key: str, efficiency: float, overhead_ms: float) -> float:
    tops, bandwidth, source = device_peaks(key)
    return analytical.estimate(layers, key, "int8", tops, bandwidth, source,
                               efficiency=efficiency, layer_overhead_ms=overhead_ms).total_ms


def fit(points: list[Published], layers: dict[str, list]) -> tuple[float, float]:
    """Least squares of relative error over (efficiency, overhead): for each efficiency on a
    fine grid the overhead has a closed form (the prediction is linear in it), kept >= 0."""
    best = None
    for step in range(10, 1001):
        efficiency = step / 1000
        base, counts = [], []
        for point in points:
            work = layers[point.model]
            base.append(predict(work, point.device, efficiency, 0.0))
            counts.append(sum(1 for layer in work if layer.fixed_cost))
        num = sum((c / p.p90_ms) * ((p.p90_ms - b) / p.p90_ms) for p, b, c in zip(points, base, counts))
        den = sum((c / p.p90_ms) ** 2 for p, c in zip(points, counts))
        overhead = max(0.0, num / den)
        error = sum(((b + c * overhead - p.p90_ms) / p.p90_ms) ** 2 for p, b, c in zip(points, base, counts))
        if best is None or error < best[0]:
            best = (error, efficiency, overhead)
    return best[1], best[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/mlperf-anchor")
    args = parser.parse_args()

    layers = {name: layers_of(name) for name in MODELS}
    fit_efficiency, fit_overhead = fit(CALIBRATION, layers)
    efficiency, overhead = analytical.COMPUTE_EFFICIENCY, analytical.LAYER_OVERHEAD_MS
    calibration_rows = []
    for point in CALIBRATION:
        predicted = predict(layers[point.model], point.device, efficiency, overhead)
        calibration_rows.append({"model": point.model, "device": _device_name(point.device),
                                 "published_p90_ms": point.p90_ms, "predicted_ms": round(predicted, 4),
                                 "ratio": round(predicted / point.p90_ms, 3), "source": f"{RESULTS_REPO}/{point.path}"})

    # How much the anchor depends on each calibration point: refit without it.
    leave_one_out = []
    for dropped in CALIBRATION:
        e, t = fit([p for p in CALIBRATION if p is not dropped], layers)
        predicted = predict(layers[ANCHOR.model], ANCHOR.device, e, t)
        leave_one_out.append({"without": f"{dropped.model} on {_device_name(dropped.device)}",
                              "compute_efficiency": e, "layer_overhead_ms": round(t, 5),
                              "anchor_predicted_ms": round(predicted, 4),
                              "anchor_ratio": round(predicted / ANCHOR.p90_ms, 3)})

    target = load_target("jetson-orin")
    with torch.device("meta"):
        model = resnet50()
    estimate = analytical.predict_latency_ms(model, (3, 224, 224), target, "int8")
    ratio = estimate.total_ms / ANCHOR.p90_ms
    passed = abs(ratio - 1) <= TOLERANCE
    bound = {"compute": 0, "memory": 0}
    for layer in estimate.layers:
        bound[layer.bound] += 1
    result = {
        "date": dt.date.today().isoformat(),
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/mlperf_anchor.py",
        "host": platform.platform(),
        "model": "ResNet-50 v1.5 (torchvision layout, 25,557,032 params, 4.09 GMACs), 3x224x224, batch 1, INT8",
        "target": "jetson-orin (targets/jetson-orin.yaml peaks)",
        "peaks": {"int8_tops": target.peaks.int8_tops, "memory_bandwidth_gbs": target.peaks.memory_bandwidth_gbs,
                  "source": target.peaks.source},
        "constants": {"compute_efficiency": efficiency, "layer_overhead_ms": overhead,
                      "fit_on_calibration": {"compute_efficiency": fit_efficiency,
                                             "layer_overhead_ms": round(fit_overhead, 5)}},
        "calibration": calibration_rows,
        "leave_one_out": leave_one_out,
        "anchor": {
            "label": estimate.label,
            "predicted_ms": round(estimate.total_ms, 4),
            "published_p90_ms": ANCHOR.p90_ms, "published_p50_ms": ANCHOR.p50_ms,
            "published_source": f"{RESULTS_REPO}/{ANCHOR.path} (MLPerf Inference v3.1 closed, NVIDIA, "
                                "Jetson AGX Orin 64G, TensorRT 8.5.2, JetPack 5.1.1, SingleStream)",
            "ratio_predicted_over_published": round(ratio, 3),
            "tolerance": TOLERANCE, "passed": passed,
            "layers": len(estimate.layers), "layers_compute_bound": bound["compute"],
            "layers_memory_bound": bound["memory"],
            "compute_ms": round(sum(l.compute_ms for l in estimate.layers if l.bound == "compute"), 4),
            "memory_ms": round(sum(l.memory_ms for l in estimate.layers if l.bound == "memory"), 4),
            "overhead_ms": round(sum(l.overhead_ms for l in estimate.layers), 4),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(_markdown(result))
    print(f"fit on calibration: efficiency {fit_efficiency:.3f}, overhead {fit_overhead * 1000:.2f} us/layer; "
          f"module: {efficiency}, {overhead * 1000:.2f} us")
    print(f"anchor: predicted {estimate.total_ms:.4f} ms vs published {ANCHOR.p90_ms} ms (p90): "
          f"ratio {ratio:.3f} -> {'PASS' if passed else 'FAIL'} (+-{TOLERANCE:.0%})")
    return 0


def _device_name(key: str) -> str:
    return ORIN_NX_16GB.name if key == "nx" else "Jetson AGX Orin 64GB"


def _markdown(r: dict) -> str:
    a = r["anchor"]
    c = r["constants"]
    lines = [
        "# Analytical latency vs MLPerf: ResNet-50 INT8 batch 1 on Jetson AGX Orin",
        "",
        f"Date {r['date']}. Command: `{r['command']}` (seconds; nothing is measured, models are built on",
        "torch's meta device). Every latency below is either a cited publication or labelled predicted.",
        "",
        "## Anchor",
        "",
        "| | ms |",
        "|---|---|",
        f"| {a['label'].split(':')[0]}) ResNet-50 v1.5, INT8, 3x224x224, batch 1, jetson-orin | {a['predicted_ms']} |",
        f"| published, MLPerf Inference v3.1 single-stream p90 (p50 {a['published_p50_ms']}) | {a['published_p90_ms']} |",
        f"| ratio predicted / published | {a['ratio_predicted_over_published']} |",
        "",
        f"**{'PASS' if a['passed'] else 'FAIL'}** against +-{a['tolerance']:.0%}.",
        "",
        f"Published figure: {a['published_source']}.",
        "",
        (f"Peaks (targets/jetson-orin.yaml): {r['peaks']['int8_tops']} dense INT8 TOPS (GPU only), "
        f"{r['peaks']['memory_bandwidth_gbs']} GB/s; source: {r['peaks']['source']}."),
        "",
        (f"Breakdown: {a['layers']} layers ({a['layers_compute_bound']} compute-bound, {a['layers_memory_bound']} "
        f"memory-bound): compute {a['compute_ms']} ms + memory {a['memory_ms']} ms + fixed per-layer cost "
        f"{a['overhead_ms']} ms."),
        "",
        "## Constants, fitted without the anchor",
        "",
        (f"The module's constants: compute efficiency {c['compute_efficiency']}, per-layer cost "
        f"{c['layer_overhead_ms'] * 1000:.1f} us. The least-squares fit (relative error) on the three MLPerf v3.1 "
        f"single-stream results below gives {c['fit_on_calibration']['compute_efficiency']} and "
        f"{c['fit_on_calibration']['layer_overhead_ms'] * 1000:.2f} us; the module keeps them rounded. "
        "The anchor's own result was not used."),
        "",
        "| model | device | published p90 ms | predicted ms (module constants) | ratio |",
        "|---|---|---|---|---|",
    ]
    for row in r["calibration"]:
        lines.append(f"| {row['model']} | {row['device']} | {row['published_p90_ms']} | {row['predicted_ms']} | {row['ratio']} |")
    lines += [
        "",
        "Sources: " + "; ".join(f"[{row['model']} {row['device']}]({row['source']})" for row in r["calibration"]) + ".",
        (f"Orin NX 16GB peaks (used for calibration only): {ORIN_NX_16GB.int8_tops} dense INT8 TOPS, "
        f"{ORIN_NX_16GB.bandwidth_gbs} GB/s; {ORIN_NX_16GB.source}."),
        "",
        "## Leave one calibration point out",
        "",
        "Refit without each point in turn, then predict the anchor again:",
        "",
        "| fitted without | efficiency | per-layer us | anchor predicted ms | ratio |",
        "|---|---|---|---|---|",
        *(f"| {row['without']} | {row['compute_efficiency']} | {row['layer_overhead_ms'] * 1000:.2f} | "
          f"{row['anchor_predicted_ms']} | {row['anchor_ratio']} |" for row in r["leave_one_out"]),
        "",
        "The pass rests on ResNet-50 on Orin NX: fitted on RetinaNet alone, the per-layer cost comes out",
        "at ~16 us (RetinaNet's NMS and its fewer, larger layers leave it poorly determined) and the",
        "anchor is missed by ~1.9x. The constants transfer across Orin modules for one network; they are",
        "not shown to transfer across networks of very different layer counts and sizes.",
        "",
        "## What this does and does not show",
        "",
        "- One anchor point on one device and one network; it checks the scale of the model, not its",
        "  ranking of architectures. RetinaNet's published latency includes NMS (done on the GPU by",
        "  NVIDIA's harness), which the layer model does not see; the fit absorbs it.",
        "- The constants describe TensorRT 8.5 on Ampere (Orin). On other engines (Core ML's Neural",
        "  Engine, OpenVINO) they are a first guess; measured records on the target correct the scale",
        "  (`edgekd.latency.analytical.calibrated_factor`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
