"""Pick the student for this teacher and this device.

1. The budget: --budget-ms, else the teacher's measured latency / search.default_speedup.
2. An Optuna NSGA-II study over the space (edgekd/search/space.py) with two objectives: a score
   computed without training (search.score: DisWOT teacher/student similarity by default) and
   the latency on the target, predicted from the target's latency table (`edgekd lut`) or
   measured (search.latency). The study is SQLite in the run dir unless --storage says otherwise.
3. The Pareto front of candidates within budget x margin, best score first. Finalists are then
   exported and measured on the device in that order; the first whose measured latency fits is
   chosen. The rest of the front stays in front.json: when the shipped artifact still misses the
   budget, `compress` re-selects from it (edgekd/pipeline.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

import torch

from edgekd.backends import get_backend
from edgekd.config import SearchConfig
from edgekd.errors import UserError
from edgekd.io import write_json
from edgekd.latency.lut import quiet_exports
from edgekd.latency.predicted import predicted_latency
from edgekd.models import arch_name, count_macs, count_params
from edgekd.models.student import (
    example_input,
    is_derived,
    reinitialise_,
    student_from_record,
)
from edgekd.quantizers import get_quantizer
from edgekd.remote import benchmark_on_target
from edgekd.run import RunContext
from edgekd.search import engine
from edgekd.search.engine import Evaluation
from edgekd.search.latency_source import has_table
from edgekd.search.space import check_space, suggest_record
from edgekd.target import baseline_precision, why_not_measurable

log = logging.getLogger(__name__)

LATENCY_SOURCES = ("auto", "predicted", "measured")
# With no --budget-ms and no student at teacher / default_speedup: choose among students at most
# this factor slower than the fastest one.
RELAXED_BAND = 1.1


def check_search_methods(settings: SearchConfig) -> None:
    """Fail before any work on an unknown score or latency source."""
    from edgekd.search.proxies import PROXIES

    if settings.score not in PROXIES:
        raise UserError(f"search.score {settings.score!r} is unknown; known: {', '.join(PROXIES)}")
    if settings.latency not in LATENCY_SOURCES:
        raise UserError(f"search.latency {settings.latency!r} is unknown; known: {', '.join(LATENCY_SOURCES)}")
    if settings.trials < 1 or settings.finalists < 1 or settings.max_attempts < 1:
        raise UserError("search.trials, search.finalists and search.max_attempts must be >= 1")


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
    with quiet_exports():  # a search times dozens of candidates; their export lines would bury the rest
        if ctx.target.backend == "tensorrt":
            # The ONNX (Q/DQ for INT8) is what is timed: TensorRT builds its engine where it runs,
            # here or on the device behind the runner (tensorrt.benchmark of an ONNX).
            path = path.with_suffix(".trt.onnx")
            if precision == "int8":
                quantizer.export_onnx(model, example, path)
            else:
                backend.export_onnx(model, example, path, metadata={"purpose": "latency probe"}, precision=precision)
        else:
            backend.export(model, example, path, metadata={"purpose": "latency probe"})
    settings = ctx.recipe.search
    stats = benchmark_on_target(ctx.target, path, backend, settings.warmup, settings.runs, ctx.recipe.bench.threads)
    return stats.p50_ms


def target_latency(ctx: RunContext, model: torch.nn.Module, precision: str, name: str) -> tuple[float, str]:
    """(p50 ms, source): measured on the target when edgekd can run it, else predicted from the
    device's published peaks (edgekd/target.py), with a label that says so."""
    if why_not_measurable(ctx.target) is None:
        return measure_latency_ms(ctx, model, precision, name), "measured"
    predicted = predicted_latency(ctx.target, model, tuple(ctx.data.input_shape), precision)
    return predicted.ms, predicted.label


