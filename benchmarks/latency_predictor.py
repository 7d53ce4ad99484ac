"""How well does the latency table predict whole models on x86-cpu? Predicted vs measured p50 for
architectures sampled from the search space, none of which built or calibrated the table.

    make setup && .venv/bin/python benchmarks/latency_predictor.py      # full
    .venv/bin/python benchmarks/latency_predictor.py --quick            # smoke: digits only, tiny space

Time on this project's 2-core machine (measured per block and per architecture while other jobs
shared it, so read these as upper ends): digits, 314 blocks at 4-17 s + 35 archs at ~25 s: 0.5-1.5 h;
224, 314 blocks at 45-125 s + 35 archs at ~1 min: 4-11 h; `--table sampled` times only the
~120 blocks the sampled architectures use (224: 1.5-4 h). The full run is resumable: kill it
and run the same command again.

Two settings: "digits", the embedded dataset's own input (1x8x8, 10 classes), and "224", a
product-realistic input (3x224x224, 1000 classes, an ImageNet-sized head as in latency_224.py).
For each: the INT8 table of the search space's blocks (benchmarks/x86-cpu/lut-int8-<CxHxW>.json,
built or resumed exactly as `edgekd lut` does, with the search's timing protocol); then
`--calibration` + `--archs` distinct records drawn at random from the space; the first
`--calibration` are measured and calibrate the predictor (scale, offset), the others are measured
and compared with the calibrated prediction. Each model is quantized with NNCF (random inputs:
scales do not change the INT8 kernels' cost), exported to OpenVINO and timed with x86-cpu's bench
protocol (warm-up, then N runs, p50). The space is the search's default resnet + mobilenet space;
teacher-derived students are left out (at 224 they are resnet_l cut-downs costing up to 0.4 s
per inference, which would multiply the run time; their blocks are resnet blocks like the rest).

Writes results.json and results.md to benchmarks/results/latency-predictor/ (--quick: to a temp
folder, tables included, so a smoke run leaves the repo alone). Every measured architecture is
cached in cache.jsonl there and every table block in its table, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.backends import get_backend
from edgekd.config import SearchConfig
from edgekd.latency import LatencyPredictor, build_lut, table_path
from edgekd.measure import cpu_name
from edgekd.models import arch_name, build_model
from edgekd.models.blocks import layer_plan
from edgekd.quantizers import get_quantizer
from edgekd.search.space import record_key, sample_records, space_block_specs
from edgekd.target import load_target

RESULTS = Path(__file__).resolve().parent / "results" / "latency-predictor"
SETTINGS = {"digits": ((1, 8, 8), 10), "224": ((3, 224, 224), 1000)}
FULL_SPACE = SearchConfig(families=["resnet", "mobilenet"], base="resnet_s", mobilenet_base="mobilenet_s")
QUICK_SPACE = SearchConfig(families=["resnet", "mobilenet"], base="resnet_s", mobilenet_base="mobilenet_s", width_multipliers=[0.25, 0.5], depth_options=[1, 2],
                           kernel_options=[3], expand_options=[3], se_options=[False, True])
log = logging.getLogger("latency_predictor")


def measure(record: dict, shape: tuple, classes: int, workdir: Path, warmup: int, runs: int, repeats: int,
            threads) -> dict:
    openvino, quantizer = get_backend("openvino"), get_quantizer("nncf")
    torch.manual_seed(0)
    model = build_model(record, shape[0], classes).eval()
    x = torch.rand(16, *shape)
    path = openvino.export(quantizer.prepare_int8(model, x, batch_size=8), x[:1], workdir / "arch.xml", metadata={})
    # The bench protocol `repeats` times, median of each statistic: on a shared CPU one pass can be
    # off by tens of percent, and one such pass would be blamed on the predictor.
    passes = [openvino.benchmark(path, warmup=warmup, runs=runs, threads=threads) for _ in range(repeats)]
    return {"measured_p50_ms": float(np.median([s.p50_ms for s in passes])),
            "measured_p90_ms": float(np.median([s.p90_ms for s in passes])),
            "measured_p99_ms": float(np.median([s.p99_ms for s in passes])), "p50_passes_ms": [s.p50_ms for s in passes]}


class Cache:
    """Measured architectures, one JSON line each, keyed by setting, architecture and protocol."""

    def __init__(self, path: Path):
        self.path, self.rows = path, {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["cache_key"]] = row
                except (ValueError, KeyError):
                    continue  # a line cut by a kill: measured again

    def get_or_measure(self, key: str, fn) -> dict:
        if key not in self.rows:
            start = time.perf_counter()
            row = {"cache_key": key, **fn(), "seconds": round(time.perf_counter() - start, 1),
                   "date": dt.datetime.now().isoformat(timespec="seconds")}
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            self.rows[key] = row
        return self.rows[key]


def run_setting(name: str, args, space: SearchConfig, cache: Cache, workdir: Path) -> dict:
    shape, classes = SETTINGS[name]
    target = load_target("x86-cpu")
    records = sample_records(space, args.calibration + args.archs, seed=args.seed,
                             channel_multiple=target.channel_multiple)
    if args.table == "space":
        specs = space_block_specs(space, shape[0], classes, shape[1:], target.channel_multiple)
    else:  # only the sampled architectures' blocks: a partial table that `edgekd lut` can complete later
        specs = [spec for record in records for spec in layer_plan(record, shape[0], classes, shape[1:])]
    started = time.perf_counter()
    table = build_lut(target, specs, "int8", input_shape=shape, warmup=space.warmup, runs=space.runs,
                      threads=target.bench.threads)
    table_s = time.perf_counter() - started
    protocol = {"warmup": args.warmup, "runs": args.runs, "repeats": args.repeats}
    measured = []
    for index, record in enumerate(records):
        key = json.dumps([name, record_key(record), protocol])
        row = cache.get_or_measure(key, lambda r=record: measure(r, shape, classes, workdir, threads=target.bench.threads,
                                                                 **protocol))
        measured.append((record, row))
        log.info("%s %d/%d %s: measured p50 %.4f ms", name, index + 1, len(records), arch_name(record),
                 row["measured_p50_ms"])
    predictor = LatencyPredictor(table, num_classes=classes)
    calibration = [{"arch": r, "input_shape": list(shape), "precision": "int8", "measured_p50_ms": m["measured_p50_ms"]}
                   for r, m in measured[:args.calibration]]
    predictor.calibrate(calibration)
    rows = []
    for record, row in measured[args.calibration:]:
        table_ms = predictor.table_ms(record)
        rows.append({"arch": arch_name(record), "record": record, "table_ms": table_ms,
                     "predicted_ms": predictor.scale * table_ms + predictor.offset, "extrapolated_blocks": len(predictor.last_missing),
                     "measured_p50_ms": row["measured_p50_ms"], "measured_p90_ms": row["measured_p90_ms"],
                     "measure_s": row["seconds"]})
    block_s = [b.get("seconds", 0.0) for b in table.blocks.values()]
    return {
        "name": name, "input_shape": list(shape), "num_classes": classes, "calibration": predictor.calibration,
        "table": {"path": str(table_path("x86-cpu", "int8", shape)), "blocks": len(table.blocks),
                  "timed_blocks": len({json.dumps(s, sort_keys=True) for s in specs}), "built_for": args.table,
                  "overhead_ms": table.overhead_ms, "empty_ms": table.empty_ms, "conditions": table.conditions,
                  "seconds_per_block": float(np.mean(block_s)) if block_s else None, "this_run_s": round(table_s, 1)},
        "calibration_archs": [arch_name(r) for r, _ in measured[:args.calibration]],
        "rows": rows, "summary": {"predicted": summarize(rows, "predicted_ms"), "table_only": summarize(rows, "table_ms")},
    }


def summarize(rows: list[dict], column: str) -> dict:
    if not rows:
        return {}
    predicted = np.array([r[column] for r in rows])
    measured = np.array([r["measured_p50_ms"] for r in rows])
    errors = (predicted - measured) / measured
    ranks = lambda v: np.argsort(np.argsort(v))  # no ties among measured floats
    spearman = float(np.corrcoef(ranks(predicted), ranks(measured))[0, 1]) if len(rows) > 2 else None
    return {"archs": len(rows), "within_10pct": float(np.mean(np.abs(errors) <= 0.10)),
            "mape_pct": float(100 * np.mean(np.abs(errors))), "median_error_pct": float(100 * np.median(errors)),
            "spearman": spearman}


def render(results: dict) -> str:
    c = results["conditions"]
    lines = ["# Latency predictor vs measurement on x86-cpu (OpenVINO INT8, batch 1)", "",
             (f"{c['runtime']}, {c['quantizer']}, on {c['device']} ({c['cpus']} CPUs), threads: {c['threads']}; "
             f"measured: {c['warmup']} warm-up + {c['runs']} timed runs, p50, median of {c['repeats']} passes; {c['date']}."),
             f"Reproduce: `{c['command']}`", ""]
    for s in results["settings"]:
        shape = "x".join(map(str, s["input_shape"]))
        p, t, cal = s["summary"]["predicted"], s["summary"]["table_only"], s["calibration"]
        lines += [f"## {s['name']}: {shape}, {s['num_classes']} classes", "",
                  (f"Table: {s['table']['blocks']} blocks (of the {s['table']['built_for']}), overhead "
                  f"{s['table']['overhead_ms']:.4f} ms, {s['table']['seconds_per_block']:.1f} s per block to build. "
                  f"Calibration ({cal['method']}, on {cal['records']} archs: {', '.join(s['calibration_archs'])}): "
                  f"measured = {cal['scale']:.3f} x table + {cal['offset']:.4f} ms."), ""]
        if p:
            lines += [(f"**Predicted (calibrated): {p['within_10pct']:.0%} of {p['archs']} archs within +-10%, "
                      f"MAPE {p['mape_pct']:.1f}%, Spearman {p['spearman']:.3f}.** Table alone (uncalibrated): "
                      f"{t['within_10pct']:.0%} within +-10%, MAPE {t['mape_pct']:.1f}%."), "",
                      "| arch | table ms (predicted) | predicted ms | measured p50 ms | error | extrapolated blocks |",
                      "|---|---|---|---|---|---|"]
            for r in s["rows"]:
                error = (r["predicted_ms"] - r["measured_p50_ms"]) / r["measured_p50_ms"]
                lines.append(f"| {r['arch']} | {r['table_ms']:.4f} | {r['predicted_ms']:.4f} | "
                             f"{r['measured_p50_ms']:.4f} | {error:+.1%} | {r['extrapolated_blocks']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["digits", "224"])
    parser.add_argument("--archs", type=int, default=30, help="evaluated architectures per setting")
    parser.add_argument("--calibration", type=int, default=5, help="architectures that calibrate the predictor")
    parser.add_argument("--warmup", type=int, help="warm-up runs per architecture (default: x86-cpu's bench protocol)")
    parser.add_argument("--runs", type=int, help="timed runs per architecture (default: x86-cpu's bench protocol)")
    parser.add_argument("--table", choices=["space", "sampled"], default="space",
                        help="time every block of the space (as `edgekd lut` does) or only the sampled architectures' "
                        "blocks (about 40%% of the time at the default space)")
    parser.add_argument("--repeats", type=int, default=3, help="bench protocol passes per architecture (median)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, a tiny space, 2 + 5 archs, short timing")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/latency-predictor; "
                        "--quick: a temp folder)")
    args = parser.parse_args()
    target = load_target("x86-cpu")
    space = FULL_SPACE
    if args.quick:
        space = QUICK_SPACE
        args.settings, args.archs, args.calibration = ["digits"], min(args.archs, 5), min(args.calibration, 2)
        args.warmup, args.runs = args.warmup or 10, args.runs or 50
        space.warmup, space.runs = 10, 50
    args.warmup = args.warmup if args.warmup is not None else target.bench.warmup
    args.runs = args.runs if args.runs is not None else target.bench.runs
    out = args.out or (Path(tempfile.gettempdir()) / "edgekd-latency-predictor-quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick and "EDGEKD_BENCHMARKS_DIR" not in os.environ:
        os.environ["EDGEKD_BENCHMARKS_DIR"] = str(out / "benchmarks")  # smoke tables stay out of the repo
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("nncf", "openvino", "edgekd.backends"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    started = time.perf_counter()
    cache = Cache(out / "cache.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        settings = [run_setting(name, args, space, cache, Path(tmp)) for name in args.settings]
    openvino = get_backend("openvino")
    results = {"conditions": {
        "device": cpu_name(), "cpus": os.cpu_count(), "runtime": f"openvino {openvino.version()}",
        "quantizer": f"nncf {get_quantizer('nncf').version()}", "threads": target.bench.threads or "runtime default (all cores)",
        "precision_hint": openvino.precision_note(), "warmup": args.warmup, "runs": args.runs, "repeats": args.repeats,
        "table_protocol": {"warmup": space.warmup, "runs": space.runs}, "space": vars(space) | {},
        "python": platform.python_version(), "torch": torch.__version__,
        "date": dt.datetime.now().isoformat(timespec="seconds"), "wall_s": round(time.perf_counter() - started, 1),
        "command": (f"EDGEKD_BENCHMARKS_DIR={shlex.quote(os.environ['EDGEKD_BENCHMARKS_DIR'])} "
                    if "EDGEKD_BENCHMARKS_DIR" in os.environ else "") + ".venv/bin/python " + " ".join(shlex.quote(a) for a in ["benchmarks/latency_predictor.py", *sys.argv[1:]]),
    }, "settings": settings}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(render(results))
    print((out / "results.md").read_text())
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
