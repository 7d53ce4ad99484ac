"""x86-cpu's channel multiple, measured: OpenVINO latency of a small network at 3x224x224 for every
channel count around common widths, fp32 and INT8 (NNCF PTQ), all in one run.

Pruning lands widths anywhere; a width between the kernels' blocking sizes runs at the speed of the
next block up (Torch-Pruning #38: unrounded MobileNetV2 widths ran 3x slower in ONNX Runtime). The
network is a 3x3 stride-2 stem (3 -> C), a 3x3 stride-2 convolution (C -> C, at 56x56), a 1x1
convolution (C -> C), global pooling and a classifier; C takes every value in the ranges. The
multiple is the largest of 4/8/16/32 that rounding a width up to costs (almost) no latency: the
kernels pad to it anyway, so a pruned width rounded to it loses no speed, and a width between its
multiples wastes the padding.

    .venv/bin/python benchmarks/channel_multiple.py [--ranges 56-72 80 96 112-136 144 160] [--rounds 7]

Writes benchmarks/results/channel-multiple/results.json and results.md (~15 min on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved_timing import time_interleaved  # noqa: E402

from edgekd.backends import get_backend  # noqa: E402
from edgekd.measure import cpu_name  # noqa: E402
from edgekd.models import count_macs  # noqa: E402
from edgekd.quantizers import get_quantizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "channel-multiple"
INPUT_SHAPE = (3, 224, 224)
MULTIPLES = (4, 8, 16, 32)
# Off-multiple widths may be this much faster than the next multiple up and still count as "not
# faster": timing noise between interleaved rounds on this machine is a few percent.
TOLERANCE = 0.03
# Widths are compared by their fastest run (median over rounds): on this shared 2-core machine the
# p50 measured the neighbours' load (interleaved_timing.py says why); the p50 is reported beside it.
STATISTIC = "fastest_ms"


class WidthProbe(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.point = nn.Conv2d(channels, channels, 1)
        self.fc = nn.Linear(channels, 1000)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.point(torch.relu(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3)))


def export_all(widths: list[int], workdir: Path) -> dict[tuple[int, str], Path]:
    openvino, nncf = get_backend("openvino"), get_quantizer("nncf")
    calibration = torch.rand(4, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    paths = {}
    for width in widths:
        torch.manual_seed(width)
        fp32 = openvino.export(WidthProbe(width).eval(), calibration[:1], workdir / f"c{width}-fp32.xml", metadata={})
        paths[(width, "fp32")] = fp32
        paths[(width, "int8")] = nncf.quantize_ir(fp32, workdir / f"c{width}-int8.xml", calibration)
        logging.info("exported width %d", width)
    return paths


def rounding_cost(latency: dict[int, float], multiple: int) -> tuple[float | None, list[int]]:
    """What rounding a width up to `multiple` costs: the median, over measured widths off the
    multiple whose next multiple up was measured too, of latency(next multiple) / latency(width) - 1
    (about 0 on a staircase of that step, positive where latency grows with every channel), and
    the widths it costs more than TOLERANCE for."""
    pairs = {w: (w // multiple + 1) * multiple for w in latency if w % multiple}
    pairs = {w: up for w, up in pairs.items() if up in latency}
    if not pairs:
        return None, []
    costs = {w: latency[up] / latency[w] - 1.0 for w, up in pairs.items()}
    return statistics.median(costs.values()), sorted(w for w, c in costs.items() if c > TOLERANCE)


def choose_multiple(rows: list[dict]) -> dict:
    costs = {}
    for precision in ("fp32", "int8"):
        latency = {r["width"]: r[STATISTIC] for r in rows if r["precision"] == precision}
        costs[precision] = {m: rounding_cost(latency, m) for m in MULTIPLES}
    # The largest multiple that rounding up to costs at most TOLERANCE (median) at both precisions:
    # a pruned width rounded to it loses no speed, and rounding to less would leave padding unused.
    free = [m for m in MULTIPLES
            if all(costs[p][m][0] is not None and costs[p][m][0] <= TOLERANCE for p in costs)]
    chosen = max(free) if free else min(MULTIPLES)
    return {"chosen": chosen,
            "costs": {p: {str(m): {"median_cost": None if c is None else round(c, 4), "costly_widths": w}
                          for m, (c, w) in by_m.items()} for p, by_m in costs.items()}}


def render(rows: list[dict], choice: dict, conditions: dict) -> str:
    lines = [
        "# x86-cpu channel multiple (OpenVINO, 3x224x224, batch 1, measured)",
        "",
        f"{conditions['runtime']}, {conditions['precision_hint']}, on {conditions['device']}, {conditions['threads']}; "
        f"{conditions['rounds']} interleaved rounds of {conditions['warmup']} warm-up + {conditions['runs']} timed runs "
        f"per artifact; 'fastest' = median over the rounds of each round's fastest run (what the choice uses), "
        f"'p50' = median of the rounds' p50; {conditions['date']}.",
        f"Reproduce: `{conditions['command']}`",
        "",
        "Network: 3x3 stride-2 stem 3->C, 3x3 stride-2 conv C->C (56x56), 1x1 conv C->C, pool, fc 1000. "
        "INT8: NNCF PTQ of the fp32 IR (edgekd.quantizers.nncf_int8.quantize_ir, 4 random calibration images; "
        "latency does not depend on them).",
        "",
        f"**Chosen multiple: {choice['chosen']}**: the largest of {', '.join(map(str, MULTIPLES))} that rounding a "
        f"width up to costs at most {TOLERANCE:.0%} latency (fastest runs; median over the measured widths off the multiple), "
        "in fp32 and in INT8. Cost = latency(next multiple up) / latency(width) - 1: ~0 where latency is a "
        "staircase of that step (the kernels pad to it anyway), positive where every channel costs time.",
        "",
        "| multiple | fp32: median cost of rounding up | fp32: widths costing more | INT8: median cost | INT8: widths costing more |",
        "|---|---|---|---|---|",
    ]
    for m in MULTIPLES:
        f, i = choice["costs"]["fp32"][str(m)], choice["costs"]["int8"][str(m)]
        lines.append(f"| {m} | {_pct(f['median_cost'])} | {f['costly_widths'] or '-'} | "
                     f"{_pct(i['median_cost'])} | {i['costly_widths'] or '-'} |")
    lines += ["", "| C | MMACs | fp32 fastest ms | INT8 fastest ms | INT8 vs fp32 | fp32 p50 ms | INT8 p50 ms | "
              "fp32 per-round fastest | INT8 per-round fastest |", "|---|---|---|---|---|---|---|---|---|"]
    by = {(r["width"], r["precision"]): r for r in rows}
    for width in sorted({r["width"] for r in rows}):
        f, i = by[(width, "fp32")], by[(width, "int8")]
        mark = " **" if width % choice["chosen"] == 0 else ""
        lines.append(f"| {width}{mark} | {f['mmacs']:.1f} | {f['fastest_ms']:.3f} | {i['fastest_ms']:.3f} | "
                     f"{f['fastest_ms'] / i['fastest_ms']:.2f}x | {f['p50_ms']:.3f} | {i['p50_ms']:.3f} | "
                     f"{f['round_min_ms']} | {i['round_min_ms']} |")
    shares = [r["others_share_during"] for r in conditions["rounds_load"] if r["others_share_during"] is not None]
    if shares:
        lines += ["", f"Other processes used {min(shares):.0%}-{max(shares):.0%} of the CPUs during the timing rounds "
                      f"(median {statistics.median(shares):.0%}); rows are ratios within one run."]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "not measured" if value is None else f"{value:+.1%}"


def parse_range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every width around 64 and 128, and the multiples of 16 and 32 above them that rounding goes to.
    parser.add_argument("--ranges", nargs="+", default=["56-72", "80", "96", "112-136", "144", "160"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    # One inference thread by default: with two, each layer waits for the slower thread, and on a
    # shared machine that is whichever one a neighbour interrupted. Kernel blocking, which decides
    # the fast widths, is the same for one thread as for several.
    parser.add_argument("--threads", type=int, default=1, help="inference threads (0: the runtime's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("nncf", "openvino", "edgekd.backends"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    widths = sorted({w for r in args.ranges for w in parse_range(r)})
    started = dt.datetime.now().isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_all(widths, Path(tmp))
        timed = time_interleaved(paths, rounds=args.rounds, warmup=args.warmup, runs=args.runs,
                                 threads=args.threads or None)
    rows = [{"width": w, "precision": p, "mmacs": count_macs(WidthProbe(w), INPUT_SHAPE) / 1e6, **timed[(w, p)]}
            for (w, p) in paths]
    choice = choose_multiple(rows)
    openvino = get_backend("openvino")
    conditions = {
        "device": cpu_name(), "runtime": f"OpenVINO {openvino.version()}", "precision_hint": openvino.precision_note(),
        "threads": f"{args.threads} inference thread(s)" if args.threads else "all cores (runtime default)",
        "rounds": args.rounds, "runs": args.runs, "warmup": args.warmup,
        "python": platform.python_version(), "torch": torch.__version__, "date": started,
        "command": "python benchmarks/channel_multiple.py --ranges " + " ".join(args.ranges)
                   + f" --rounds {args.rounds} --runs {args.runs} --warmup {args.warmup} --threads {args.threads}",
        "rounds_load": timed["_rounds"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps({"conditions": conditions, "choice": choice, "rows": rows},
                                                     indent=2))
    (RESULTS / "results.md").write_text(render(rows, choice, conditions))
    print((RESULTS / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