def budget(ctx: RunContext) -> tuple[float, str, float]:
    """(budget_ms, where it came from, teacher p50 ms at the precision it would ship in)."""
    precision = baseline_precision(ctx.target)
    teacher_p50, source = target_latency(ctx, ctx.teacher.model, precision, "teacher")
    if ctx.spec.budget_ms is not None:
        return ctx.spec.budget_ms, "--budget-ms", teacher_p50
    speedup = ctx.recipe.search.default_speedup
    seen = "" if source == "measured" else f" {source}"
    return teacher_p50 / speedup, f"teacher {precision} p50 {teacher_p50:.4f} ms{seen} / {speedup:g}", teacher_p50


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


class Evaluator:
    """Score and latency of one record: what each trial calls."""

    def __init__(self, ctx: RunContext, derived: list[dict[str, Any]]):
        from edgekd.search.proxies import ProxyScorer

        self.ctx = ctx
        settings = ctx.recipe.search
        data = ctx.data
        x, y = data.train.x[: settings.proxy_batch], data.train.y[: settings.proxy_batch]
        self.scorer = ProxyScorer(settings.score, ctx.teacher.model, x, y)
        self.predictor = None
        self.told_unplanned = False
        self.unmeasurable = why_not_measurable(ctx.target)
        if self.unmeasurable is not None and not has_table(ctx):
            log.info("search: %s cannot be measured here (%s); every candidate's latency is predicted from the "
                     "device's published peaks and labelled so", ctx.target.name, self.unmeasurable)
        elif settings.latency in ("auto", "predicted"):
            from edgekd.search.latency_source import predictor_for_search

            if settings.latency == "predicted" or has_table(ctx):
                self.predictor = predictor_for_search(
                    ctx, derived, complete=settings.latency == "predicted" and self.unmeasurable is None)
            else:
                log.info("search: no latency table for %s at this input size yet, so every candidate is measured "
                         "(`edgekd lut --target %s` builds one; later searches then predict)", ctx.target.name,
                         ctx.target.name)

    def __call__(self, record: dict[str, Any]) -> Evaluation:
        data, target = self.ctx.data, self.ctx.target
        torch.manual_seed(self.ctx.spec.seed)  # the proxies score a random initialisation
        model = student_from_record(self.ctx, record).eval()
        if is_derived(record):
            reinitialise_(model)  # cut with the teacher's weights; scored like every other candidate
        name = arch_name(record)
        if self.predictor is not None and not is_derived(record):
            latency, source = self.predictor.predict_with_source(record)
        else:
            if self.predictor is not None and not self.told_unplanned:
                # The table sums blocks of the built-in families; a module cut from the teacher has
                # no block plan, so it gets the latency the search would use without a table.
                log.info("search: the latency table cannot plan students cut from the teacher module; "
                         "their latency is %s instead", "measured" if self.unmeasurable is None else
                         "predicted from the device's published peaks")
                self.told_unplanned = True
            latency, source = target_latency(self.ctx, model, target.precision, name)
        with _torch_threads(1 if small_input(data.input_shape) else None):
            score = self.scorer.score(model)
            macs = count_macs(model, data.input_shape)
        return Evaluation(
            record=record, name=name, score=score, latency_ms=latency,
            latency_source=source, params=count_params(model), macs=macs,
        )


def small_input(shape) -> bool:
    # On small images a forward pass is a few microseconds of work per layer, and handing it to a
    # second thread costs more than it saves (8x faster single-threaded on a busy 2-core machine).
    return shape[1] * shape[2] <= 64 * 64


