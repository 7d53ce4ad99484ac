"""Turn a run into what a product team reads: report.json (an interface for other tools; keys are
stable) and report.md (the same as tables, plus the command that reproduces the run)."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from edgekd.io import write_json, write_text
from edgekd.measure import cpu_name
from edgekd.report.fields import environment_extras, models_for_report, predicted_vs_measured, raw_timings
from edgekd.report.html import deployed_key, render_html
from edgekd.run import RunContext
from edgekd.search.stage import predicted_ms
from edgekd.version import __version__

MODEL_LABELS = {"teacher": "teacher", "student_fp32": "student fp32", "student_int8": "student INT8"}


def run(ctx: RunContext) -> dict[str, Any]:
    report = build_report(ctx)
    write_json(ctx.run_dir / "report.json", report)
    (ctx.run_dir / "report.md").write_text(render_markdown(report))
    page = render_html(report, timings_ms=raw_timings(ctx.result("bench")["models"]), findings=findings(report))
    write_text(ctx.run_dir / "report.html", page)
    return {"report_json": "report.json", "report_md": "report.md", "report_html": "report.html",
            "budget_met": report["budget_met"]}


def build_report(ctx: RunContext) -> dict[str, Any]:
    bench = ctx.result("bench")
    stages = {name: _stage_summary(metrics) for name, metrics in ctx.state.completed.items()}
    data = ctx.data.summary()
    return {
        "edgekd_version": __version__,
        "target": ctx.target.name,
        "budget_ms": bench["budget_ms"],
        "budget_source": ctx.result("search")["budget_source"],
        "budget_met": bench["budget_met"],
        "speedup_p50": round(bench["speedup_p50"], 3),
        "dataset": {k: data[k] for k in ("name", "n_train", "n_val", "n_test", "input_shape", "source")},
        "teacher_source": ctx.teacher.source,
        "search": search_summary(ctx.result("search"), bench),
        "export": {k: v for k, v in ctx.result("export").items()
                   if k in ("engine_build_commands", "engine_build_script", "engines_built", "coreml_checks",
                            "qdq_onnx_checks")},
        "models": models_for_report(bench["models"]),
        "stages": stages,
        "conditions": bench["conditions"],
        "environment": environment() | environment_extras(bench["conditions"]),
        "predicted_vs_measured": predicted_vs_measured(
            ctx.target.name, ctx.data.input_shape, bench["models"][deployed_key(bench["models"])]["precision"]),
        "command": ctx.spec.command,
        "run_dir": str(ctx.run_dir),
    }


def search_summary(search: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """How the student was chosen: the front, the finalists measured, and every attempt (a
    student whose artifact missed the budget, then the next one tried)."""
    deployed = bench["models"].get("student_int8", bench["models"]["student_fp32"])
    final = {"student": search["chosen"], "predicted_ms": predicted_ms(search),
             "search_measured_ms": search["chosen_p50_ms"], "bench_p50_ms": deployed["latency_ms"]["p50"],
             "accuracy": deployed["accuracy"], "budget_ms": bench["budget_ms"], "budget_met": bench["budget_met"]}
    return {key: search.get(key) for key in ("score", "latency", "trials", "candidates", "fitting", "limit_ms",
                                             "study", "front", "finalists", "chosen")} | {
        "attempts": [*search.get("attempts", []), final],
    }


def findings(report: dict[str, Any]) -> list[str]:
    """Plain statements a product team needs and might miss in the table."""
    models = report["models"]
    found = []
    if not report["budget_met"]:
        deployed = models.get("student_int8", models["student_fp32"])
        verb = "measures" if _measured(deployed) else "is predicted at"
        found.append(f"- **Budget missed**: the deployed student {verb} {deployed['latency_ms']['p50']:.4f} ms "
                     f"p50, over {report['budget_ms']:.4f} ms.")
    if "student_int8" in models:
        int8, fp32 = models["student_int8"], models["student_fp32"]
        if int8["latency_ms"]["p50"] >= fp32["latency_ms"]["p50"]:
            found.append(f"- **INT8 is not faster than fp32** for this student here "
                         f"({int8['latency_ms']['p50']:.4f} vs {fp32['latency_ms']['p50']:.4f} ms p50): "
                         "at small inputs per-call overhead dominates; deploy fp32 unless size matters.")
        drop = fp32["accuracy"] - int8["accuracy"]
        if drop > 0.01:
            found.append(f"- INT8 costs {drop * 100:.2f} points of accuracy against the fp32 student.")
    return [*found, ""] if found else []


def environment() -> dict[str, str]:
    versions = {name: _version(name) for name in ("torch", "openvino", "nncf", "onnxruntime", "numpy",
                                                        "coremltools", "nvidia-modelopt")}
    return {"cpu": cpu_name(), "python": platform.python_version(), "platform": platform.platform(), **versions}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _stage_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Keep scalar metrics of each stage (histories and nested tables stay in the run dir)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def render_markdown(report: dict[str, Any]) -> str:
    models = report["models"]
    teacher_p50 = models["teacher"]["latency_ms"]["p50"]
    data = report["dataset"]
    cond = report["conditions"]
    lines = [
        f"# edgekd report: {report['target']}",
        "",
        f"Budget: **{report['budget_ms']:.4f} ms** p50 at batch 1 ({report['budget_source']}) — "
        f"**{'met' if report['budget_met'] else 'MISSED'}**"
        f"{'' if all(_measured(m) for m in models.values()) else ' (on PREDICTED latency: the device is not attached)'}.",
        f"Dataset: {data['name']} ({data['n_train']} train / {data['n_val']} val / {data['n_test']} test, "
        f"input {'x'.join(map(str, data['input_shape']))}). Teacher: {report['teacher_source']}.",
        "",
        "| model | arch | precision | test accuracy | p50 ms | p99 ms | speed-up vs teacher (p50) "
        f"| throughput img/s (batch {models['teacher']['throughput_batch']}) | size MB | params | MMACs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in MODEL_LABELS.items():
        if key not in models:
            continue
        m = models[key]
        macs = f"{m['macs'] / 1e6:.2f}" if m["macs"] is not None else "n/a"
        p50 = f"{m['latency_ms']['p50']:.4f}" + ("" if _measured(m) else " (predicted)")
        lines.append(
            f"| {label} | {m['arch']} | {m['precision']} | {m['accuracy'] * 100:.2f}% | {p50} "
            f"| {_ms(m['latency_ms']['p99'])} | {teacher_p50 / m['latency_ms']['p50']:.2f}x "
            f"| {_number(m['throughput_ips'], '.0f')} | {m['size_mb']:.3f} | {m['params']:,} | {macs} |"
        )
    lines += ["", *measurement_notes(report), ""]
    lines += [
        *findings(report),
        *render_search(report.get("search") or {}),
        "## Stages",
        "",
        "| stage | seconds | notes |",
        "|---|---|---|",
    ]
    for name, metrics in report["stages"].items():
        notes = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items() if k != "seconds")
        lines.append(f"| {name} | {metrics.get('seconds', '')} | {notes} |")
    env = report["environment"]
    lines += [
        "",
        "## Measurement conditions",
        "",
        f"{cond['runtime']} on {cond['device']}, {cond['runtime_precision']}, {cond['threads']} threads, "
        f"{cond['warmup']} warm-up + {cond['runs']} timed runs at batch 1, measured {cond['date']}.",
        f"Python {env['python']}, torch {env['torch']}, openvino {env['openvino']}, nncf {env['nncf']}, "
        f"onnxruntime {env['onnxruntime']}, edgekd {report['edgekd_version']}.",
        "",
        "## Reproduce",
        "",
        "```",
        report["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def _measured(model: dict[str, Any]) -> bool:
    return model.get("latency_source", "measured") == "measured"  # runs before sources were recorded: measured


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def measurement_notes(report: dict[str, Any]) -> list[str]:
    """Where each number comes from: measured on the artifact, or predicted (labelled), and what
    stood in for the runtime where it is not here."""
    models = report["models"]
    notes = []
    if all(_measured(m) for m in models.values()):
        notes.append("Latencies are measured (not predicted), all in this one run, so ratios are comparable.")
    else:
        sources = sorted({m["latency_source"] for m in models.values() if not _measured(m)})
        notes.append(f"**Latencies are PREDICTED, not measured**: {report['conditions'].get('not_measured', '')}. "
                     f"Source: {'; '.join(sources)}. Peak figures: {report['conditions'].get('peaks_source', 'n/a')}.")
    accuracy_sources = sorted({m.get("accuracy_source", "artifact") for m in models.values()})
    notes.append(f"Accuracy is measured on the test split by running: {'; '.join(accuracy_sources)}.")
    export = report.get("export") or {}
    if export.get("engine_build_commands"):
        built = "were built and timed here" if export.get("engines_built") else "were NOT built here"
        notes += ["", f"TensorRT engines {built}. Build them on the device from the run dir with "
                  f"`sh {export['engine_build_script']}`:", "", "```",
                  *export["engine_build_commands"], "```"]
    for key, check in (export.get("qdq_onnx_checks") or {}).items():
        notes.append(f"Q/DQ ONNX of {key} in onnxruntime vs the fake-quantized torch model: argmax agreement "
                     f"{check['argmax_agreement'] * 100:.2f}% on {check['samples']} test images, "
                     f"max |logit diff| {check['max_abs_diff']:.3g}.")
    for key, check in (export.get("coreml_checks") or {}).items():
        ops = ", ".join(f"{name} x{count}" for name, count in sorted(check["ops"].items()))
        notes.append(f"CoreML {key}: spec validated; ops: {ops}.")
    return notes


def render_search(search: dict[str, Any]) -> list[str]:
    if search.get("front") is None:  # a run made before the search kept its front
        return []
    lines = [
        "## Student search",
        "",
        f"{search['trials']} trials over {search['candidates']} distinct architectures, scored by "
        f"**{search['score']}** (no training), latency **{search['latency']}** on the target; "
        f"{search['fitting']} within {search['limit_ms']:.4f} ms (budget x margin). Pareto front, best score first "
        "(a latency marked predicted comes from the target's latency table or, for a device that is not attached, "
        "from its published peaks; it is not a measurement):",
        "",
        "| # | student | score | latency ms | params |",
        "|---|---|---|---|---|",
    ]
    for index, point in enumerate(search["front"]):
        chosen = " (chosen)" if point["name"] == search["chosen"] else ""
        lines.append(f"| {index} | {point['name']}{chosen} | {point['score']:.4g} | {point['latency_ms']:.4f} "
                     f"{point['latency_source']} | {point['params']:,} |")
    lines += ["", "| attempt | student | predicted ms | measured in search ms | measured in bench ms | accuracy "
              "| budget |", "|---|---|---|---|---|---|---|"]
    for number, attempt in enumerate(search["attempts"], 1):
        predicted = f"{attempt['predicted_ms']:.4f}" if attempt.get("predicted_ms") is not None else "n/a"
        lines.append(f"| {number} | {attempt['student']} | {predicted} | {_ms(attempt['search_measured_ms'])} "
                     f"| {attempt['bench_p50_ms']:.4f} | {attempt['accuracy'] * 100:.2f}% "
                     f"| {'met' if attempt['budget_met'] else 'missed'} |")
    return [*lines, ""]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary(metrics: dict[str, Any]) -> str:
    return f"wrote {metrics['report_json']}, {metrics['report_md']} and {metrics.get('report_html', 'no HTML')}"
