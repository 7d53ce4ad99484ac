"""The distill stage's INT8 paths: PTQ only (distill.mode=ptq) from a calibration manifest, the
sensitivity analysis that keeps costly layers in float, and augmented training whose teacher
outputs come from the on-disk cache (a second run does not run the teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_distill_stage import make_ctx

from edgekd.distill import stage as distill
from edgekd.errors import UserError

SAMPLE_MANIFEST = Path(__file__).resolve().parents[2] / "calibration" / "samples" / "digits-20" / "manifest.yaml"


def test_ptq_mode_calibrates_from_a_manifest_and_trains_no_int8_epoch(tmp_path, one_torch_thread):
    ctx = make_ctx(tmp_path, ["distill.mode='ptq'", f"distill.calibration='{SAMPLE_MANIFEST}'"], precision="int8")
    metrics = distill.run(ctx)
    assert metrics.int8_mode == "ptq" and metrics.int8_epochs == 0
    assert metrics.int8_val_accuracy == metrics.int8_ptq_val_accuracy > 0.5
    assert metrics.calibration == str(SAMPLE_MANIFEST)
    assert (ctx.run_dir / "distill" / distill.INT8_CHECKPOINT).is_file()


def test_sensitivity_threshold_writes_its_report_and_records_the_exclusions(tmp_path, one_torch_thread):
    # Analyse two layers only, to keep the test short; a threshold of 100 points excludes nothing.
    ctx = make_ctx(tmp_path, ["distill.mode='ptq'", "distill.sensitivity_threshold_pt=100.0",
                              "distill.sensitivity_layers=['stem.0', 'fc']"], precision="int8")
    metrics = distill.run(ctx)
    report = json.loads((ctx.run_dir / "distill" / "sensitivity.json").read_text())
    assert {row["layer"] for row in report["layers"]} == {"stem.0", "fc"}
    assert metrics.int8_excluded == report["excluded"] == []


def test_an_unknown_int8_mode_fails_when_the_recipe_is_read(tmp_path):
    with pytest.raises(UserError, match=r"distill.mode 'qta' is unknown \(did you mean 'qat'\?\); known: qat, ptq"):
        make_ctx(tmp_path, ["distill.mode='qta'"], precision="int8")
    assert not (tmp_path / "run").exists()


def test_augmented_distill_reuses_the_cached_teacher_outputs(tmp_path, one_torch_thread):
    first = distill.run(make_ctx(tmp_path / "a", ["distill.augment=True"]))
    cache = Path(first.teacher_cache)
    files = sorted(cache.glob("*.npz"))
    assert first.augment is True and len(files) == 2  # one file per augmentation epoch trained
    stamps = [f.stat().st_mtime_ns for f in files]
    second = distill.run(make_ctx(tmp_path / "b", ["distill.augment=True"]))
    assert second.teacher_cache == first.teacher_cache
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.npz"))] == stamps  # read, not rewritten
    assert second.fp32_history == first.fp32_history  # same seed, same augmentation, same teacher outputs
