"""Checks that a rendered report shows no latency without its source."""

from __future__ import annotations

import re

from edgekd.latency.source import SOURCES


def unlabelled_latencies(text: str) -> list[str]:
    """Each "<number> ms" not followed by a source label (nor part of the budget, which is a
    requirement, not a latency)."""
    labels = "|".join(re.escape(source) for source in SOURCES)
    bad = []
    for match in re.finditer(r"(\d+\.\d+) ms(?! (?:" + labels + "))", text):
        context = text[max(0, match.start() - 40): match.end() + 5]
        if "Budget" in context or "budget" in context or "within" in context:
            continue
        bad.append(context)
    return bad
