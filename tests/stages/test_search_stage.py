"""Search: the candidate space, and the choice "largest that fits" (selection logic with given
latencies; real measured latencies are covered end to end in tests/cli)."""

from __future__ import annotations

import pytest

from edgekd.config import load_recipe, load_target, to_dict
from edgekd.errors import UserError
from edgekd.models import count_params
from edgekd.run import RunContext, RunSpec
from edgekd.stages import search


def make_ctx(tmp_path, overrides=(), budget_ms=None) -> RunContext:
    target = load_target("x86-cpu")
    recipe = load_recipe(None, ["teacher.arch='resnet_xs'", "teacher.epochs=1", *overrides], target.bench)
    spec = RunSpec(target=to_dict(target), recipe=to_dict(recipe), budget_ms=budget_ms)
    return RunContext.create(tmp_path / "run", spec)


def test_candidate_space_rounds_to_the_channel_multiple_and_dedups(tmp_path):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.05,0.1,1.0]", "search.depth_options=[1,2]"])
    candidates = search.candidate_space(ctx)
    # 0.05 and 0.1 of resnet_s both round up to 8 channels everywhere: one candidate per depth.
    assert len(candidates) == 4
    for record in candidates:
        assert all(width % 8 == 0 for width in [record["stem"], *record["widths"]])
    assert {tuple(c["depths"]) for c in candidates} == {(1, 1, 1), (2, 2, 2)}


def fake_latency(latencies: dict[int, float]):
    """Latency by parameter count, and the teacher at 10 ms."""

    def measure(ctx, model, precision, name):
        return 10.0 if name == "teacher" else latencies[count_params(model)]

    return measure


def test_chooses_the_largest_candidate_under_budget_with_margin(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5,1.0,2.0]", "search.depth_options=[1]",
                              "search.latency_margin=0.8"], budget_ms=1.0)
    sizes = [count_params(search.build_model(c, 1, 10)) for c in search.candidate_space(ctx)]
    # the largest needs 0.85 ms: under the budget, but not under budget x margin (0.8 ms)
    monkeypatch.setattr(search, "measure_latency_ms", fake_latency(dict(zip(sizes, [0.2, 0.5, 0.85]))))
    metrics = search.run(ctx)
    assert metrics["candidates"] == 3 and metrics["fitting"] == 2
    assert metrics["chosen_p50_ms"] == 0.5
    assert metrics["budget_source"] == "--budget-ms"


def test_default_budget_is_teacher_latency_over_speedup(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5]", "search.depth_options=[1]"])
    size = count_params(search.build_model(search.candidate_space(ctx)[0], 1, 10))
    monkeypatch.setattr(search, "measure_latency_ms", fake_latency({size: 1.0}))
    metrics = search.run(ctx)
    assert metrics["budget_ms"] == pytest.approx(4.0)  # 10 ms teacher / default speed-up 2.5
    assert "teacher fp32 p50" in metrics["budget_source"]


def test_no_candidate_fits_names_the_fastest(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5,1.0]", "search.depth_options=[1]"], budget_ms=0.1)
    sizes = [count_params(search.build_model(c, 1, 10)) for c in search.candidate_space(ctx)]
    monkeypatch.setattr(search, "measure_latency_ms", fake_latency(dict(zip(sizes, [0.3, 0.7]))))
    with pytest.raises(UserError, match=r"the fastest was resnet_w8-16-32_d111 at 0.3000 ms"):
        search.run(ctx)
