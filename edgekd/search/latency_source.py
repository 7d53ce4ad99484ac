"""Predicted latency for the search: the target's latency table (edgekd/latency), completed for
this search space when blocks are missing, and calibrated on the target's measured records.

The table is per (target, precision, input shape) and lives under benchmarks/<target>/ (or
$EDGEKD_BENCHMARKS_DIR), so it is measured once and reused by every later search; a search only
times the blocks its space adds.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekd.latency.lut import LatencyTable, build_lut, table_path
from edgekd.latency.predictor import LatencyPredictor
from edgekd.latency.source import EXTRAPOLATED, TABLE, Latency
from edgekd.models.blocks import block_key
from edgekd.run import RunContext
from edgekd.search.space import space_block_specs

log = logging.getLogger(__name__)


class SearchLatency:
    """predict(record) -> Latency from the table ("predicted (table)"), or "extrapolated" when
    some of its blocks were not in the table."""

    def __init__(self, predictor: LatencyPredictor):
        self.predictor = predictor

    def predict(self, record: dict[str, Any]) -> Latency:
        ms = self.predictor.predict_ms(record)
        missing = self.predictor.last_missing
        if missing:
            return Latency(ms, EXTRAPOLATED, detail=f"{len(missing)} block(s) not in the latency table")
        return Latency(ms, TABLE)


def has_table(ctx: RunContext) -> bool:
    return table_path(ctx.target.name, ctx.target.precision, tuple(ctx.data.input_shape)).is_file()


def predictor_for_search(ctx: RunContext, derived: list[dict[str, Any]] = (), *, complete: bool = True) -> SearchLatency:
    """The target's predictor; with `complete`, the space's blocks missing from the table are
    timed first (else they are extrapolated, and labelled so)."""
    target, data, settings = ctx.target, ctx.data, ctx.recipe.search
    shape = tuple(data.input_shape)
    specs = space_block_specs(settings, shape[0], data.num_classes, shape[1:], target.channel_multiple, derived)
    path = table_path(target.name, target.precision, shape)
    known = set(LatencyTable.load(path).blocks) if path.is_file() else set()
    missing = [spec for spec in specs if block_key(spec) not in known]
    if missing and not complete:
        log.info("search: %d of the space's %d blocks are not in the latency table %s; their latency is "
                 "extrapolated (labelled so); `edgekd lut --target %s` times them", len(missing), len(specs), path,
                 target.name)
    elif missing:
        log.info("search: %d of the space's %d blocks are not in the latency table %s yet; timing them on %s "
                 "(once: later searches reuse the table; `edgekd lut` builds it ahead)", len(missing), len(specs),
                 path, target.name)
        # All of the space's specs, not only the missing ones: build_lut skips blocks the table
        # has, and when it must start the table over (another runtime version, threads) it then
        # rebuilds it whole rather than leave it partial.
        build_lut(target, specs, target.precision, input_shape=shape, warmup=settings.warmup,
                  runs=settings.runs, threads=ctx.recipe.bench.threads)
    predictor = LatencyPredictor.load(target.name, shape, target.precision, data.num_classes)
    return SearchLatency(predictor)
