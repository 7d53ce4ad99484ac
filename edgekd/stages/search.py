"""Pick the student: candidates from a search space, a score, and a latency source.

This first version keeps the three seams simple: the space is the resnet family at several
widths and depths (rounded to the target's channel multiple), the score is the parameter count
("largest that fits"), and latency is measured by exporting each candidate and timing it on the
target backend at the deployed precision (INT8 latency can differ from fp32 in either direction
on small models, so we time what will ship).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from edgekd.backends import get_backend
from edgekd.errors import UserError
from edgekd.models import arch_name, build_model, count_macs, count_params, resolve_arch, scale_width
from edgekd.quantizers import get_quantizer
from edgekd.run import RunContext, write_json

log = logging.getLogger(__name__)


def candidate_space(ctx: RunContext) -> list[dict[str, Any]]:
    """Every (depth, width) combination of the base architecture, deduplicated after rounding."""
    settings = ctx.recipe.search
    base = resolve_arch(settings.base)
    seen, candidates = set(), []
    for depth in settings.depth_options:
        deep = {**base, "depths": [depth] * len(base["depths"])}
        for multiplier in settings.width_multipliers:
            record = scale_width(deep, multiplier, ctx.target.channel_multiple)
            key = json.dumps(record, sort_keys=True)
            if key not in seen:
                seen.add(key)
                candidates.append(record)
    return candidates


def score(model: torch.nn.Module) -> float:
    """Capacity as a stand-in for accuracy after distillation: larger students learn more."""
    return float(count_params(model))


def measure_latency_ms(ctx: RunContext, model: torch.nn.Module, precision: str, name: str) -> float:
    """Export to the target backend and time batch-1 inference (p50, ms) with the search's
    (shorter) protocol."""
    backend = get_backend(ctx.target.backend)
    example = ctx.data.train.x[:1]
    if precision == "int8":
        quantizer = get_quantizer(ctx.target.quantizer)
        model = quantizer.prepare_int8(model, ctx.data.train.x[:64])
    path = ctx.stage_dir("search") / "candidates" / f"{name}-{precision}{backend.SUFFIX}"
    path.parent.mkdir(exist_ok=True)
    backend.export(model, example, path, metadata={"purpose": "latency probe"})
    settings = ctx.recipe.search
    stats = backend.benchmark(path, warmup=settings.warmup, runs=settings.runs, threads=ctx.recipe.bench.threads)
    return stats.p50_ms


def run(ctx: RunContext) -> dict[str, Any]:
    data, target = ctx.data, ctx.target
    torch.manual_seed(ctx.spec.seed)
    teacher = ctx.teacher
    teacher_p50 = measure_latency_ms(ctx, teacher.model, "fp32", "teacher")
    budget_ms, budget_source = ctx.spec.budget_ms, "--budget-ms"
    if budget_ms is None:
        budget_ms = teacher_p50 / ctx.recipe.search.default_speedup
        budget_source = f"teacher fp32 p50 {teacher_p50:.4f} ms / {ctx.recipe.search.default_speedup:g}"
    limit_ms = budget_ms * ctx.recipe.search.latency_margin
    log.info("search: budget %.4f ms (%s); candidates must measure <= %.4f ms", budget_ms, budget_source, limit_ms)

    rows = []
    for record in candidate_space(ctx):
        name = arch_name(record)
        model = build_model(record, data.input_shape[0], data.num_classes).eval()
        latency = measure_latency_ms(ctx, model, target.precision, name)
        rows.append({
            "name": name, "arch": record, "score": score(model), "params": count_params(model),
            "macs": count_macs(model, data.input_shape), "p50_ms": latency, "fits": latency <= limit_ms,
        })
        log.info("search: %-28s params %8d  %s p50 %.4f ms  %s", name, rows[-1]["params"],
                 target.precision, latency, "fits" if rows[-1]["fits"] else "too slow")
    write_json(ctx.stage_dir("search") / "candidates.json", rows)

    fitting = [row for row in rows if row["fits"]]
    if not fitting:
        fastest = min(rows, key=lambda row: row["p50_ms"])
        raise UserError(
            f"no candidate meets the budget of {budget_ms:.4f} ms (with margin {ctx.recipe.search.latency_margin:g}: "
            f"{limit_ms:.4f} ms); the fastest was {fastest['name']} at {fastest['p50_ms']:.4f} ms "
            f"({target.precision}, p50 on {target.name}); raise --budget-ms"
        )
    chosen = max(fitting, key=lambda row: row["score"])
    write_json(ctx.stage_dir("search") / "arch.json", chosen["arch"] | {"name": chosen["name"]})
    return {
        "budget_ms": budget_ms, "budget_source": budget_source, "teacher_p50_ms": teacher_p50,
        "candidates": len(rows), "fitting": len(fitting), "chosen": chosen["name"],
        "chosen_arch": chosen["arch"] | {"name": chosen["name"]}, "chosen_p50_ms": chosen["p50_ms"],
    }


def summary(metrics: dict[str, Any]) -> str:
    return (f"chose {metrics['chosen']} at {metrics['chosen_p50_ms']:.4f} ms p50 of "
            f"{metrics['candidates']} candidates; budget {metrics['budget_ms']:.4f} ms")
