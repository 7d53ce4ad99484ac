"""The latency of a search candidate (or of the teacher) on the run's target, with the search's
shorter timing protocol (search.warmup / search.runs): measured where edgekd can run the target,
else predicted from the device's published peaks, and labelled so."""

from __future__ import annotations

import torch

from edgekd.latency import on_target
from edgekd.latency.source import Latency
from edgekd.run import RunContext

# Training images the target's quantizer calibrates on when a candidate is timed in INT8.
CALIBRATION_IMAGES = 64


def _protocol(ctx: RunContext, name: str) -> dict:
    settings = ctx.recipe.search
    return {"workdir": ctx.stage_dir("search") / "candidates", "name": name, "warmup": settings.warmup,
            "runs": settings.runs, "threads": ctx.recipe.bench.threads,
            "calibration": ctx.data.train.head(CALIBRATION_IMAGES)}


def measure_latency(ctx: RunContext, model: torch.nn.Module, precision: str, name: str) -> Latency:
    """Export to the target backend and time batch-1 inference on the target."""
    return on_target.measure_on_target(ctx.target, model, ctx.example, precision, **_protocol(ctx, name))


def target_latency(ctx: RunContext, model: torch.nn.Module, precision: str, name: str) -> Latency:
    """Measured on the target when edgekd can run it, else predicted from the device's peaks."""
    return on_target.latency_on_target(ctx.target, model, ctx.example, precision, **_protocol(ctx, name))
