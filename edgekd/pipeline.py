"""The stage order, and running stages with their state saved after each one (so a killed run
resumes from the last finished stage).

Under torchrun (ctx.world) every rank walks the same stages: distill runs on all of them (DDP);
every other stage, and the feedback loop's choice of another student, runs on rank 0 alone while
the others wait, then read the state it wrote (edgekd/training/distributed.py `on_main`)."""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from edgekd import interrupt
from edgekd.errors import UserError
from edgekd.results import check_budget
from edgekd.run import RunContext

log = logging.getLogger(__name__)

# The one place that says which stages exist and in what order. Each is edgekd/<name>/stage.py
# with `run(ctx) -> its typed result` (edgekd/results.py) and `summary(result) -> str` for its end line.
STAGES = ("search", "distill", "prune", "export", "bench", "report")
# The stages every torchrun rank runs together; rank 0 runs the others alone.
SHARED_STAGES = ("distill",)


def run_pipeline(ctx: RunContext, *, until: str | None = None, redo: str | None = None) -> None:
    """Run every stage up to `until` (all by default) that has not completed yet; `redo` names a
    stage to run again even if it completed (the stage subcommands use it)."""
    if until is not None and until not in STAGES:
        raise UserError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    last = STAGES.index(until) if until else len(STAGES) - 1
    while True:
        for name in STAGES[: last + 1]:
            if ctx.is_done(name) and name != redo:
                log.info("stage %s: already done, skipping (resumed run)", name)
                continue
            interrupt.check()  # a Ctrl-C swallowed inside the last stage stops the run here
            run_stage(ctx, name)
            if name == redo:
                redo = None  # once: a re-selection loop must not rerun it again
        # The feedback loop: a shipped artifact that misses the budget sends the run back to the
        # next student on the search's front, a bounded number of times (each attempt is reported).
        if last < STAGES.index("report"):
            return
        again = ctx.world.on_main(lambda: _reselect_after_miss(ctx), share=True)
        if not ctx.world.is_main:
            ctx.reload_state()
        if not again:
            return


def _reselect_after_miss(ctx: RunContext) -> bool:
    """True when bench missed the budget and search chose another student (later stages are
    then forgotten, so the loop runs them again)."""
    from edgekd.search.reselect import reselect

    search, bench = ctx.result("search"), ctx.result("bench")
    if check_budget(search, bench).met:
        return False
    if not reselect(ctx, bench):
        log.warning("budget missed and no student left to try (%d attempt(s), search.max_attempts %d)",
                    len(search.attempts), ctx.recipe.search.max_attempts)
        return False
    for later in STAGES[STAGES.index("distill") :]:
        ctx.forget(later)
    ctx.save_state()
    return True


def run_stage(ctx: RunContext, name: str) -> Any:
    """Run one stage; under torchrun, on every rank (SHARED_STAGES) or on rank 0 alone, with all
    the cores, while the others wait (they return None and read its result from state.json)."""
    world = ctx.world
    if not world.active or name in SHARED_STAGES:
        return _run_here(ctx, name)

    def alone() -> Any:
        with world.all_cores():
            return _run_here(ctx, name)

    result = world.on_main(alone)
    if not world.is_main:
        ctx.reload_state()
    return result


def _run_here(ctx: RunContext, name: str) -> Any:
    module = importlib.import_module(f"edgekd.{name}.stage")
    # A stage that runs again invalidates what later stages built from its output.
    for later in STAGES[STAGES.index(name) :]:
        ctx.forget(later)
    log.info("stage %s: start", name)
    started = time.perf_counter()
    result = module.run(ctx)
    result.seconds = round(time.perf_counter() - started, 2)
    ctx.mark_done(name, result)
    log.info("stage %s: done in %.1f s (%s)", name, result.seconds, module.summary(result))
    return result
