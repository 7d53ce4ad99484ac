"""Turn a run into what a product team reads: report.json (an interface for other tools; keys are
stable) and report.md (the same as tables, plus the command that reproduces the run).

Every latency in report.json sits beside its source: models.<role>.latency_source, and for the
numbers derived from latencies, budget_met_source and speedup_p50_source (edgekd/latency/source.py).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from typing import Any

from edgekd.io import write_json, write_text
from edgekd.latency.source import Latency
from edgekd.measure import cpu_name
from edgekd.report.fields import (
    environment_extras,
    models_for_report,
    predicted_vs_measured,
    raw_timings,
)
from edgekd.report.html import render_html
from edgekd.report.markdown import findings, render_markdown
from edgekd.results import (
    BenchResult,
    ModelBench,
    PruneResult,
    ReportResult,
    SearchResult,
    check_budget,
)
from edgekd.run import RunContext
from edgekd.version import __version__

# The report's export section: what a team needs to deploy or trust the artifacts.
EXPORT_KEYS = ("engine_build_commands", "engine_build_script", "engines_built", "engines_not_built_reason",
               "artifact_checks")


def run(ctx: RunContext) -> ReportResult:
    report = build_report(ctx)
    write_json(ctx.run_dir / "report.json", report)
    write_text(ctx.run_dir / "report.md", render_markdown(report))
    bench: BenchResult = ctx.result("bench")
    timings = raw_timings({key: {"timings_ms": model.timings_ms} for key, model in bench.models.items()})
    write_text(ctx.run_dir / "report.html", render_html(report, timings_ms=timings, findings=findings(report)))
    return ReportResult(report_json="report.json", report_md="report.md", budget_met=report["budget_met"],
                        budget_met_source=report["budget_met_source"])


def build_report(ctx: RunContext) -> dict[str, Any]:
    search: SearchResult = ctx.result("search")
    bench: BenchResult = ctx.result("bench")
    check = check_budget(search, bench)
    data = ctx.data.summary()
    return {
        "edgekd_version": __version__,
        "target": ctx.target.name,
        "budget_ms": check.budget_ms,
        "budget_source": search.budget.origin,
        "budget_met": check.met,
        "budget_met_source": check.latency.source,
        "speedup_p50": round(bench.speedup, 3),
        "speedup_p50_source": bench.speedup_source,
        "dataset": {k: data[k] for k in ("name", "n_train", "n_val", "n_test", "input_shape", "source",
                                         "image_size_origin", "preprocessing")},
        "preprocessing_in_artifact": "recorded in the artifact metadata ('preprocessing'): the application "
                                     "normalises the inputs; the artifact takes them as described",
        "teacher_source": ctx.teacher.source,
        "teacher_val_accuracy": ctx.teacher.val_accuracy,
        "chance_accuracy": 1.0 / ctx.data.num_classes,
        "search": search_summary(search, bench),
        "export": {k: v for k, v in ctx.result("export").details.items() if k in EXPORT_KEYS},
        "models": models_for_report({key: model_entry(model) for key, model in bench.models.items()}),
        "prune": prune_section(ctx.result("prune")) if ctx.is_done("prune") else None,
        "int8_gate": bench.int8_gate,
        "stages": {name: stage_summary(ctx.result(name)) for name in ctx.state.completed if name != "report"},
        "conditions": bench.conditions,
        "environment": environment() | environment_extras(bench.conditions),
        "predicted_vs_measured": predicted_vs_measured(ctx.target.name, ctx.data.input_shape,
                                                       bench.deployed.precision),
        "command": ctx.spec.command,
        "run_dir": str(ctx.run_dir),
    }


def prune_section(prune: PruneResult) -> dict[str, Any]:
    """Which flow ran, what was pruned, and the gate's two measurements with their sources."""
    if not prune.ran:
        return {"ran": False, "reason": prune.reason}
    sides = {}
    for role, side in (("baseline", prune.baseline), ("candidate", prune.candidate)):
        if side is not None:
            sides[role] = {"name": side.name, **latency_fields("latency", side.latency), "accuracy": side.accuracy,
                           "accuracy_source": side.accuracy_source, "not_measured": side.not_measured}
    plan = {key: value for key, value in prune.plan.items() if key != "layers" or prune.method == "2:4"}
    allocation = None
    if prune.allocation:
        keep = ("baseline_ms", "final_ms", "goal_ms", "latency_source", "stop_reason", "latency_calls",
                "reached_goal", "goal_origin")
        allocation = {key: prune.allocation.get(key) for key in keep} | {"steps": len(prune.allocation["steps"])}
    return {"ran": True, "flow": prune.flow, "method": prune.method, "shipped": prune.shipped,
            "rolled_back": prune.rolled_back, "reason": prune.reason, "precision": prune.precision,
            "latency_drop": prune.latency_drop, "latency_drop_source": prune.latency_drop_source,
            "accuracy_drop_pt": prune.accuracy_drop_pt, "plan": plan, "allocation": allocation,
            "recovery": prune.recovery, **sides}


