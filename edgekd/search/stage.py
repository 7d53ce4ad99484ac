"""Pick the student for this teacher and this device.

1. The budget: --budget-ms, else the teacher's latency on the target / search.default_speedup.
2. An Optuna NSGA-II study over the space (edgekd/search/space.py) with two objectives: a score
   computed without training (search.score: the parameter count by default) and the latency on
   the target, predicted from the target's latency table (`edgekd lut`) or measured
   (search.latency). The study is SQLite in the run dir unless --storage says otherwise.
3. The Pareto front of candidates within budget x margin, best score first. Finalists are then
   exported and measured on the device in that order; the first whose measured latency fits is
   chosen. The rest of the front stays in front.json: when the shipped artifact still misses the
   budget, `compress` re-selects from it (edgekd/search/reselect.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import torch

from edgekd.errors import UserError
from edgekd.io import write_json
from edgekd.latency.source import format_ms
from edgekd.models.student import example_input, student_from_record
from edgekd.results import Budget, Finalist, FrontPoint, SearchResult
from edgekd.run import RunContext
from edgekd.search import engine
from edgekd.search.engine import Evaluation
from edgekd.search.evaluate import Evaluator
from edgekd.search.space import check_space, for_input, suggest_record
from edgekd.search.storage import masked
from edgekd.search.timing import measure_latency, target_latency
from edgekd.target import baseline_precision, why_not_measurable

log = logging.getLogger(__name__)

# With no --budget-ms and no student at teacher / default_speedup: choose among students at most
# this factor slower than the fastest one.
RELAXED_BAND = 1.1


def decide_budget(ctx: RunContext) -> Budget:
    """--budget-ms, else the teacher's latency at the precision it would ship in / default_speedup."""
    precision = baseline_precision(ctx.target)
    teacher = target_latency(ctx, ctx.teacher.model, precision, "teacher")
    if ctx.spec.budget_ms is not None:
        return Budget(ctx.spec.budget_ms, "--budget-ms", teacher)
    speedup = ctx.recipe.search.default_speedup
    return Budget(teacher.ms / speedup, f"teacher {precision} p50 {teacher} / {speedup:g}", teacher)


def teacher_derived_records(ctx: RunContext) -> list[dict[str, Any]]:
    """N2N candidates: ordinary records from a built-in teacher's record; from any other teacher
    module (a pickled user model), "derived" records cut from the module itself, which later stages
    rebuild from the same teacher (edgekd/models/student.py). A teacher that cannot be traced or
    pruned (TorchScript, several outputs, layers that run only for some inputs) gives none, with a
    warning from edgekd/models/derived.py; the other families are searched as usual."""
    if "teacher-derived" not in ctx.recipe.search.families:
        return []
    from edgekd.models.derived import derive_from_module, derive_from_record

    if ctx.teacher.arch is not None:
        return derive_from_record(ctx.teacher.arch, ctx.target.channel_multiple)
    candidates = derive_from_module(ctx.teacher.model, example_input(ctx), ctx.target.channel_multiple)
    return [candidate.record for candidate in candidates]


def study_url(ctx: RunContext) -> str:
    """--storage (a journal file or a database that several workers share), else SQLite in the run dir."""
    if ctx.spec.storage:
        return ctx.spec.storage
    return f"sqlite:///{(ctx.stage_dir('search') / 'study.db').resolve()}"


def study_name(ctx: RunContext) -> str:
    """Workers that search the same space for the same target and data share a study name, so
    one --storage URL holds their common study. How a worker runs (heartbeat, wait) is left out:
    it does not change what the study computes."""
    search = {k: v for k, v in ctx.recipe.search.__dict__.items() if k not in engine.WORKER_SETTINGS}
    key = json.dumps([ctx.target.name, ctx.spec.data, ctx.spec.teacher, ctx.spec.seed,
                      search], sort_keys=True, default=str)
    return "edgekd-search-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def pick_finalist(ctx: RunContext, front: list[Evaluation], limit_ms: float) -> tuple[int, list[Finalist]]:
    """Measure the front's best-scoring candidates on the device, in order, until one fits.
    Returns the chosen index in `front` and what was measured."""
    reason = why_not_measurable(ctx.target)
    if reason is not None:
        # Nothing can be measured: the best-scoring candidate predicted to fit is the choice.
        best = front[0]
        log.info("search: finalist %s not measured (%s); %s", best.name, reason, best.latency)
        return 0, [Finalist(best.name, estimate=best.latency, measured=None, fits=True, not_measured=reason)]
    finalists = []
    for index, candidate in enumerate(front[: ctx.recipe.search.finalists]):
        if candidate.latency.measured:
            measured = candidate.latency
        else:
            model = student_from_record(ctx, candidate.record).eval()
            measured = measure_latency(ctx, model, ctx.target.precision, candidate.name)
        fits = measured.ms <= limit_ms
        finalists.append(Finalist(candidate.name, estimate=candidate.latency, measured=measured, fits=fits))
        seen = "" if candidate.latency.measured else f"front {candidate.latency}, "
        log.info("search: finalist %-36s %s%s: %s", candidate.name, seen, measured, "fits" if fits else "too slow")
        if fits:
            return index, finalists
    slowest = ", ".join(f"{f.name} {f.measured}" for f in finalists)
    raise UserError(
        f"none of the {len(finalists)} best candidates measured within {format_ms(limit_ms)} ms on {ctx.target.name} "
        f"({slowest}); the latency table may be stale (rebuild it with `edgekd lut --target {ctx.target.name} --force`) "
        "or the budget too tight: raise --budget-ms or search.finalists"
    )


