"""The distill stage on the embedded digits: feature KD in fp32 and in QAT, layer names checked
before any training, and the MEAL V2 recipe with a teacher-initialised student. Search is not run:
its result (the chosen student) is written into the run state, so each test distils only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_results import search_result

from edgekd.config import load_recipe, to_dict
from edgekd.distill import stage as distill
from edgekd.errors import UserError
from edgekd.models import build_model, resolve_arch
from edgekd.models.derived import derive_from_record
from edgekd.run import RunContext, RunSpec
from edgekd.target import load_target

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FAST = ["teacher.arch='resnet_xs'", "teacher.epochs=1", "distill.epochs=2", "distill.qat_epochs=1",
        "distill.calibration_samples=64", "distill.patience=2"]


def make_ctx(tmp_path, overrides=(), *, precision="fp32", student="resnet_xs", recipe=None) -> RunContext:
    target = load_target("x86-cpu")
    target.precision = precision
    settings = load_recipe(recipe, [*FAST, *overrides], target.bench)
    ctx = RunContext.create(tmp_path / "run", RunSpec(target=to_dict(target), recipe=to_dict(settings)))
    arch = resolve_arch(student) if isinstance(student, str) else student
    ctx.mark_done("search", search_result({"name": arch.get("name", "derived"), **arch}))
    return ctx


def test_fp32_distill_with_fitnets_saves_a_student_without_adapters(tmp_path, one_torch_thread):
    ctx = make_ctx(tmp_path, ["distill.feature_loss='fitnets'"])
    metrics = distill.run(ctx)
    assert metrics.feature_kd == {"loss": "fitnets", "weight": 100.0,
                                     "student_layers": ["stages.0", "stages.1", "stages.2"],
                                     "teacher_layers": ["stages.0", "stages.1", "stages.2"]}
    history = metrics.fp32_history
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    saved = torch.load(ctx.run_dir / "distill" / distill.FP32_CHECKPOINT, weights_only=True)
    assert saved.keys() == build_model("resnet_xs", 1, 10).state_dict().keys()


def test_a_missing_layer_fails_before_training_and_lists_close_names(tmp_path):
    ctx = make_ctx(tmp_path, ["distill.feature_loss='fitnets'", "distill.feature_layers=['stages.1']",
                              "distill.teacher_layers=['stage.1']"])
    with pytest.raises(UserError, match=r"'stage.1' does not exist in the teacher; close names: stages.1"):
        distill.run(ctx)
    assert not (ctx.run_dir / "distill" / distill.FP32_CHECKPOINT).exists()


def test_meal_v2_recipe_starts_a_teacher_derived_student_from_the_teacher(tmp_path, one_torch_thread):
    derived = derive_from_record(resolve_arch("resnet_xs"), 8, width_ratios=[0.5])
    student = next(r for r in derived if r["widths"] == [8, 8, 16])  # the teacher's 8-16-32, thinned
    ctx = make_ctx(tmp_path, ["distill.feature_loss='nd'"], student=student,
                   recipe=RECIPES / "meal-v2.yaml")
    assert ctx.recipe.distill.alpha == 1.0 and ctx.recipe.distill.init == "teacher"
    metrics = distill.run(ctx)
    assert metrics.init == "teacher"
    assert metrics.feature_kd["student_layers"] == ["fc"]
    history = metrics.fp32_history
    assert history[1]["loss"] < history[0]["loss"]
