"""report.html: one self-contained page a product team reads (and forwards as an attachment).

Input is the report dict (report.json's shape, edgekd/report/stage.py's build_report) plus the
raw timings of each model; no run dir, no ctx. Output is one HTML file: CSS inline, plots as
inline SVG, no script and no reference to anything outside the file. Every latency that was not
measured carries a visible PREDICTED badge. Key numbers carry `data-key` (their path in
report.json) and `data-scale` (display / JSON value), so tests can check the page against the
JSON it came from.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from edgekd.report import plots

MODEL_LABELS = {"teacher": "teacher", "student_fp32": "student fp32", "student_int8": "student INT8"}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:12px}
.card .label{color:#5b6475;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;font-weight:600;margin:2px 0}
.card .note{color:#5b6475;font-size:12px}
.met{color:#1b7f4b}.missed{color:#c0392b}
.badge{display:inline-block;font-size:11px;font-weight:700;border-radius:4px;padding:0 5px;margin-left:4px;vertical-align:1px}
.predicted{background:#fff3cd;color:#7a5a00;border:1px solid #e0c36a}
.measured{background:#e3f4ea;color:#1b5e3b;border:1px solid #9fd3b4}
.rolledback{background:#fde2e1;color:#8a1c1c;border:1px solid #e9a5a1}
.banner{background:#fff3cd;border:1px solid #e0c36a;border-radius:8px;padding:10px 12px;margin:12px 0}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0;font-size:13px}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.rolled td{background:#fdf0ef}
.plot{background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:8px;margin:8px 0;overflow-x:auto}
.plot svg{width:100%;max-width:900px;height:auto}
pre{background:#1d2433;color:#f6f7f9;padding:10px;border-radius:6px;overflow-x:auto;white-space:pre-wrap}
ul.findings li{margin:2px 0} details{margin:6px 0} summary{cursor:pointer;color:#264653}
footer{color:#5b6475;font-size:12px;margin-top:32px}
"""


def render_html(report: dict[str, Any], *, timings_ms: dict[str, Sequence[float]] | None = None,
                findings: Sequence[str] = ()) -> str:
    """The whole page. `timings_ms`: model key -> every timed call (bench.json's raw timings);
    `findings`: report.stage's findings, Markdown lines ("- **Budget missed**: ...")."""
    models = report["models"]
    sections = [
        _header(report), _headline(report), _findings(findings, report),
        _models_table(report), _stages_table(report.get("stages") or {}),
        _search(report.get("search") or {}, report), _prune(report.get("prune")), _histogram(models, timings_ms or {}),
        _per_layer(models), _load_memory(models), _predicted_vs_measured(report),
        _environment(report), _reproduce(report),
    ]
    return page(f"edgekd report: {report['target']}", sections, version=report.get("edgekd_version", ""))


def page(title: str, sections: Sequence[str], *, version: str) -> str:
    """A complete HTML document: the sections, the inline style sheet, nothing from outside."""
    body = "\n".join(section for section in sections if section)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><main>\n{body}\n<footer>Written by edgekd {escape(version)}. "
            "Self-contained: no scripts, no external resources.</footer></main></body></html>\n")


# --- small helpers ------------------------------------------------------------------------------

def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def measured(model: dict[str, Any]) -> bool:
    return plots.is_measured(model.get("latency_source"))


def deployed_key(models: dict[str, Any]) -> str:
    return "student_int8" if "student_int8" in models else "student_fp32"