def model_entry(model: ModelBench) -> dict[str, Any]:
    entry = dataclasses.asdict(model)
    entry |= entry.pop("profile") or {}  # per_layer, load_ms, peak_memory_mb, ... (or why not measured)
    latency = entry.pop("latency")
    return entry | {"latency_ms": {"p50": latency["ms"], "p90": latency["p90_ms"], "p99": latency["p99_ms"]},
                    "latency_source": latency["source"], "latency_detail": latency["detail"]}


def latency_fields(prefix: str, latency: Latency | None) -> dict[str, Any]:
    """`<prefix>_ms` and `<prefix>_source` (None, None when there is no such latency)."""
    return {f"{prefix}_ms": latency.ms if latency else None, f"{prefix}_source": latency.source if latency else None}


def search_summary(search: SearchResult, bench: BenchResult) -> dict[str, Any]:
    """How the student was chosen: the front, the finalists measured, and every attempt (a
    student whose artifact missed the budget, then the next one tried)."""
    check = check_budget(search, bench)
    rows = [_attempt_row(a.student, a.search_latency, a.bench_latency, a.accuracy, a.budget_ms, a.budget_met)
            for a in search.attempts]
    rows.append(_attempt_row(search.chosen, search.chosen_latency, bench.deployed.latency, bench.deployed.accuracy,
                             check.budget_ms, check.met))
    return {
        "score": search.score, "latency": search.latency_mode, "trials": search.trials,
        "candidates": search.candidates, "fitting": search.fitting, "limit_ms": search.limit_ms, "study": search.study,
        "front": [{"name": p.name, "score": p.score, "latency_ms": p.latency.ms, "latency_source": p.latency.source,
                   "params": p.params} for p in search.front],
        "finalists": [{"name": f.name, "fits": f.fits, "not_measured": f.not_measured,
                       # the keys report.json had before the sources were named, kept for tools
                       "predicted_ms": None if f.estimate.measured else f.estimate.ms,
                       "latency_source": f.estimate.source,
                       **latency_fields("estimate", f.estimate), **latency_fields("measured", f.measured)}
                      for f in search.finalists],
        "chosen": search.chosen,
        "attempts": rows,
    }


def _attempt_row(student: str, search_latency: Latency, bench_latency: Latency, accuracy: float, budget_ms: float,
                 met: bool) -> dict[str, Any]:
    return {"student": student, "predicted_ms": None if search_latency.measured else search_latency.ms,
            "search_measured_ms": search_latency.ms if search_latency.measured else None,
            "search_latency_source": search_latency.source, "bench_p50_ms": bench_latency.ms,
            "bench_latency_source": bench_latency.source, "accuracy": accuracy, "budget_ms": budget_ms,
            "budget_met": met}


def stage_summary(result: Any, prefix: str = "") -> dict[str, Any]:
    """A stage's scalar fields, and those of a nested record such as the search's budget
    (histories and lists stay in the run dir); a latency as `<name>_ms` with `<name>_source` beside it."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        value, name = getattr(result, f.name), prefix + f.name
        if isinstance(value, Latency):
            out |= latency_fields(name, value)
        elif dataclasses.is_dataclass(value):
            out |= stage_summary(value, prefix=f"{name}_")
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
    return out


def environment() -> dict[str, str]:
    versions = {name: _version(name) for name in ("torch", "openvino", "nncf", "onnxruntime", "numpy",
                                                        "coremltools", "nvidia-modelopt")}
    return {"cpu": cpu_name(), "python": platform.python_version(), "platform": platform.platform(), **versions}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def summary(result: ReportResult) -> str:
    return f"wrote {result.report_json}, {result.report_md} and report.html"
