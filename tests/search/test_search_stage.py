"""Search stage: the budget, the choice from the front, finalists measured on the device, and
re-selection after a budget miss. Latency is faked by parameter count here (the real measured
and predicted paths run end to end in tests/cli); the study, the space and the scores are real."""

from __future__ import annotations

import json

import pytest
import torch

from edgekd.config import load_recipe, to_dict
from edgekd.errors import UserError
from edgekd.latency import on_target
from edgekd.latency.source import MEASURED, TABLE, Latency
from edgekd.models import count_params
from edgekd.results import BenchResult, ModelBench
from edgekd.run import RunContext, RunSpec
from edgekd.search import stage as search
from edgekd.search.reselect import reselect
from edgekd.target import load_target

SPACE = ["search.families=['resnet']", "search.depth_options=[1]", "search.score='params'",
         "search.latency='measured'", "search.trials=12"]


def make_ctx(tmp_path, overrides=(), budget_ms=None) -> RunContext:
    target = load_target("x86-cpu")
    recipe = load_recipe(None, ["teacher.arch='resnet_xs'", "teacher.epochs=1", *SPACE, *overrides], target.bench)
    spec = RunSpec(target=to_dict(target), recipe=to_dict(recipe), budget_ms=budget_ms)
    return RunContext.create(tmp_path / "run", spec)


def fake_latency(by_params: dict[int, float], measured: list | None = None):
    """Latency as a function of parameter count (the largest model is the slowest), the teacher
    at 10 ms; records every measured name. Stands in for edgekd.latency.on_target.measure_on_target."""

    def measure(target, model, example_input, precision, *, name, **_):
        if measured is not None:
            measured.append(name)
        return Latency(10.0 if name == "teacher" else by_params[count_params(model)], MEASURED)

    return measure


def fake_device(monkeypatch, measure) -> None:
    monkeypatch.setattr(on_target, "measure_on_target", measure)


def sizes_of(ctx) -> list[int]:
    """Parameter counts of the space's distinct candidates, smallest first."""
    from edgekd.models import build_model
    from edgekd.search.space import resnet_record

    settings = ctx.recipe.search
    return sorted({count_params(build_model(resnet_record(settings, w, [1, 1, 1], ctx.target.channel_multiple), 1, 10))
                   for w in settings.width_multipliers})


def test_chooses_the_best_score_under_budget_with_margin(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5,1.0,2.0]", "search.latency_margin=0.8"], budget_ms=1.0)
    sizes = sizes_of(ctx)
    # the largest needs 0.85 ms: under the budget, but not under budget x margin (0.8 ms)
    fake_device(monkeypatch, fake_latency(dict(zip(sizes, [0.2, 0.5, 0.85]))))
    result = search.run(ctx)
    assert result.candidates == 3 and result.fitting == 2
    assert result.chosen_measured == Latency(0.5, MEASURED)
    assert [p.latency.ms for p in result.front] == [0.5, 0.2]  # best score first
    assert result.budget.origin == "--budget-ms"
    arch = json.loads((ctx.run_dir / "search" / "arch.json").read_text())
    assert arch["name"] == result.chosen and (ctx.run_dir / "search" / "study.db").is_file()


def test_default_budget_is_teacher_latency_over_speedup(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5]", "search.trials=2"])
    fake_device(monkeypatch, fake_latency({sizes_of(ctx)[0]: 1.0}))
    result = search.run(ctx)
    assert result.budget.ms == pytest.approx(4.0)  # 10 ms teacher / default speed-up 2.5
    assert result.budget.origin == "teacher fp32 p50 10.0000 ms measured / 2.5"
    assert result.budget.teacher == Latency(10.0, MEASURED)


def test_an_unreachable_default_budget_is_relaxed_to_the_fastest_students_and_said(tmp_path, monkeypatch):
    # teacher 10 ms / speed-up 20 = 0.5 ms: no student gets there; without --budget-ms that is
    # not an error, the fastest students are chosen among and the budget's source says why.
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5,1.0,2.0]", "search.default_speedup=20.0"])
    fake_device(monkeypatch, fake_latency(dict(zip(sizes_of(ctx), [1.0, 1.05, 3.0]))))
    result = search.run(ctx)
    assert result.limit_ms == pytest.approx(1.1)  # fastest x RELAXED_BAND
    assert {p.latency.ms for p in result.front} <= {1.0, 1.05}
    assert result.chosen_latency.ms == 1.05  # the better-scoring of the two fast ones
    assert "unreachable on x86-cpu" in result.budget.origin and "1.0000 ms measured" in result.budget.origin


