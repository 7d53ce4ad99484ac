"""Score and latency of one architecture record: what each search trial calls."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from edgekd.models import arch_name, count_macs, count_params
from edgekd.models.student import is_derived, reinitialise_, student_from_record
from edgekd.run import RunContext
from edgekd.search.engine import Evaluation
from edgekd.search.latency_source import has_table, predictor_for_search
from edgekd.search.proxies import ProxyScorer
from edgekd.search.timing import target_latency
from edgekd.target import why_not_measurable

log = logging.getLogger(__name__)


class Evaluator:
    """Scores a record with the recipe's proxy (no training) and takes its latency from the
    target's latency table (predicted) when the search uses one, else from the target itself."""

    def __init__(self, ctx: RunContext, derived: list[dict[str, Any]]):
        self.ctx = ctx
        settings = ctx.recipe.search
        data = ctx.data
        x, y = data.train.head(settings.proxy_batch), data.train.y[: settings.proxy_batch]
        self.scorer = ProxyScorer(settings.score, ctx.teacher.model, x, y)
        self.predictor = None
        self.told_unplanned = False
        self.unmeasurable = why_not_measurable(ctx.target)
        if self.unmeasurable is not None and not has_table(ctx):
            log.info("search: %s cannot be measured here (%s); every candidate's latency is predicted from the "
                     "device's published peaks and labelled so", ctx.target.name, self.unmeasurable)
        elif settings.latency in ("auto", "predicted"):
            if settings.latency == "predicted" or has_table(ctx):
                self.predictor = predictor_for_search(
                    ctx, derived, complete=settings.latency == "predicted" and self.unmeasurable is None)
            else:
                log.info("search: no latency table for %s at this input size yet, so every candidate is measured "
                         "(`edgekd lut --target %s` builds one; later searches then predict)", ctx.target.name,
                         ctx.target.name)

    @property
    def mode(self) -> str:
        """What the search's latencies are: "measured", or "predicted" (a table or the peaks)."""
        return "measured" if self.predictor is None and self.unmeasurable is None else "predicted"

    def __call__(self, record: dict[str, Any]) -> Evaluation:
        data, target = self.ctx.data, self.ctx.target
        torch.manual_seed(self.ctx.spec.seed)  # the proxies score a random initialisation
        model = student_from_record(self.ctx, record).eval()
        if is_derived(record):
            reinitialise_(model)  # cut with the teacher's weights; scored like every other candidate
        name = arch_name(record)
        if self.predictor is not None and not is_derived(record):
            latency = self.predictor.predict(record)
        else:
            if self.predictor is not None and not self.told_unplanned:
                # The table sums blocks of the built-in families; a module cut from the teacher has
                # no block plan, so it gets the latency the search would use without a table.
                log.info("search: the latency table cannot plan students cut from the teacher module; "
                         "their latency is %s instead", "measured" if self.unmeasurable is None else
                         "predicted from the device's published peaks")
                self.told_unplanned = True
            latency = target_latency(self.ctx, model, target.precision, name)
        with torch_threads(1 if small_input(data.input_shape) else None):
            score = self.scorer.score(model)
            macs = count_macs(model, data.input_shape)
        return Evaluation(record=record, name=name, score=score, latency_ms=latency.ms,
                          latency_source=latency.source, params=count_params(model), macs=macs)


def small_input(shape) -> bool:
    # On small images a forward pass is a few microseconds of work per layer, and handing it to a
    # second thread costs more than it saves (8x faster single-threaded on a busy 2-core machine).
    return shape[1] * shape[2] <= 64 * 64


@contextlib.contextmanager
def torch_threads(count: int | None):
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
