"""Search speed: candidates scored per minute with predicted latency (the issue asks >= 100/min on
2 cores), for each zero-cost score, on the embedded digits with the default search space.

Each trial is what `edgekd search` does per trial: sample an architecture (NSGA-II), build it,
score it without training, predict its latency from the target's table, store the trial in the
SQLite study. Architectures the sampler proposes again are not re-scored, so both trials/min and
distinct architectures/min are reported. A block missing from the table is extrapolated by the
predictor; the share of such candidates is reported (it costs the same time as a table lookup).

    .venv/bin/python benchmarks/search_speed.py                      # default: 120 trials per score
    EDGEKD_BENCHMARKS_DIR=/path .venv/bin/python benchmarks/search_speed.py --trials 200

The latency table comes from $EDGEKD_BENCHMARKS_DIR/x86-cpu/ or benchmarks/x86-cpu/ (build it with
`edgekd lut --target x86-cpu`). Results: benchmarks/results/search-speed/results.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from edgekd.cli import main as edgekd_main
from edgekd.config import SearchConfig
from edgekd.measure import cpu_name
from edgekd.run import RunContext
from edgekd.search import engine
from edgekd.search import stage as search
from edgekd.search.latency_source import has_table
from edgekd.search.proxies import PROXIES

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "search-speed"


def time_score(ctx: RunContext, score: str, trials: int, workdir: Path) -> dict:
    # The default space; "auto" uses the table as it is: a missing block is extrapolated, not timed.
    ctx.recipe.search = SearchConfig(score=score, latency="auto")
    derived = search.teacher_derived_records(ctx)
    started = time.perf_counter()
    evaluator = search.Evaluator(ctx, derived)
    setup_s = time.perf_counter() - started
    study = engine.open_study(f"sqlite:///{workdir / f'{score}.db'}", score, seed=0)
    started = time.perf_counter()
    evaluations = engine.run_trials(
        study, trials=trials, evaluate=evaluator, limit_ms=1e9,
        suggest=lambda trial: search.suggest_record(trial, ctx.recipe.search, ctx.target.channel_multiple, derived),
    )
    seconds = time.perf_counter() - started
    distinct = engine.distinct(evaluations)
    extrapolated = sum(e.latency_source != "predicted" for e in distinct)
    return {
        "score": score, "trials": len(evaluations), "distinct": len(distinct), "seconds": round(seconds, 2),
        "trials_per_min": round(len(evaluations) / seconds * 60, 1),
        "distinct_per_min": round(len(distinct) / seconds * 60, 1),
        "extrapolated_share": round(extrapolated / max(len(distinct), 1), 3), "setup_s": round(setup_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--scores", nargs="+", default=list(PROXIES), choices=PROXIES)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="edgekd-search-speed-") as tmp:
        tmp = Path(tmp)
        # A run dir for the context (teacher, data, target); the teacher is trained once and cached.
        code = edgekd_main(["search", "--target", "x86-cpu", "--runs-dir", str(tmp), "--name", "ctx", "-q",
                            "--set", "search.trials=1", "--set", "search.latency='measured'",
                            "--set", "search.families=['resnet']", "--set", "search.width_multipliers=[0.25]",
                            "--set", "search.depth_options=[1]", "--budget-ms", "100"])
        if code != 0:
            return code
        ctx = RunContext.load(tmp / "ctx")
        if not has_table(ctx):
            print("no latency table for x86-cpu int8 1x8x8: build one with `edgekd lut --target x86-cpu`",
                  file=sys.stderr)
            return 2
        rows = [time_score(ctx, score, args.trials, tmp) for score in args.scores]
    from edgekd.latency.lut import LatencyTable, table_path

    table = LatencyTable.load(table_path("x86-cpu", "int8", (1, 8, 8)))
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "device": cpu_name(),
        "command": " ".join([f"EDGEKD_BENCHMARKS_DIR={os.environ.get('EDGEKD_BENCHMARKS_DIR', 'benchmarks')}",
                             ".venv/bin/python benchmarks/search_speed.py", *sys.argv[1:]]),
        "space": "default search space (resnet, mobilenet, teacher-derived from resnet_l), digits 1x8x8",
        "table_blocks": len(table.blocks), "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Search speed (predicted latency)", "",
        f"{result['date']}, {result['device']}, {result['space']}; latency table with {len(table.blocks)} blocks "
        "(missing blocks extrapolated by the predictor, same cost).", "",
        f"Reproduce: `{result['command']}`", "",
        "| score | trials | distinct archs | seconds | trials/min | distinct/min | extrapolated share |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['score']} | {row['trials']} | {row['distinct']} | {row['seconds']} | "
                     f"{row['trials_per_min']} | {row['distinct_per_min']} | {row['extrapolated_share']:.0%} |")
    (RESULTS / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
