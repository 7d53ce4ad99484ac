"""The report's plots, drawn with matplotlib into inline SVG (text kept as text, so the page is
searchable and a predicted value's label is real text in the plot).

Each function takes plain data and returns an `<svg>` string, or None when there is nothing to
draw. A latency that was not measured is drawn hollow and its legend entry says "predicted".
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from edgekd.errors import UserError

_WIDTH_IN, _HEIGHT_IN = 7.0, 3.6
_PRECISION_COLOURS = {"INT8": "#2a9d8f", "FP32": "#e76f51", "FP16": "#e9c46a", "BF16": "#f4a261"}
_OTHER_COLOUR = "#8d99ae"


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # a core dependency, but an environment may have been installed without it
        raise UserError("matplotlib is not installed (edgekd draws report.html's plots with it): "
                        "pip install matplotlib") from exc

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _svg(fig, name: str) -> str:
    """The figure as an inline <svg> element; `name` salts matplotlib's element ids, so that two
    plots on one page never share an id."""
    import matplotlib

    plt = _pyplot()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "edgekd"})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: not allowed inline
    # matplotlib numbers its groups per figure ("axes_1"): prefix every id and reference to one, so
    # that the ids of a page's plots stay unique.
    prefix = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + "-"
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', text)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", text)


def _figure(height_in: float = _HEIGHT_IN):
    fig, ax = _pyplot().subplots(figsize=(_WIDTH_IN, height_in))
    ax.grid(True, alpha=0.3)
    return fig, ax


def is_measured(source: str | None) -> bool:
    return (source or "measured") == "measured"


def pareto_svg(front: Sequence[dict[str, Any]], *, chosen: str | None, budget_ms: float | None,
               score_name: str, finalists: Sequence[dict[str, Any]] = ()) -> str | None:
    """The search's Pareto front: score (higher is better) against latency; the chosen student
    ringed; the budget as a vertical line; finalists' measured latency where it differs."""
    if not front:
        return None
    fig, ax = _figure()
    for measured, marker_face, label in ((True, "#264653", "front, latency measured"),
                                         (False, "none", "front, latency PREDICTED")):
        points = [p for p in front if is_measured(p.get("latency_source")) == measured]
        if points:
            ax.scatter([p["latency_ms"] for p in points], [p["score"] for p in points], s=36,
                       facecolors=marker_face, edgecolors="#264653", label=label, zorder=3)
    ax.plot([p["latency_ms"] for p in front], [p["score"] for p in front], color="#264653", alpha=0.3, zorder=2)
    for point in front:
        if point["name"] == chosen:
            ax.scatter([point["latency_ms"]], [point["score"]], s=160, facecolors="none", edgecolors="#e63946",
                       linewidths=2, label=f"chosen: {chosen}", zorder=4)
    measured_finalists = [f for f in finalists if f.get("measured_ms") is not None
                          and not is_measured(f.get("latency_source"))]
    scores = {p["name"]: p["score"] for p in front}
    for finalist in measured_finalists:
        if finalist["name"] in scores:
            ax.scatter([finalist["measured_ms"]], [scores[finalist["name"]]], marker="x", color="#e76f51",
                       label="finalist, measured", zorder=4)
    if budget_ms:
        ax.axvline(budget_ms, color="#e63946", linestyle="--", label=f"budget {budget_ms:.4f} ms")
    ax.set_xlabel("latency, ms (p50, batch 1)")
    ax.set_ylabel(f"score: {score_name} (no training)")
    ax.set_title("Student search: Pareto front")
    _dedup_legend(ax)
    return _svg(fig, "pareto")


