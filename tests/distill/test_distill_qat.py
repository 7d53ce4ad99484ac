"""The distill stage with QAT (NNCF, the x86-cpu target's quantizer) and a feature loss: the
feature layers are hooked again in the fake-quantized copy. Kept apart from test_distill.py so
each file stays within about a minute on the shared machine."""

from __future__ import annotations

from test_distill_stage import make_ctx

from edgekd.distill import stage as distill


def test_qat_distill_with_attention_transfer(tmp_path, one_torch_thread):
    # one fp32 epoch: the 2-epoch fp32 distill is test_distill.py's; this one is about QAT
    ctx = make_ctx(tmp_path, ["distill.feature_loss='at'", "distill.feature_layers=['stages.1', 'stages.2']",
                              "distill.epochs=1", "distill.calibration_samples=32"], precision="int8")
    metrics = distill.run(ctx)
    assert metrics.feature_kd["student_layers"] == ["stages.1", "stages.2"]
    assert metrics.feature_kd["teacher_layers"] == ["stages.1", "stages.2"]
    assert metrics.int8_epochs == 1 and 0.0 < metrics.int8_val_accuracy <= 1.0
    assert (ctx.run_dir / "distill" / distill.INT8_CHECKPOINT).is_file()