def test_a_budget_below_the_fastest_candidate_names_it(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5,1.0]"], budget_ms=0.1)
    fake_device(monkeypatch, fake_latency(dict(zip(sizes_of(ctx), [0.3, 0.7]))))
    with pytest.raises(UserError, match=r"the fastest was resnet_w16-16-32_d111 at 0.3000 ms measured"):
        search.run(ctx)


def test_reselect_after_a_miss_takes_the_next_student_that_should_fit(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5,1.0,1.5,2.0]", "search.max_attempts=3"], budget_ms=1.0)
    latencies = dict(zip(sizes_of(ctx), [0.1, 0.3, 0.5, 0.7]))
    fake_device(monkeypatch, fake_latency(latencies))
    result = search.run(ctx)
    ctx.mark_done("search", result)
    assert result.chosen_latency.ms == 0.7
    # The artifact measured 2x over the budget in bench: the next student must be ~2x faster
    # (0.35 ms on the search's scale), so 0.5 is skipped and 0.3 is tried.
    shipped = ModelBench(arch="a", precision="fp32", params=1, macs=1, latency=Latency(2.0, MEASURED),
                         throughput_ips=None, throughput_batch=8, accuracy=0.9, accuracy_source="x", size_mb=1.0,
                         artifact="a.xml")
    bench = BenchResult(models={"teacher": shipped, "student_fp32": shipped}, conditions={})
    assert reselect(ctx, bench)
    result = ctx.result("search")
    assert result.chosen_measured == Latency(0.3, MEASURED)
    assert [a.student for a in result.attempts] == [result.front[0].name]
    assert result.attempts[0].bench_latency == Latency(2.0, MEASURED)
    assert json.loads((ctx.run_dir / "search" / "arch.json").read_text())["name"] == result.chosen
    # attempts are bounded: the second miss still tries (attempt 3 of 3), the third stops
    assert reselect(ctx, bench) and not reselect(ctx, bench)
    assert len(ctx.result("search").attempts) == 3
    # the typed result survives state.json
    ctx.save_state()
    assert RunContext.load(ctx.run_dir).result("search").attempts == result.attempts


def test_unknown_score_or_latency_source_fails_before_any_work(tmp_path):
    with pytest.raises(UserError, match=r"search.score 'diswat' is unknown \(did you mean 'diswot'\?\); known: diswot"):
        make_ctx(tmp_path / "a", ["search.score='diswat'"])
    with pytest.raises(UserError, match="search.latency 'guessed'"):
        make_ctx(tmp_path / "b", ["search.latency='guessed'"])


def test_predicted_latency_comes_from_the_targets_table(tmp_path, monkeypatch):
    """A recorded table covering the space: no block is timed, every trial's latency is the
    table's sum (labelled predicted), and only the finalist is measured."""
    from edgekd.latency.lut import LatencyTable, block_features, table_path
    from edgekd.latency.predictor import LatencyPredictor
    from edgekd.models.blocks import block_key
    from edgekd.search.space import space_block_specs

    ctx = make_ctx(tmp_path, ["search.width_multipliers=[0.5,1.0]", "search.latency='predicted'",
                              "search.finalists=1"], budget_ms=1.0)
    settings = ctx.recipe.search
    table = LatencyTable(target="x86-cpu", backend="openvino", backend_version=_openvino_version(),
                         precision="int8", input_shape=[1, 8, 8], threads=None, overhead_ms=0.05)
    for spec in space_block_specs(settings, 1, 10, (8, 8), ctx.target.channel_multiple):
        table.blocks[block_key(spec)] = {"spec": spec, "ms": block_features(spec)["macs"] / 1e7}
    table.save(table_path("x86-cpu", "int8", (1, 8, 8)))
    measured = []
    fake_device(monkeypatch, lambda *args, name, **_: measured.append(name) or Latency(0.1, MEASURED))
    result = search.run(ctx)
    candidates = json.loads((ctx.run_dir / "search" / "candidates.json").read_text())
    predictor = LatencyPredictor.load("x86-cpu", (1, 8, 8), "int8", 10)
    for candidate in candidates:
        assert candidate["latency_source"] == TABLE
        assert candidate["latency_ms"] == pytest.approx(predictor.predict_ms(candidate["record"]))
    assert measured == ["teacher", result.chosen]  # the budget's teacher, then one finalist
    assert result.chosen_estimate.source == TABLE and result.chosen_measured == Latency(0.1, MEASURED)