def histogram_svg(timings_ms: dict[str, Sequence[float]], *, bins: int = 40) -> str | None:
    """Distribution of every timed call, one panel per artifact (their scales differ by 10x),
    with its p50 and p99 marked; the slowest 0.5% are gathered in the last bin and counted."""
    import numpy as np

    series = {label: np.asarray(values, dtype=float) for label, values in timings_ms.items() if values}
    if not series:
        return None
    fig, axes = _pyplot().subplots(len(series), 1, figsize=(_WIDTH_IN, 1.5 + 1.3 * len(series)), squeeze=False)
    for ax, (label, values), colour in zip(axes[:, 0], series.items(), ("#264653", "#e76f51", "#2a9d8f", "#e9c46a")):
        p50, p99, high = np.percentile(values, [50, 99, 99.5])
        high = max(high, values.min() * 1.01 + 1e-9)
        clipped = int((values > high).sum())
        ax.hist(np.clip(values, None, high), bins=bins, color=colour, alpha=0.85)
        ax.axvline(p50, color="#1d2433", linestyle="--", linewidth=1)
        ax.axvline(p99, color="#1d2433", linestyle=":", linewidth=1)
        note = f"; {clipped} slower calls in the last bin" if clipped else ""
        ax.set_title(f"{label}: p50 {p50:.4f} ms (dashed), p99 {p99:.4f} ms (dotted), {len(values)} calls{note}",
                     fontsize=9, loc="left")
        ax.set_ylabel("calls", fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("latency of one call, ms (measured, batch 1)")
    fig.tight_layout()
    return _svg(fig, "histogram")


def layers_svg(layers: Sequence[dict[str, Any]], *, title: str, top: int = 15) -> str | None:
    """The `top` slowest layers as horizontal bars, coloured by the precision they ran in."""
    ranked = sorted(layers, key=lambda layer: layer["median_ms"], reverse=True)[:top]
    if not ranked:
        return None
    fig, ax = _figure(max(2.2, 0.28 * len(ranked) + 1.0))
    names = [_short(layer.get("origin") or layer["name"]) for layer in reversed(ranked)]
    colours = [_PRECISION_COLOURS.get(layer["precision"], _OTHER_COLOUR) for layer in reversed(ranked)]
    ax.barh(names, [layer["median_ms"] for layer in reversed(ranked)], color=colours)
    from matplotlib.patches import Patch

    legend = [Patch(color=_PRECISION_COLOURS.get(precision, _OTHER_COLOUR), label=f"ran in {precision}")
              for precision in sorted({layer["precision"] for layer in ranked})]
    ax.set_xlabel("median time per inference, ms (measured, per-layer counters)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(handles=legend, fontsize=8, loc="lower right")
    return _svg(fig, f"layers-{title}")


def predicted_vs_measured_svg(points: Sequence[dict[str, Any]]) -> str | None:
    """Each record of the target: its PREDICTED latency against the latency then measured."""
    pairs = [p for p in points if p.get("predicted_ms") is not None and p.get("measured_p50_ms") is not None]
    if not pairs:
        return None
    fig, ax = _figure()
    predicted = [p["predicted_ms"] for p in pairs]
    measured = [p["measured_p50_ms"] for p in pairs]
    ax.scatter(predicted, measured, color="#264653", s=30, label="a measured architecture")
    top = max(*predicted, *measured) * 1.05
    ax.plot([0, top], [0, top], color="#8d99ae", linestyle="--", label="prediction = measurement")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("PREDICTED latency, ms (before measuring)")
    ax.set_ylabel("measured latency, ms (p50)")
    ax.set_title("Predicted vs measured, from the target's latency records")
    ax.legend(fontsize=8)
    return _svg(fig, "predicted-vs-measured")


def accuracy_latency_svg(points: Sequence[dict[str, Any]], *, title: str) -> str | None:
    """Accuracy against latency: one point per (run, model), colour per run; a predicted latency
    is hollow and says so in the legend and beside the point."""
    if not points:
        return None
    fig, ax = _figure(4.2)
    runs = list(dict.fromkeys(p["run"] for p in points))
    palette = ("#264653", "#e76f51", "#2a9d8f", "#e9c46a", "#6d597a", "#8d99ae")
    for index, run in enumerate(runs):
        colour = palette[index % len(palette)]
        for measured in (True, False):
            chosen = [p for p in points if p["run"] == run and is_measured(p["latency_source"]) == measured]
            if not chosen:
                continue
            ax.scatter([p["latency_ms"] for p in chosen], [p["accuracy"] * 100 for p in chosen], s=50,
                       color=colour, facecolors=colour if measured else "none", linewidths=1.6,
                       label=f"{run}: latency {'measured' if measured else 'PREDICTED'}")
            for p in chosen:
                ax.annotate(p["model"] + ("" if measured else " (predicted)"), (p["latency_ms"], p["accuracy"] * 100),
                            textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour)
    ax.set_xlabel("latency, ms (p50, batch 1)")
    ax.set_ylabel("test accuracy of the artifact, %")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _svg(fig, "accuracy-latency")


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _dedup_legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