@contextlib.contextmanager
def _torch_threads(count: int | None):
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def pick_finalist(ctx: RunContext, front: list[Evaluation], limit_ms: float) -> tuple[int, list[dict[str, Any]]]:
    """Measure the front's best-scoring candidates on the device, in order, until one fits.
    Returns the chosen index in `front` and what was measured."""
    precision = ctx.target.precision
    reason = why_not_measurable(ctx.target)
    if reason is not None:
        # Nothing can be measured: the best-scoring candidate predicted to fit is the choice.
        best = front[0]
        log.info("search: finalist %s not measured (%s); %s %.4f ms", best.name, reason, best.latency_source,
                 best.latency_ms)
        return 0, [{"name": best.name, "predicted_ms": best.latency_ms, "latency_source": best.latency_source,
                    "measured_ms": None, "fits": True, "not_measured": reason}]
    measured = []
    for index, candidate in enumerate(front[: ctx.recipe.search.finalists]):
        if candidate.latency_source == "measured":
            p50 = candidate.latency_ms
        else:
            model = student_from_record(ctx, candidate.record).eval()
            p50 = measure_latency_ms(ctx, model, precision, candidate.name)
        fits = p50 <= limit_ms
        measured.append({"name": candidate.name, "predicted_ms": candidate.latency_ms,
                         "latency_source": candidate.latency_source, "measured_ms": p50, "fits": fits})
        seen = "" if candidate.latency_source == "measured" else f"{candidate.latency_source} {candidate.latency_ms:.4f} ms, "
        log.info("search: finalist %-36s %smeasured %.4f ms: %s", candidate.name, seen, p50,
                 "fits" if fits else "too slow")
        if fits:
            return index, measured
    slowest = ", ".join(f"{m['name']} {m['measured_ms']:.4f} ms" for m in measured)
    raise UserError(
        f"none of the {len(measured)} best candidates measured within {limit_ms:.4f} ms on {ctx.target.name} "
        f"({slowest}); the latency table may be stale (rebuild it with `edgekd lut --target {ctx.target.name} --force`) "
        "or the budget too tight: raise --budget-ms or search.finalists"
    )


def run(ctx: RunContext) -> dict[str, Any]:
    settings, target = ctx.recipe.search, ctx.target
    check_space(settings)
    check_search_methods(settings)
    torch.manual_seed(ctx.spec.seed)
    budget_ms, budget_source, teacher_p50 = budget(ctx)
    limit_ms = budget_ms * settings.latency_margin
    log.info("search: budget %.4f ms (%s); candidates must be <= %.4f ms", budget_ms, budget_source, limit_ms)

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
        unreachable_ms, budget_ms = budget_ms, limit_ms / settings.latency_margin
        budget_source += (f"; unreachable on {target.name} (fastest student {quickest.name} {quickest.latency_ms:.4f} ms "
                          f"{quickest.latency_source} vs {unreachable_ms:.4f} ms), relaxed to the fastest students")
        log.warning("search: no student reaches the default budget of %.4f ms on %s; the fastest is %s at %.4f ms (%s): "
                    "choosing among students within %.4f ms instead (give --budget-ms to require a budget)",
                    unreachable_ms, target.name, quickest.name, quickest.latency_ms, quickest.latency_source, limit_ms)
        front = engine.pareto_front(evaluations, limit_ms)
    if not front:
        quickest = engine.fastest(distinct)
        raise UserError(
            f"no candidate meets the budget of {budget_ms:.4f} ms (with margin {settings.latency_margin:g}: "
            f"{limit_ms:.4f} ms); the fastest was {quickest.name} at {quickest.latency_ms:.4f} ms "
            f"({quickest.latency_source}, {target.precision} p50 on {target.name}); raise --budget-ms"
        )
    chosen_index, finalists = pick_finalist(ctx, front, limit_ms)
    chosen = front[chosen_index]
    write_json(ctx.stage_dir("search") / "front.json", [e.to_dict() for e in front])
    write_json(ctx.stage_dir("search") / "arch.json", chosen.record | {"name": chosen.name})
    log.info("search: %d trials, %d distinct architectures, front of %d; study %s", len(evaluations),
             len(distinct), len(front), url)
    return {
        "budget_ms": budget_ms, "budget_source": budget_source, "teacher_p50_ms": teacher_p50,
        # the source actually used ("auto" resolves to one of them), and what was asked
        "limit_ms": limit_ms, "score": settings.score, "study": url, "latency_setting": settings.latency,
        "latency": "measured" if evaluator.predictor is None and evaluator.unmeasurable is None else "predicted",
        "trials": len(evaluations), "candidates": len(distinct), "fitting": sum(e.latency_ms <= limit_ms for e in distinct),
        "front": [{"name": e.name, "score": e.score, "latency_ms": e.latency_ms, "latency_source": e.latency_source,
                   "params": e.params} for e in front],
        "front_index": chosen_index, "finalists": finalists, "chosen": chosen.name,
        "chosen_arch": chosen.record | {"name": chosen.name}, "chosen_p50_ms": finalists[-1]["measured_ms"],
        "chosen_predicted_ms": chosen.latency_ms, "chosen_latency_source": chosen.latency_source,
        "chosen_score": chosen.score,
    }