def _openvino_version() -> str:
    from edgekd.backends import get_backend

    return get_backend("openvino").version()


def test_a_tensorrt_target_behind_a_runner_is_timed_from_its_onnx(tmp_path, monkeypatch):
    """No TensorRT here, a Jetson behind ssh://: the search sends the candidate's ONNX (a Q/DQ
    ONNX for INT8) to the device, which builds and times the engine (the device is stood in for by
    a function that records what it was sent)."""
    import onnx

    from edgekd.measure import LatencyStats

    target = load_target("jetson-orin")
    target.runner = "ssh://nvidia@jetson.invalid"
    recipe = load_recipe(None, ["teacher.arch='resnet_xs'", "teacher.epochs=1", *SPACE], target.bench)
    ctx = RunContext.create(tmp_path / "run", RunSpec(target=to_dict(target), recipe=to_dict(recipe)))
    sent = []

    def device(target, path, backend, warmup, runs, threads, batch=1):
        sent.append(path)
        return LatencyStats(p50_ms=0.1, p90_ms=0.1, p99_ms=0.1, mean_ms=0.1, min_ms=0.1, runs=runs, warmup=warmup,
                            batch=batch)

    monkeypatch.setattr(on_target, "benchmark_on_target", device)
    from edgekd.models import build_model
    from edgekd.search.timing import measure_latency

    assert measure_latency(ctx, build_model("resnet_xs", 1, 10).eval(), "int8", "probe") == Latency(
        0.1, MEASURED, p90_ms=0.1, p99_ms=0.1, device="ssh://nvidia@jetson.invalid")
    assert measure_latency(ctx, build_model("resnet_xs", 1, 10).eval(), "fp16", "probe").ms == 0.1
    int8, fp16 = sent
    assert int8.name == "probe-int8.trt.onnx" and fp16.name == "probe-fp16.trt.onnx"
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "QuantizeLinear" in ops
    assert "QuantizeLinear" not in {node.op_type for node in onnx.load(str(fp16)).graph.node}


class _UserTeacher(torch.nn.Module):
    """Not a built-in record: a stem, two residual blocks, a classifier (as a pickled teacher)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU())
        self.blocks = torch.nn.Sequential(_Residual(16), _Residual(16))
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class _Residual(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv(x))


def test_students_cut_from_a_teacher_module_are_measured_beside_a_table(tmp_path, monkeypatch, caplog):
    """A teacher module without a record gives "derived" candidates; the latency table has no
    plan for them, so they are measured while the built-in candidates are predicted."""
    import logging

    from edgekd.latency.lut import LatencyTable, block_features, table_path
    from edgekd.models.blocks import block_key
    from edgekd.search.space import space_block_specs
    from edgekd.teacher.resolve import Teacher

    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path / "benchmarks"))
    ctx = make_ctx(tmp_path, ["search.families=['resnet','teacher-derived']", "search.width_multipliers=[0.5]",
                              "search.latency='auto'", "search.trials=16", "search.finalists=1"], budget_ms=1.0)
    torch.manual_seed(0)
    ctx.__dict__["teacher"] = Teacher(_UserTeacher().eval(), None, "t.pt (pickle)", 0.5)
    table = LatencyTable(target="x86-cpu", backend="openvino", backend_version=_openvino_version(),
                         precision="int8", input_shape=[1, 8, 8], threads=None, overhead_ms=0.05)
    for spec in space_block_specs(ctx.recipe.search, 1, 10, (8, 8), ctx.target.channel_multiple):
        table.blocks[block_key(spec)] = {"spec": spec, "ms": block_features(spec)["macs"] / 1e7}
    table.save(table_path("x86-cpu", "int8", (1, 8, 8)))
    measured = []
    fake_device(monkeypatch, lambda *args, name, **_: measured.append(name) or Latency(0.1, MEASURED))
    with caplog.at_level(logging.INFO, logger="edgekd.search"):
        result = search.run(ctx)
    candidates = json.loads((ctx.run_dir / "search" / "candidates.json").read_text())
    sources = {c["record"]["family"]: c["latency_source"] for c in candidates}
    assert sources == {"derived": MEASURED, "resnet": TABLE}
    derived = [c["name"] for c in candidates if c["record"]["family"] == "derived"]
    assert all(name.startswith("derived_w") for name in derived) and set(derived) <= set(measured)
    assert sum("cannot plan students cut from the teacher module" in r.getMessage() for r in caplog.records) == 1
    assert result.chosen in {c["name"] for c in candidates}
