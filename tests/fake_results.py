"""Stage results made by hand, for tests that run one stage without the ones before it."""

from __future__ import annotations

from typing import Any

from edgekd.latency.source import MEASURED, Latency
from edgekd.results import Budget, FrontPoint, SearchResult


def search_result(arch: dict[str, Any], *, budget_ms: float = 1000.0, latency_ms: float = 0.1) -> SearchResult:
    """A search that chose `arch` (a record with a "name"), measured at `latency_ms`."""
    latency = Latency(latency_ms, MEASURED)
    name = arch.get("name", "student")
    return SearchResult(
        budget=Budget(budget_ms, "--budget-ms", Latency(1.0, MEASURED)), limit_ms=budget_ms * 0.8, score="params",
        study="none", latency_setting="measured", latency_mode="measured", trials=1, candidates=1, fitting=1,
        front=[FrontPoint(name, 1.0, latency, 1)], front_index=0, finalists=[], chosen=name,
        chosen_arch={"name": name, **arch}, chosen_score=1.0, chosen_estimate=latency, chosen_measured=latency)