def summary(metrics: dict[str, Any]) -> str:
    if metrics["chosen_p50_ms"] is None:
        seen = f"{metrics['chosen_latency_source']} {metrics['chosen_predicted_ms']:.4f} ms p50"
    else:
        seen = f"measured {metrics['chosen_p50_ms']:.4f} ms p50"
    return (f"chose {metrics['chosen']} ({seen}) from a front of "
            f"{len(metrics['front'])} among {metrics['candidates']} candidates; budget {metrics['budget_ms']:.4f} ms")


def predicted_ms(metrics: dict[str, Any]) -> float | None:
    """The chosen student's predicted latency, or None when the search measured it instead."""
    if str(metrics.get("chosen_latency_source", "")).startswith("predicted"):
        return metrics["chosen_predicted_ms"]
    return None


def reselect(ctx: RunContext, bench: dict[str, Any]) -> bool:
    """After a budget miss in bench: record the attempt, and choose the next student on the front
    that should fit, in memory (the caller saves the state together with forgetting the later
    stages, so a kill cannot leave half of it). False when no attempt is left."""
    metrics = ctx.result("search")
    deployed = bench["models"].get("student_int8", bench["models"]["student_fp32"])
    measured_ms = deployed["latency_ms"]["p50"]
    attempts = metrics.setdefault("attempts", [])
    attempts.append({
        "student": metrics["chosen"], "predicted_ms": predicted_ms(metrics),
        "search_measured_ms": metrics["chosen_p50_ms"], "bench_p50_ms": measured_ms,
        "accuracy": deployed["accuracy"], "budget_ms": bench["budget_ms"], "budget_met": False,
    })
    if len(attempts) >= ctx.recipe.search.max_attempts:
        return False
    front = [Evaluation(**row) for row in json.loads((ctx.stage_dir("search") / "front.json").read_text())]
    current = front[metrics["front_index"]]
    # Scale the target by how far the artifact missed: a student must be that much faster on the
    # same scale the front was ranked on (the table's prediction, or the search's measurement).
    needed_ms = current.latency_ms * bench["budget_ms"] / measured_ms
    for index in range(metrics["front_index"] + 1, len(front)):
        if front[index].latency_ms <= needed_ms:
            break
    else:
        log.warning("search: no student on the front is predicted under %.4f ms (the miss scaled onto %s latency)",
                    needed_ms, current.latency_source)
        return False
    chosen = front[index]
    p50, source = target_latency(ctx, student_from_record(ctx, chosen.record).eval(), ctx.target.precision,
                                 chosen.name)
    log.warning("budget missed by %s (%.4f ms > %.4f ms): trying the next student on the front, %s "
                "(%s %.4f ms, now %s %.4f ms); attempt %d of %d", metrics["chosen"], measured_ms, bench["budget_ms"],
                chosen.name, chosen.latency_source, chosen.latency_ms, source, p50, len(attempts) + 1,
                ctx.recipe.search.max_attempts)
    p50 = p50 if source == "measured" else None
    metrics.update({
        "front_index": index, "chosen": chosen.name, "chosen_arch": chosen.record | {"name": chosen.name},
        "chosen_p50_ms": p50, "chosen_predicted_ms": chosen.latency_ms, "chosen_score": chosen.score,
        "chosen_latency_source": chosen.latency_source,
    })
    write_json(ctx.stage_dir("search") / "arch.json", chosen.record | {"name": chosen.name})
    return True
