"""Latency at a product-realistic input size (3x224x224) on x86-cpu: teacher-sized and
student-sized built-in architectures, fp32 vs INT8 (NNCF), all timed in one run with the bench
protocol, so the ratios are comparable.

At the embedded default's 8x8 input, batch-1 latency is mostly per-call overhead; at 224x224
compute dominates, which is where INT8 and smaller students should pay off. Latency needs no
trained weights, so the models are freshly initialised; INT8 is calibrated on random images.

    make setup && .venv/bin/python benchmarks/latency_224.py [--runs 50] [--archs resnet_s resnet_m]

Writes benchmarks/results/latency-224/results.json and results.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import tempfile
from pathlib import Path

import torch

from edgekd.backends import get_backend
from edgekd.measure import cpu_name
from edgekd.models import PRESETS, build_model, count_macs, count_params
from edgekd.quantizers import get_quantizer

RESULTS = Path(__file__).resolve().parent / "results" / "latency-224"
INPUT_SHAPE = (3, 224, 224)


def measure(archs: list[str], runs: int, warmup: int) -> list[dict]:
    openvino, quantizer = get_backend("openvino"), get_quantizer("nncf")
    torch.manual_seed(0)
    calibration = torch.rand(16, *INPUT_SHAPE)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            model = build_model(arch, INPUT_SHAPE[0], 1000).eval()
            variants = {"fp32": model, "int8": quantizer.prepare_int8(model, calibration, batch_size=8)}
            for precision, variant in variants.items():
                path = openvino.export(variant, calibration[:1], Path(tmp) / f"{arch}-{precision}.xml", metadata={})
                stats = openvino.benchmark(path, warmup=warmup, runs=runs)
                rows.append({"arch": arch, "precision": precision, "params": count_params(model),
                             "gmacs": round(count_macs(model, INPUT_SHAPE) / 1e9, 3),
                             "p50_ms": stats.p50_ms, "p90_ms": stats.p90_ms, "p99_ms": stats.p99_ms,
                             "size_mb": round(openvino.size_mb(path), 3)})
                logging.info("%s %s: p50 %.3f ms", arch, precision, stats.p50_ms)
    return rows


def render(rows: list[dict], conditions: dict) -> str:
    slowest = max(r["p50_ms"] for r in rows if r["precision"] == "fp32")
    fp32 = {r["arch"]: r["p50_ms"] for r in rows if r["precision"] == "fp32"}
    lines = [
        "# Latency at 3x224x224 on x86-cpu (OpenVINO, batch 1, measured)",
        "",
        f"{conditions['runtime']} on {conditions['device']}, {conditions['threads']}, "
        f"{conditions['warmup']} warm-up + {conditions['runs']} timed runs, {conditions['date']}.",
        f"Reproduce: `{conditions['command']}`",
        "",
        "| arch | precision | params | GMACs | p50 ms | p99 ms | vs slowest fp32 | INT8 vs own fp32 | size MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        own = f"{fp32[r['arch']] / r['p50_ms']:.2f}x" if r["precision"] == "int8" else ""
        lines.append(f"| {r['arch']} | {r['precision']} | {r['params']:,} | {r['gmacs']} | {r['p50_ms']:.3f} "
                     f"| {r['p99_ms']:.3f} | {slowest / r['p50_ms']:.2f}x | {own} | {r['size_mb']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=sorted(PRESETS), help="built-in architectures to time")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("nncf", "openvino"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    rows = measure(args.archs, args.runs, args.warmup)
    openvino = get_backend("openvino")
    conditions = {
        "device": cpu_name(), "runtime": f"openvino {openvino.version()}", "threads": "all cores (runtime default)",
        "precision_hint": openvino.precision_note(), "warmup": args.warmup, "runs": args.runs,
        "python": platform.python_version(), "torch": torch.__version__,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": ".venv/bin/python benchmarks/latency_224.py " + " ".join(
            [f"--runs {args.runs}", f"--warmup {args.warmup}", "--archs", *args.archs]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2))
    (RESULTS / "results.md").write_text(render(rows, conditions))
    print((RESULTS / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