def _num(value: float | None, spec: str, *, key: str | None = None, scale: float = 1.0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    attrs = f' data-key="{escape(key)}" data-scale="{scale:g}"' if key else ""
    return f"<span{attrs}>{format(value * scale, spec)}</span>{unit}"


def source_badge(source: str | None) -> str:
    if plots.is_measured(source):
        return '<span class="badge measured">measured</span>'
    return f'<span class="badge predicted" title="{escape(source)}">PREDICTED</span>'


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = (),
           row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    lines = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        lines.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def plot_block(svg: str | None, alt: str) -> str:
    return f'<div class="plot" role="img" aria-label="{escape(alt)}">{svg}</div>' if svg else ""


def _markdown_inline(text: str) -> str:
    """The little Markdown the findings use: **bold** and `code`."""
    text = escape(text.removeprefix("- "))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


# --- sections -----------------------------------------------------------------------------------

def _header(report: dict[str, Any]) -> str:
    data = report.get("dataset") or {}
    shape = "x".join(str(v) for v in data.get("input_shape", []))
    banner = ""
    if not all(measured(m) for m in report["models"].values()):
        reason = (report.get("conditions") or {}).get("not_measured", "the device is not attached")
        banner = (f'<div class="banner"><strong>Latencies on this page marked PREDICTED were not measured</strong>: '
                  f"{escape(reason)}. They come from the target's published peaks or latency table, not from the device."
                  "</div>")
    return (f"<h1>edgekd report: {escape(report['target'])}</h1>"
            f'<p class="sub">Dataset {escape(data.get("name", "?"))} ({escape(data.get("n_test", "?"))} test images, input '
            f"{escape(shape)}); teacher: {escape(report.get('teacher_source', '?'))}; run dir <code>{escape(report.get('run_dir', ''))}"
            f"</code></p>{banner}")


def _headline(report: dict[str, Any]) -> str:
    models = report["models"]
    key = deployed_key(models)
    deployed, teacher = models[key], models["teacher"]
    met = report["budget_met"]
    drop_pt = (teacher["accuracy"] - deployed["accuracy"]) * 100
    size_ratio = teacher["size_mb"] / deployed["size_mb"] if deployed.get("size_mb") else None
    cards = [
        ("target", escape(report["target"]), escape((report.get("conditions") or {}).get("device", ""))),
        ("latency budget",
         f'<span class="{"met" if met else "missed"}">{"met" if met else "MISSED"}</span>'
         + ("" if measured(deployed) else ' <span class="badge predicted">on a PREDICTED latency</span>'),
         f"{_num(report['budget_ms'], '.4f', key='budget_ms', unit=' ms')} p50 ({escape(report.get('budget_source', ''))}); "
         f"the deployed student is at {_num(deployed['latency_ms']['p50'], '.4f', key=f'models.{key}.latency_ms.p50', unit=' ms')}"
         f"{source_badge(deployed.get('latency_source'))}"),
        ("accuracy (artifact)", _num(deployed["accuracy"], ".2f", key=f"models.{key}.accuracy", scale=100, unit="%"),
         f"teacher {_num(teacher['accuracy'], '.2f', key='models.teacher.accuracy', scale=100, unit='%')}; "
         + (f"{abs(drop_pt):.2f} pt {'below' if drop_pt > 0 else 'above'} the teacher" if round(drop_pt, 2)
            else "the same as the teacher")),
        ("speed-up vs teacher", _num(report["speedup_p50"], ".2f", key="speedup_p50", unit="x"),
         f"p50, batch 1 {source_badge(deployed.get('latency_source'))}"),
        ("size", _num(deployed["size_mb"], ".3f", key=f"models.{key}.size_mb", unit=" MB"),
         f"{MODEL_LABELS.get(key, key)}, {deployed['precision']}; teacher {teacher['size_mb']:.3f} MB"
         + (f" ({size_ratio:.1f}x smaller)" if size_ratio else "")),
    ]
    items = "".join(f'<div class="card"><div class="label">{label}</div><div class="value">{value}</div>'
                    f'<div class="note">{note}</div></div>' for label, value, note in cards)
    return f'<section id="headline"><div class="cards">{items}</div></section>'


def _findings(findings: Sequence[str], report: dict[str, Any]) -> str:
    items = [_markdown_inline(line) for line in findings if line.strip()]
    for key, model in report["models"].items():
        fell_back = (model.get("per_layer") or {}).get("compute_float") or []
        if model.get("precision") == "int8" and fell_back:
            items.append(f"<strong>{len(fell_back)} compute layer(s) of the {MODEL_LABELS.get(key, key)} did not run in "
                         f"INT8</strong>: {escape(', '.join(fell_back[:5]))}{' ...' if len(fell_back) > 5 else ''}.")
    if not items:
        return ""
    return "<h2>Findings</h2><ul class=\"findings\">" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _models_table(report: dict[str, Any]) -> str:
    models = report["models"]
    rows, classes = [], []
    for key, model in models.items():
        latency = model["latency_ms"]
        rolled = model.get("rolled_back")
        name = escape(MODEL_LABELS.get(key, key)) + (f' <span class="badge rolledback">ROLLED BACK</span><br><small>'
                                                 f"{escape(rolled)}</small>" if rolled else "")
        macs = model.get("macs")
        rows.append([
            name, escape(model.get("arch", "")), escape(model["precision"]),
            _num(model["accuracy"], ".2f", key=f"models.{key}.accuracy", scale=100, unit="%")
            + f"<br><small>{escape(model.get('accuracy_source', 'artifact'))}</small>",
            *(_num(latency.get(p), ".4f", key=f"models.{key}.latency_ms.{p}") for p in ("p50", "p90", "p99")),
            source_badge(model.get("latency_source")),
            _num(model.get("throughput_ips"), ".0f") + f"<br><small>batch {model.get('throughput_batch', '?')}</small>",
            _num(model.get("size_mb"), ".3f", key=f"models.{key}.size_mb"),
            f"{model['params']:,}" if model.get("params") is not None else "n/a",
            f"{macs / 1e6:.2f}" if macs is not None else "n/a",
        ])
        classes.append("rolled" if rolled else "")
    models_table = table(["model", "arch", "precision", "test accuracy", "p50 ms", "p90 ms", "p99 ms", "latency",
                    "throughput img/s", "size MB", "params", "MMACs"], rows, numeric=(4, 5, 6, 8, 9, 10, 11),
                   row_classes=classes)
    return ("<h2>Per stage: teacher, distilled student, quantized student</h2>"
            "<p>Accuracy is measured on the test split by running the artifact named under it; latency is batch 1 "
            "after warm-up. A p90/p99 of n/a: the latency is a single prediction, not a distribution.</p>" + models_table)


def _stages_table(stages: dict[str, dict[str, Any]]) -> str:
    if not stages:
        return ""
    rows = []
    for name, metrics in stages.items():
        rolled = metrics.get("rolled_back") or metrics.get("rollback_reason")
        state = (f'<span class="badge rolledback">ROLLED BACK</span> {escape(rolled)}' if rolled else "kept")
        rows.append([escape(name), _num(metrics.get("seconds"), ".1f"), state])
    return "<h2>Pipeline stages</h2>" + table(["stage", "seconds", "outcome"], rows, numeric=(1,))


def _prune(prune: dict[str, Any] | None) -> str:
    """The prune stage's gate: the unpruned and the pruned artifact side by side, each latency with
    its source ("not measured" for a 2:4 engine that did not run on a TensorRT host)."""
    if not prune or not prune.get("ran"):
        return ""
    rows = []
    for role in ("baseline", "candidate"):
        side = prune.get(role)
        if not side:
            continue
        latency = (f"{_num(side['latency_ms'], '.4f')} ms {source_badge(side['latency_source'])}"
                   if side.get("latency_ms") is not None else
                   f'<span class="badge predicted">NOT MEASURED</span> <small>{escape(side.get("not_measured"))}</small>')
        rows.append([escape(side["name"]), latency, _num(side["accuracy"], ".2f", scale=100, unit="%"),
                     escape(side.get("accuracy_source", ""))])
    outcome = ("pruned model ships" if prune["shipped"] else
               '<span class="badge rolledback">ROLLED BACK</span> the unpruned student ships')
    plan = prune.get("plan") or {}
    macs = (f" MACs {plan['macs_before'] / 1e6:.3g}M &rarr; {plan['macs_after'] / 1e6:.3g}M "
            f"({plan['mac_reduction']:.0%} fewer)." if plan.get("macs_before") else "")
    return (f"<h2>Prune</h2><p>Flow <strong>{escape(prune['flow'])}</strong>, {escape(prune['method'])}: "
            f"{outcome}.{macs}</p>"
            + table([f"artifact ({escape(prune.get('precision'))})", "latency p50", "val accuracy", "accuracy of"],
                    rows, numeric=(1, 2))
            + f"<p><small>{escape(prune['reason'])}</small></p>")


def _search(search: dict[str, Any], report: dict[str, Any]) -> str:
    if not search.get("front"):
        return ""
    svg = plots.pareto_svg(search["front"], chosen=search.get("chosen"), budget_ms=report.get("budget_ms"),
                           score_name=search.get("score", "score"), finalists=search.get("finalists") or ())
    rows = []
    for number, attempt in enumerate(search.get("attempts") or [], 1):
        predicted = attempt.get("predicted_ms")
        rows.append([str(number), escape(attempt["student"]),
                     (f"{predicted:.4f} " + source_badge("predicted")) if predicted is not None else "n/a",
                     _num(attempt.get("search_measured_ms"), ".4f"), _num(attempt.get("bench_p50_ms"), ".4f"),
                     _num(attempt.get("accuracy"), ".2f", scale=100, unit="%"),
                     '<span class="met">met</span>' if attempt.get("budget_met") else '<span class="missed">missed</span>'])
    attempts = table(["attempt", "student", "predicted ms", "measured in search ms", "bench p50 ms", "accuracy",
                       "budget"], rows, numeric=(2, 3, 4, 5))
    return (f"<h2>Student search</h2><p>{escape(search.get('trials'))} trials over {escape(search.get('candidates'))} "
            f"architectures, scored by <strong>{escape(search.get('score'))}</strong> (no training), latency "
            f"<strong>{escape(search.get('latency'))}</strong> on the target. Hollow points: latency PREDICTED.</p>"
            + plot_block(svg, "Pareto front of the student search")
            + "<h3>Attempts of the feedback loop</h3><p>Each student tried, with the latency predicted when it was "
              "chosen and the latency then measured on its artifact; a miss sends the search to the next student.</p>"
            + attempts)


def _histogram(models: dict[str, Any], timings_ms: dict[str, Sequence[float]]) -> str:
    labelled = {MODEL_LABELS.get(k, k): v for k, v in timings_ms.items() if v}
    if not labelled:
        why = ("the latencies of this run are PREDICTED, so there are no timings to draw"
               if not all(measured(m) for m in models.values())
               else "this run's bench did not keep raw timings (bench.json has no timings_ms)")
        return f"<h2>Latency distribution</h2><p>No histogram: {why}.</p>"
    rows = [[escape(MODEL_LABELS.get(k, k)), *(_num(s.get(f), ".4f") for f in ("p50", "p99", "mean", "std", "min", "max")),
             str(s.get("count"))] for k, m in models.items() if (s := m.get("timings"))]
    summary = table(["model", "p50", "p99", "mean", "std", "min", "max", "calls"], rows, numeric=range(1, 8)) if rows else ""
    return ("<h2>Latency distribution</h2><p>Every timed call of the batch-1 measurement, as measured (ms).</p>"
            + plot_block(plots.histogram_svg(labelled), "histogram of measured latencies") + summary)


def _per_layer(models: dict[str, Any]) -> str:
    parts = []
    for key, model in models.items():
        profile = model.get("per_layer")
        label = MODEL_LABELS.get(key, key)
        if not profile:
            reason = model.get("profile_unavailable") or model.get("profile_error") or "not measured by this run's bench"
            parts.append(f"<p><strong>{escape(label)}</strong>: no per-layer counters ({escape(reason)}).</p>")
            continue
        int8, fell = profile.get("compute_int8") or [], profile.get("compute_float") or []
        verdict = (f"{len(int8)} compute layer(s) ran INT8, {len(fell)} ran in float"
                   + (f" (<strong>fell back</strong>: {escape(', '.join(fell))})" if fell and model["precision"] == "int8" else ""))
        rows = [[escape(layer.get("origin") or layer["name"]), escape(layer["type"]), escape(layer.get("exec_type", "")),
                 escape(layer["precision"]), f"{layer['median_ms']:.4f}", f"{layer['share'] * 100:.1f}%"]
                for layer in profile["layers"]]
        parts.append(
            f"<h3>{escape(label)} ({escape(model['precision'])})</h3><p>{len(profile['layers'])} executed layers, "
            f"{profile.get('total_ms', 0):.4f} ms summed over layers; {verdict}. Source: {escape(profile.get('source', ''))}, "
            f"median of {escape(profile.get('runs'))} inferences.</p>"
            + plot_block(plots.layers_svg(profile["layers"], title=f"{label}: slowest layers"), f"per-layer time of {label}")
            + f"<details><summary>all {len(profile['layers'])} layers</summary>"
            + table(["layer (source module)", "type", "kernel", "ran in", "median ms", "share"], rows, numeric=(4, 5))
            + "</details>")
    return ("<h2>Per-layer latency and execution precision</h2><p>Each executed primitive after the runtime's "
            "fusions (a convolution carries its bias, activation and requantization), with the kernel that ran it. "
            "In an INT8 model the input's quantization and layout reorders may run in float by design; a "
            "convolution, fully connected layer or MatMul that ran in float fell back. OpenVINO's counters have "
            "1 &micro;s resolution.</p>" + "".join(parts))


def _load_memory(models: dict[str, Any]) -> str:
    rows = [[escape(MODEL_LABELS.get(k, k)), _num(m.get("load_ms"), ".1f", key=f"models.{k}.load_ms"),
             _num(m.get("first_inference_ms"), ".2f", key=f"models.{k}.first_inference_ms"),
             _num(m.get("peak_memory_mb") if m.get("peak_memory_mb") is not None else m.get("gpu_memory_mb"), ".1f",
                  key=f"models.{k}.peak_memory_mb" if m.get("peak_memory_mb") is not None else f"models.{k}.gpu_memory_mb")]
            for k, m in models.items()]
    includes = next((m["memory_includes"] for m in models.values() if m.get("memory_includes")), None)
    if all(row[1] == row[2] == row[3] == "n/a" for row in rows):
        return "<h2>First load and peak memory</h2><p>Not measured in this run (bench measures them for OpenVINO " \
               "artifacts, and for TensorRT engines on a TensorRT host).</p>"
    note = f" Peak memory counts {escape(includes)}." if includes else ""
    return ("<h2>First load and peak memory</h2><p>Measured per artifact in a fresh process: load is read + compile "
            f"(what an application waits before its first inference).{note}</p>"
            + table(["model", "first load ms", "first inference ms", "peak memory MB"], rows, numeric=(1, 2, 3)))


def _predicted_vs_measured(report: dict[str, Any]) -> str:
    records = report.get("predicted_vs_measured") or []
    if not records:
        return ("<h2>Predicted vs measured</h2><p>The target's latency records hold no measurement with the prediction "
                "made before it (at this input size and precision) yet.</p>")
    rows = [[escape(r.get("name") or "?"), f"{r['predicted_ms']:.4f} " + source_badge("predicted"),
             f"{r['measured_p50_ms']:.4f}", f"{r['measured_p50_ms'] / r['predicted_ms']:.2f}", escape(r.get("date") or "")]
            for r in records]
    return ("<h2>Predicted vs measured</h2><p>From the target's latency records: what search predicted, then what "
            "bench measured on the artifact.</p>"
            + plot_block(plots.predicted_vs_measured_svg(records), "predicted against measured latency")
            + table(["student", "predicted ms", "measured p50 ms", "measured / predicted", "date"], rows, numeric=(1, 2, 3)))


def _environment(report: dict[str, Any]) -> str:
    env, cond = report.get("environment") or {}, report.get("conditions") or {}
    rows = [[escape(k), escape(v)] for k, v in {**{f"condition: {k}": v for k, v in cond.items()}, **env}.items()]
    return "<h2>Environment and measurement conditions</h2>" + table(["what", "value"], rows)


def _reproduce(report: dict[str, Any]) -> str:
    return f"<h2>Reproduce</h2><pre>{escape(report.get('command', ''))}</pre>"
