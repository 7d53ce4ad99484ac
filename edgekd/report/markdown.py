"""report.md: the report dict (report/stage.py) as tables a product team reads. Every latency is
shown with its source beside it ("0.1234 ms measured", "0.0788 ms predicted (analytical)")."""

from __future__ import annotations

from typing import Any

from edgekd.latency.source import MEASURED, format_ms

# The report warns about a teacher below this many times chance level (the run stops below 2x).
WEAK_TEACHER_REPORT = 3.0

MODEL_LABELS = {"teacher": "teacher", "student_fp32": "student fp32", "student_int8": "student INT8"}


def latency_text(ms: float | None, source: str | None) -> str:
    """"0.1234 ms measured"; "n/a" where there is no such number."""
    if ms is None:
        return "n/a"
    return f"{format_ms(ms)} ms {source or MEASURED}"  # a value without a recorded source came from a timing


def _model_latency(model: dict[str, Any], quantile: str = "p50") -> str:
    return latency_text(model["latency_ms"][quantile], model.get("latency_source"))


def _measured(model: dict[str, Any]) -> bool:
    return model.get("latency_source", MEASURED) == MEASURED


def render_markdown(report: dict[str, Any]) -> str:
    models = report["models"]
    teacher_p50 = models["teacher"]["latency_ms"]["p50"]
    data = report["dataset"]
    budget_source = report.get("budget_met_source", MEASURED)
    lines = [
        f"# edgekd report: {report['target']}",
        "",
        f"Budget: **{format_ms(report['budget_ms'])} ms** p50 at batch 1 ({report['budget_source']}) — "
        f"**{'met' if report['budget_met'] else 'MISSED'}** on {budget_source} latency"
        f"{'' if budget_source == MEASURED else ' (the device is not attached: this is NOT a measurement)'}.",
        f"Dataset: {data['name']} ({data['n_train']} train / {data['n_val']} val / {data['n_test']} test, "
        f"input {'x'.join(map(str, data['input_shape']))}"
        f"{', ' + data['image_size_origin'] if data.get('image_size_origin') else ''}). "
        f"Teacher: {report['teacher_source']}.",
        *([f"Model inputs: {data['preprocessing']} ({report.get('preprocessing_in_artifact', '')})."]
          if data.get("preprocessing") else []),
        "",
        "| model | arch | precision | test accuracy | p50 | p99 | speed-up vs teacher (p50) "
        f"| throughput img/s (batch {models['teacher']['throughput_batch']}) | size MB | params | MMACs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in MODEL_LABELS.items():
        if key not in models:
            continue
        m = models[key]
        macs = f"{m['macs'] / 1e6:.2f}" if m["macs"] is not None else "n/a"
        speedup = f"{teacher_p50 / m['latency_ms']['p50']:.2f}x"
        if not (_measured(m) and _measured(models["teacher"])):
            speedup += " (predicted)"
        lines.append(
            f"| {label} | {m['arch']} | {m['precision']} | {m['accuracy'] * 100:.2f}% | {_model_latency(m)} "
            f"| {_model_latency(m, 'p99')} | {speedup} "
            f"| {_number(m['throughput_ips'], '.0f')} | {m['size_mb']:.3f} | {m['params']:,} | {macs} |"
        )
    lines += ["", *measurement_notes(report), ""]
    lines += [*findings(report), *render_search(report.get("search") or {}), *render_prune(report.get("prune")),
              *render_stages(report),
              *render_conditions(report)]
    return "\n".join(lines)


def findings(report: dict[str, Any]) -> list[str]:
    """Plain statements a product team needs and might miss in the table."""
    models = report["models"]
    found = []
    teacher_accuracy, chance = report.get("teacher_val_accuracy"), report.get("chance_accuracy")
    if teacher_accuracy is not None and chance and teacher_accuracy < WEAK_TEACHER_REPORT * chance:
        found.append(f"- **The teacher scores low**: {teacher_accuracy:.1%} on the validation split (chance "
                     f"{chance:.1%}). Check that its inputs match its training (normalisation, channels, input size, "
                     "class order): every student is trained to imitate it.")
    if not report["budget_met"]:
        deployed = models.get("student_int8", models["student_fp32"])
        verb = "measures" if _measured(deployed) else "is predicted at"
        found.append(f"- **Budget missed**: the deployed student {verb} {_model_latency(deployed)} p50, over "
                     f"{format_ms(report['budget_ms'])} ms.")
    prune = report.get("prune") or {}
    if prune.get("rolled_back"):
        found.append(f"- **Pruning did not pay and was rolled back**: {prune['rolled_back']}.")
    elif prune.get("shipped"):
        found.append(f"- **The shipped student is pruned** ({prune['method']}, flow {prune['flow']}): {prune['reason']}.")
    gate = report.get("int8_gate") or {}
    if gate and not gate.get("ship_candidate"):
        found.append(f"- **INT8 does not pay here, and ships because it is the target's precision**: {gate['reason']}.")
    elif "student_int8" in models:
        int8, fp32 = models["student_int8"], models["student_fp32"]
        if int8["latency_ms"]["p50"] >= fp32["latency_ms"]["p50"]:
            found.append(f"- **INT8 is not faster than fp32** for this student here "
                         f"({_model_latency(int8)} vs {_model_latency(fp32)} p50): "
                         "at small inputs per-call overhead dominates; deploy fp32 unless size matters.")
        drop = fp32["accuracy"] - int8["accuracy"]
        if drop > 0.01:
            found.append(f"- INT8 costs {drop * 100:.2f} points of accuracy against the fp32 student.")
    return [*found, ""] if found else []


def measurement_notes(report: dict[str, Any]) -> list[str]:
    """Where each number comes from: measured on the artifact, or predicted (labelled), and what
    stood in for the runtime where it is not here."""
    models = report["models"]
    notes = []
    if all(_measured(m) for m in models.values()):
        notes.append("Latencies are measured (not predicted), all in this one run, so ratios are comparable.")
    else:
        sources = sorted({m["latency_source"] for m in models.values() if not _measured(m)})
        details = sorted({m["latency_detail"] for m in models.values() if m.get("latency_detail")})
        notes.append(f"**Latencies are PREDICTED, not measured**: {report['conditions'].get('not_measured', '')}. "
                     f"Source: {'; '.join(sources)}{' (' + '; '.join(details) + ')' if details else ''}. "
                     f"Peak figures: {report['conditions'].get('peaks_source', 'n/a')}.")
    accuracy_sources = sorted({m.get("accuracy_source", "artifact") for m in models.values()})
    notes.append(f"Accuracy is measured on the test split by running: {'; '.join(accuracy_sources)}.")
    export = report.get("export") or {}
    if export.get("engine_build_commands"):
        built = "were built and timed here" if export.get("engines_built") else "were NOT built here"
        notes += ["", f"TensorRT engines {built}. Build them on the device from the run dir with "
                  f"`sh {export['engine_build_script']}`:", "", "```", *export["engine_build_commands"], "```"]
    for key, check in (export.get("artifact_checks") or {}).items():
        if "argmax_agreement" in check:
            notes.append(f"The ONNX of {key} in onnxruntime vs the torch model it came from: argmax agreement "
                         f"{check['argmax_agreement'] * 100:.2f}% on {check['samples']} test images, "
                         f"max |logit diff| {check['max_abs_diff']:.3g}.")
        if "ops" in check:
            ops = ", ".join(f"{name} x{count}" for name, count in sorted(check["ops"].items()))
            notes.append(f"Core ML {key}: validated (input {check.get('input_shape')}, output "
                         f"{check.get('output_shape')}); ops: {ops}.")
    return notes


def render_search(search: dict[str, Any]) -> list[str]:
    if search.get("front") is None:
        return []
    lines = [
        "## Student search",
        "",
        f"{search['trials']} trials over {search['candidates']} distinct architectures, scored by "
        f"**{search['score']}** (no training), latency **{search['latency']}** on the target; "
        f"{search['fitting']} within {format_ms(search['limit_ms'])} ms (budget x margin). Pareto front, best score "
        "first (predicted (table): from the target's latency table; predicted (analytical): from the device's "
        "published peaks; extrapolated: blocks missing from the table; none of these is a measurement):",
        "",
        "| # | student | score | latency | params |",
        "|---|---|---|---|---|",
    ]
    for index, point in enumerate(search["front"]):
        chosen = " (chosen)" if point["name"] == search["chosen"] else ""
        lines.append(f"| {index} | {point['name']}{chosen} | {point['score']:.4g} "
                     f"| {latency_text(point['latency_ms'], point['latency_source'])} | {point['params']:,} |")
    lines += ["", "| attempt | student | latency in the search | latency in bench | accuracy | budget |",
              "|---|---|---|---|---|---|"]
    for number, attempt in enumerate(search["attempts"], 1):
        search_ms = attempt["search_measured_ms"] if attempt["search_measured_ms"] is not None else attempt["predicted_ms"]
        lines.append(f"| {number} | {attempt['student']} "
                     f"| {latency_text(search_ms, attempt.get('search_latency_source'))} "
                     f"| {latency_text(attempt['bench_p50_ms'], attempt.get('bench_latency_source'))} "
                     f"| {attempt['accuracy'] * 100:.2f}% | {'met' if attempt['budget_met'] else 'missed'} |")
    return [*lines, ""]


def render_prune(prune: dict[str, Any] | None) -> list[str]:
    """The prune stage: what was pruned, and the gate's two artifacts side by side."""
    if not prune or not prune.get("ran"):
        return []
    plan = prune.get("plan") or {}
    lines = ["## Prune", "", f"Flow **{prune['flow']}**, {prune['method']}"
             + (f", allocation {plan.get('allocation')}, importance {plan.get('importance')}, channels on multiples "
                f"of {plan.get('channel_multiple')}" if prune["method"] == "channels" else "")
             + f". Outcome: **{'pruned model ships' if prune['shipped'] else 'ROLLED BACK, the unpruned student ships'}**.",
             ""]
    if plan.get("macs_before"):
        lines.append(f"MACs {plan['macs_before'] / 1e6:.3g}M -> {plan['macs_after'] / 1e6:.3g}M "
                     f"({plan['mac_reduction']:.0%} fewer); params {plan['params_before']:,} -> {plan['params_after']:,}; "
                     f"{len(plan.get('plan', {}))} channel group(s) pruned, {len(plan.get('skipped', []))} layer(s) "
                     "kept whole (prune/prune.json lists each with the reason).")
    if prune["method"] == "2:4":
        sparse = [row["layer"] for row in plan.get("layers", []) if row.get("sparse")]
        lines.append(f"2:4 sparse layers ({len(sparse)} of {len(plan.get('layers', []))}, TensorRT's sparse tactics need "
                     f"about {plan.get('min_channels')} channels): {', '.join(sparse) or 'none'}.")
    allocation = prune.get("allocation")
    if allocation:
        lines.append(f"Latency-guided plan: {latency_text(allocation['baseline_ms'], allocation['latency_source'])} -> "
                     f"{latency_text(allocation['final_ms'], allocation['latency_source'])} in {allocation['steps']} "
                     f"step(s), goal {latency_text(allocation['goal_ms'], allocation['latency_source'])} "
                     f"({allocation.get('goal_origin')}); {allocation['stop_reason']}.")
    lines += ["", f"| artifact ({prune.get('precision')}) | latency p50 | val accuracy | accuracy measured on |",
              "|---|---|---|---|"]
    for role in ("baseline", "candidate"):
        side = prune.get(role)
        if side:
            latency = (latency_text(side["latency_ms"], side["latency_source"]) if side.get("latency_ms") is not None
                       else f"not measured ({side.get('not_measured')})")
            lines.append(f"| {side['name']} | {latency} | {side['accuracy'] * 100:.2f}% | {side['accuracy_source']} |")
    lines += ["", f"Gate: {prune['reason']}", ""]
    return lines


def render_stages(report: dict[str, Any]) -> list[str]:
    lines = ["## Stages", "", "| stage | seconds | notes |", "|---|---|---|"]
    for name, metrics in report["stages"].items():
        notes = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items() if k != "seconds" and not k.endswith("_source"))
        lines.append(f"| {name} | {metrics.get('seconds', '')} | {_label_latencies(notes, metrics)} |")
    return lines


