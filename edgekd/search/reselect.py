"""The feedback loop's search side: after bench measured the shipped artifact over the budget,
record the attempt and choose the next student on the front that should fit."""

from __future__ import annotations

import json
import logging

from edgekd.io import write_json
from edgekd.models.student import student_from_record
from edgekd.results import Attempt, BenchResult, SearchResult
from edgekd.run import RunContext
from edgekd.search.engine import Evaluation
from edgekd.search.timing import target_latency

log = logging.getLogger(__name__)


def reselect(ctx: RunContext, bench: BenchResult) -> bool:
    """Record the missed attempt and choose the next student, in memory (the caller saves the state
    together with forgetting the later stages, so a kill cannot leave half of it). False when no
    attempt is left or no student on the front should fit."""
    search: SearchResult = ctx.result("search")
    shipped = bench.deployed
    search.attempts.append(Attempt(student=search.chosen, search_latency=search.chosen_latency,
                                   bench_latency=shipped.latency, accuracy=shipped.accuracy,
                                   budget_ms=search.budget.ms, budget_met=False))
    if len(search.attempts) >= ctx.recipe.search.max_attempts:
        return False
    front = [Evaluation(**row) for row in json.loads((ctx.stage_dir("search") / "front.json").read_text())]
    current = front[search.front_index]
    # Scale the target by how far the artifact missed: a student must be that much faster on the
    # same scale the front was ranked on (the table's prediction, or the search's measurement).
    needed_ms = current.latency_ms * search.budget.ms / shipped.latency.ms
    for index in range(search.front_index + 1, len(front)):
        if front[index].latency_ms <= needed_ms:
            break
    else:
        log.warning("search: no student on the front is under %.4f ms (the miss scaled onto the front's %s latency)",
                    needed_ms, current.latency_source)
        return False
    chosen = front[index]
    latency = target_latency(ctx, student_from_record(ctx, chosen.record).eval(), ctx.target.precision, chosen.name)
    log.warning("budget missed by %s (%s > %.4f ms budget): trying the next student on the front, %s (front %s, "
                "now %s); attempt %d of %d", search.chosen, shipped.latency, search.budget.ms, chosen.name,
                chosen.latency, latency, len(search.attempts) + 1, ctx.recipe.search.max_attempts)
    search.front_index = index
    search.chosen, search.chosen_arch = chosen.name, chosen.record | {"name": chosen.name}
    search.chosen_score, search.chosen_estimate = chosen.score, chosen.latency
    search.chosen_measured = latency if latency.measured else None
    write_json(ctx.stage_dir("search") / "arch.json", search.chosen_arch)
    return True
