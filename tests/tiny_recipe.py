"""A tiny recipe for end-to-end runs in seconds: the pipeline is the same; only epochs,
candidates and timing runs shrink."""

from __future__ import annotations

TINY = [
    "teacher.arch='resnet_s'", "teacher.epochs=2",
    "search.families=['resnet']", "search.width_multipliers=[0.25,0.5]", "search.depth_options=[1]",
    "search.trials=4", "search.finalists=1", "search.latency='measured'", "search.warmup=2", "search.runs=10",
    "distill.epochs=2", "distill.qat_epochs=1", "distill.calibration_samples=64",
    "bench.warmup=2", "bench.runs=10", "bench.throughput_batch=8", "bench.throughput_runs=3",
]


def tiny_args() -> list[str]:
    """CLI arguments for a fast run: the tiny recipe, and a budget every candidate meets."""
    args = ["--budget-ms", "1000"]
    for item in TINY:
        args += ["--set", item]
    return args