def run(ctx: RunContext) -> SearchResult:
    ctx.recipe.search = for_input(ctx.recipe.search, ctx.data.input_shape)  # "auto" bases (a no-op once resolved)
    settings, target = ctx.recipe.search, ctx.target
    check_space(settings)
    torch.manual_seed(ctx.spec.seed)
    budget = decide_budget(ctx)
    limit_ms = budget.ms * settings.latency_margin
    log.info("search: budget %s ms (%s); candidates must be <= %s ms", format_ms(budget.ms), budget.origin,
             format_ms(limit_ms))

    derived = teacher_derived_records(ctx)
    if not derived and set(settings.families) == {"teacher-derived"}:
        raise UserError("search.families is only teacher-derived, but this teacher gives no derived students "
                        "(it is neither a built-in architecture (--teacher-arch) nor a module that can be traced "
                        "and pruned; the warning above says why); add 'resnet' or 'mobilenet' to search.families")
    url = study_url(ctx)
    study = engine.open_study(url, study_name(ctx), seed=ctx.spec.seed, population=settings.population,
                              shared=bool(ctx.spec.storage), worker=ctx.run_dir.name,
                              heartbeat_s=settings.heartbeat_s, wait_s=settings.wait_s)
    stale = engine.fail_stale_trials(study)
    if stale:
        log.info("search: %d trial(s) interrupted by a kill were marked failed", stale)
    evaluator = Evaluator(ctx, derived)
    evaluations = engine.run_trials(
        study, trials=settings.trials, evaluate=evaluator, limit_ms=limit_ms,
        suggest=lambda trial: suggest_record(trial, settings, target.channel_multiple, derived),
    )
    distinct = engine.distinct(evaluations)
    write_json(ctx.stage_dir("search") / "candidates.json", [e.to_dict() for e in distinct])
    front = engine.pareto_front(evaluations, limit_ms)
    if not front and ctx.spec.budget_ms is None:
        # The default budget (a speed-up over the teacher) is a wish, not the user's requirement:
        # where no student reaches it (e.g. a GPU at tiny inputs, where per-layer launch cost
        # dominates), take the fastest students instead, and say so in the log and the report.
        quickest = engine.fastest(distinct)
        limit_ms = quickest.latency_ms * RELAXED_BAND
        unreachable_ms = budget.ms
        budget.ms = limit_ms / settings.latency_margin
        budget.origin += (f"; unreachable on {target.name} (fastest student {quickest.name} {quickest.latency} vs "
                          f"{format_ms(unreachable_ms)} ms), relaxed to the fastest students")
        log.warning("search: no student reaches the default budget of %s ms on %s; the fastest is %s at %s: "
                    "choosing among students within %s ms instead (give --budget-ms to require a budget)",
                    format_ms(unreachable_ms), target.name, quickest.name, quickest.latency, format_ms(limit_ms))
        front = engine.pareto_front(evaluations, limit_ms)
    if not front:
        quickest = engine.fastest(distinct)
        raise UserError(
            f"no candidate meets the budget of {format_ms(budget.ms)} ms (with margin {settings.latency_margin:g}: "
            f"{format_ms(limit_ms)} ms); the fastest was {quickest.name} at {quickest.latency} "
            f"({target.precision} p50 on {target.name}); raise --budget-ms"
        )
    chosen_index, finalists = pick_finalist(ctx, front, limit_ms)
    chosen = front[chosen_index]
    write_json(ctx.stage_dir("search") / "front.json", [e.to_dict() for e in front])
    write_json(ctx.stage_dir("search") / "arch.json", chosen.record | {"name": chosen.name})
    log.info("search: %d trials, %d distinct architectures, front of %d; study %s", len(evaluations),
             len(distinct), len(front), masked(url))
    return SearchResult(
        budget=budget, limit_ms=limit_ms, score=settings.score, study=masked(url), latency_setting=settings.latency,
        latency_mode=evaluator.mode, trials=len(evaluations), candidates=len(distinct),
        fitting=sum(e.latency_ms <= limit_ms for e in distinct),
        front=[FrontPoint(e.name, e.score, e.latency, e.params) for e in front], front_index=chosen_index,
        finalists=finalists, chosen=chosen.name, chosen_arch=chosen.record | {"name": chosen.name},
        chosen_score=chosen.score, chosen_estimate=chosen.latency, chosen_measured=finalists[-1].measured,
    )


def summary(result: SearchResult) -> str:
    return (f"chose {result.chosen} ({result.chosen_latency} p50) from a front of {len(result.front)} among "
            f"{result.candidates} candidates; budget {format_ms(result.budget.ms)} ms")
