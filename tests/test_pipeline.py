"""The feedback loop end to end: a shipped artifact that misses the budget sends the run back to
the next student on the search's front, and the report shows every attempt."""

from __future__ import annotations

import json

from tiny_recipe import tiny_args

from edgekd.bench import stage as bench
from edgekd.cli import main
from edgekd.latency import on_target
from edgekd.latency.source import MEASURED, Latency
from edgekd.models import count_params


def test_a_budget_miss_reselects_the_next_student_and_reports_both_attempts(tmp_path, monkeypatch):
    real_bench = bench.run
    calls = []

    def bench_that_misses_once(ctx):
        result = real_bench(ctx)
        calls.append(ctx.result("search").chosen)
        if len(calls) == 1:  # test-forced miss: the first artifact "measures" just over the budget
            deployed = result.models["student_int8"]
            deployed.latency = Latency(ctx.result("search").budget.ms * 1.0001, MEASURED)
        return result

    monkeypatch.setattr(bench, "run", bench_that_misses_once)
    # The search's latencies grow with size here: at 8x8 two tiny students' real timings are within
    # noise of each other on a busy machine, and this test is about the loop, not the timing.
    monkeypatch.setattr(on_target, "measure_on_target", lambda target, model, *args, name, **_: Latency(
        1.0 if name == "teacher" else count_params(model) / 1e6, MEASURED))
    args = tiny_args()
    args[args.index("--budget-ms") + 1] = "5"
    code = main(["compress", "--target", "x86-cpu", "--runs-dir", str(tmp_path), "--name", "r", *args,
                 "--set", "search.trials=4", "--set", "search.width_multipliers=[0.25,2.0]",
                 "--set", "search.score='params'"])
    assert code == 0
    assert len(calls) == 2 and calls[0] != calls[1]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    attempts = report["search"]["attempts"]
    assert [a["student"] for a in attempts] == calls
    assert attempts[0]["budget_met"] is False and attempts[1]["budget_met"] is True
    assert report["budget_met"] is True
    # the second student is the next one on the front: smaller score, faster
    front = [p["name"] for p in report["search"]["front"]]
    assert front.index(calls[1]) > front.index(calls[0])
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| 1 | " + calls[0] in text and "| missed |" in text