def _label_latencies(notes: str, metrics: dict[str, Any]) -> str:
    """A stage's `<name>_ms` note gets its `<name>_source` beside it."""
    for key, value in metrics.items():
        if key.endswith("_source") and value is not None:
            ms_key = key.removesuffix("_source") + "_ms"
            if ms_key in metrics and metrics[ms_key] is not None:
                notes = notes.replace(f"{ms_key}={_fmt(metrics[ms_key])}", f"{ms_key}={_fmt(metrics[ms_key])} ({value})")
    return notes


def render_conditions(report: dict[str, Any]) -> list[str]:
    cond, env = report["conditions"], report["environment"]
    if cond.get("not_measured"):
        what = (f"Nothing was timed: {cond['not_measured']}. Latencies were PREDICTED for {cond['device']} "
                f"({cond['runtime']}) on {cond['date']}, from {cond.get('peaks_source') or 'the target file'}.")
    else:
        what = (f"{cond['runtime']} on {cond['device']}, {cond['runtime_precision']}, {cond['threads']} threads, "
                f"{cond['warmup']} warm-up + {cond['runs']} timed runs at batch 1, measured {cond['date']}.")
        hosts = sorted({m["device_conditions"]["host"] for m in report["models"].values()
                        if (m.get("device_conditions") or {}).get("host")})
        failed = sorted({d for m in report["models"].values()
                         for d in (m.get("device_conditions") or {}).get("failed_devices") or []})
        if hosts:
            what += f" Measured over SSH on {', '.join(hosts)}."
        if failed:
            what += f" Devices that failed a job (moved to another): {', '.join(failed)}."
    return [
        "",
        "## Measurement conditions",
        "",
        what,
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


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
