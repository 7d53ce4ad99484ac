"""`edgekd report --compare RUN_DIR RUN_DIR ...`: several runs (targets, recipes) side by side, as
one HTML page and one Markdown table, from each run's report.json.

A latency that was predicted (a device that was not attached) stays labelled PREDICTED in the
table and hollow in the plot, so that a measured x86 run and a predicted Jetson run can sit on one
page without one being read as the other.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from edgekd.errors import UserError
from edgekd.io import write_text
from edgekd.report import plots
from edgekd.report.html import (
    MODEL_LABELS,
    deployed_key,
    escape,
    measured,
    page,
    plot_block,
    source_badge,
    table,
)
from edgekd.version import __version__

# The first line of the Markdown file, so that --compare only ever replaces a file it wrote.
MARKER = "<!-- edgekd compare -->"


def load_runs(run_dirs: list[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """(name, report.json) of each run dir, in the order given. All are checked before any is
    used: a dir without report.json is an error naming the command that writes it."""
    if len(run_dirs) < 2:
        raise UserError("--compare needs at least two run dirs")
    runs, names = [], set()
    for run_dir in map(Path, run_dirs):
        path = run_dir / "report.json"
        if not path.is_file():
            raise UserError(f"{run_dir} has no report.json (finished runs have one; `edgekd report {run_dir}` writes it)")
        try:
            report = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(report, dict) or "models" not in report or "target" not in report:
            raise UserError(f"{path} is not an edgekd report (no target/models)")
        name = run_dir.resolve().name
        while name in names:  # two runs of the same name from different folders
            name = f"{run_dir.resolve().parent.name}/{name}"
        names.add(name)
        runs.append((name, report))
    return runs


def output_paths(html_path: Path, *, overwrite: bool) -> tuple[Path, Path]:
    """The HTML page and the Markdown table beside it; existing files are refused unless
    --overwrite, and even then only files that --compare wrote."""
    if html_path.suffix != ".html":
        raise UserError(f"--output must end in .html: {html_path}")
    md_path = html_path.with_suffix(".md")
    for path in (html_path, md_path):
        if not path.exists():
            continue
        if not overwrite:
            raise UserError(f"{path} exists; pass --overwrite to replace it, or choose another --output")
        if not (md_path.exists() and _first_line(md_path) == MARKER):
            raise UserError(f"{path} exists and was not written by `edgekd report --compare`; not replacing it")
    return html_path, md_path


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().rstrip("\n")


def default_output(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / f"compare-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.html"


def rows(runs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per run: its deployed student against its teacher, each latency with its source."""
    result = []
    for name, report in runs:
        models = report["models"]
        key = deployed_key(models)
        deployed, teacher = models[key], models["teacher"]
        result.append({
            "run": name, "target": report["target"], "model": MODEL_LABELS.get(key, key), "arch": deployed.get("arch"),
            "precision": deployed["precision"], "accuracy": deployed["accuracy"],
            "teacher_accuracy": teacher["accuracy"], "p50_ms": deployed["latency_ms"]["p50"],
            "p99_ms": deployed["latency_ms"].get("p99"), "latency_source": deployed.get("latency_source", "measured"),
            "teacher_p50_ms": teacher["latency_ms"]["p50"],
            "teacher_latency_source": teacher.get("latency_source", "measured"),
            "speedup": report.get("speedup_p50"), "size_mb": deployed.get("size_mb"),
            "budget_ms": report.get("budget_ms"), "budget_met": report.get("budget_met"),
            "load_ms": deployed.get("load_ms"), "peak_memory_mb": deployed.get("peak_memory_mb"),
            "device": (report.get("conditions") or {}).get("device", ""),
        })
    return result


def _latency_text(value: float | None, source: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f} ({'measured' if plots.is_measured(source) else 'PREDICTED: ' + source})"


def _optional(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_markdown(runs: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [MARKER, "# edgekd: runs compared", "",
             "Deployed student of each run against its own teacher; each latency says whether it was measured "
             "or PREDICTED (the device was not attached).", "",
             "| run | target | model | precision | accuracy | teacher accuracy | p50 ms | teacher p50 ms | speed-up "
             "| size MB | budget ms | budget | first load ms | peak memory MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows(runs):
        lines.append(
            f"| {row['run']} | {row['target']} | {row['model']} ({row['arch']}) | {row['precision']} "
            f"| {row['accuracy'] * 100:.2f}% | {row['teacher_accuracy'] * 100:.2f}% "
            f"| {_latency_text(row['p50_ms'], row['latency_source'])} "
            f"| {_latency_text(row['teacher_p50_ms'], row['teacher_latency_source'])} "
            f"| {_optional(row['speedup'], '.2f')}x | {_optional(row['size_mb'], '.3f')} "
            f"| {_optional(row['budget_ms'], '.4f')} | {'met' if row['budget_met'] else 'MISSED'} "
            f"| {_optional(row['load_ms'], '.1f')} | {_optional(row['peak_memory_mb'], '.1f')} |")
    return "\n".join([*lines, ""])


def render_html(runs: list[tuple[str, dict[str, Any]]]) -> str:
    points = [{"run": name, "model": MODEL_LABELS.get(key, key), "latency_ms": model["latency_ms"]["p50"],
               "accuracy": model["accuracy"], "latency_source": model.get("latency_source", "measured")}
              for name, report in runs for key, model in report["models"].items()]
    svg = plots.accuracy_latency_svg(points, title="Accuracy against latency, every model of every run")
    body = []
    for row in rows(runs):
        body.append([
            escape(row["run"]), escape(row["target"]) + f"<br><small>{escape(row['device'])}</small>",
            f"{escape(row['model'])}<br><small>{escape(row['arch'])}</small>", escape(row["precision"]),
            f"{row['accuracy'] * 100:.2f}%", f"{row['teacher_accuracy'] * 100:.2f}%",
            f"{row['p50_ms']:.4f} {source_badge(row['latency_source'])}",
            f"{row['teacher_p50_ms']:.4f} {source_badge(row['teacher_latency_source'])}",
            f"{_optional(row['speedup'], '.2f')}x", _optional(row["size_mb"], ".3f"),
            f"{_optional(row['budget_ms'], '.4f')} " + ('<span class="met">met</span>' if row["budget_met"]
                                                        else '<span class="missed">MISSED</span>'),
            _optional(row["load_ms"], ".1f"), _optional(row["peak_memory_mb"], ".1f")])
    predicted = [row["run"] for row in rows(runs) if not measured({"latency_source": row["latency_source"]})]
    banner = (f'<div class="banner"><strong>PREDICTED latencies</strong> in {escape(", ".join(predicted))}: those '
              "devices were not attached; compare them with measured runs as estimates only.</div>") if predicted else ""
    sections = [
        "<h1>edgekd: runs compared</h1>", banner,
        plot_block(svg, "accuracy against latency of every run"),
        table(["run", "target", "deployed", "precision", "accuracy", "teacher accuracy", "p50 ms", "teacher p50 ms",
               "speed-up", "size MB", "budget", "first load ms", "peak memory MB"], body,
              numeric=(4, 5, 6, 7, 8, 9, 11, 12)),
        "<p>Each run's own page (report.html in its run dir) has the per-layer times, the latency distribution "
        "and the search.</p>",
    ]
    return page("edgekd: runs compared", sections, version=__version__)


def write_comparison(run_dirs: list[str | Path], html_path: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Check every input and the output paths, then write the page and the Markdown table."""
    runs = load_runs(run_dirs)
    html_path, md_path = output_paths(Path(html_path), overwrite=overwrite)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(md_path, render_markdown(runs))
    write_text(html_path, render_html(runs))
    return html_path, md_path
