"""CoreML W8A8 (coremltools' LinearQuantizer) on a tiny real residual CNN trained on real digits:
PTQ, a QAT step, weights-only save/load, excluded layers, and the ML Program it converts to
(validated, with quantize/dequantize ops). CoreML prediction needs macOS and is skipped elsewhere."""

from __future__ import annotations

import copy
import platform

import pytest
import torch
from residual_cnn import ResidualCNN, train_steps_

from edgekd.errors import UserError
from edgekd.quantizers import get_quantizer

pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'edgekd[coreml]')")
cq = get_quantizer("coreml")
from edgekd.backends import coreml as cmb  # noqa: E402 - after the skip: it imports coremltools

ON_MACOS = platform.system() == "Darwin"


@pytest.fixture(scope="module")
def quantized(float_model, data):
    return cq.prepare_int8(float_model, data[0][:256])


@pytest.fixture(scope="module")
def package(quantized, data, tmp_path_factory):
    path = tmp_path_factory.mktemp("coreml_w8a8") / "student_int8.mlpackage"
    # As the export stage writes it: the quantizer's export_mlpackage, the target's iOS17.
    return cq.export_mlpackage(quantized, data[0][:1], path, metadata={"precision": "int8"},
                               compute_units="ALL", deployment_target="iOS17")


def test_prepare_quantizes_a_copy_weights_and_activations(quantized, float_model, data):
    names = cq.fake_quantizers(quantized)
    assert {f"graph_module.{layer}.weight_fake_quant" for layer in ("stem", "conv", "fc")} <= set(names)
    assert sum("activation_post_process" in name for name in names) >= 5
    assert not any("fake_quant" in name for name, _ in float_model.named_modules())
    assert not quantized.training and not float_model.training
    with torch.no_grad():  # PTQ alone keeps the digits recognised
        assert (quantized(data[0]).argmax(1) == data[1]).float().mean() > 0.8


def test_eval_does_not_move_scales_but_training_does(quantized, data):
    x, y = data
    model = copy.deepcopy(quantized)
    with torch.no_grad():
        first, _ = model(x[:64]), model(x[:64] * 3)  # the second call is outside the calibrated range
        assert torch.equal(model(x[:64]), first)  # observers frozen in eval mode
    before = model.graph_module.conv.weight.detach().clone()
    weight_scale = model.graph_module.conv.weight_fake_quant.scale.clone()
    train_steps_(model, x, y, steps=5, lr=1e-2)  # QAT: weights move, their scales follow
    assert not torch.equal(model.graph_module.conv.weight, before)
    assert not torch.equal(model.graph_module.conv.weight_fake_quant.scale, weight_scale)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.8


def test_save_load_round_trip_is_exact(quantized, data, tmp_path):
    path = tmp_path / "student_int8.pt"
    cq.save_int8(quantized, path)
    torch.load(path, weights_only=True)  # a plain-data checkpoint: no code unpickled
    loaded = cq.load_int8(ResidualCNN(), path)
    with torch.no_grad():
        assert torch.equal(loaded(data[0]), quantized(data[0]))


def test_exclude_keeps_the_named_layer_in_float(float_model, data):
    model = cq.prepare_int8(float_model, data[0][:64], exclude=["conv"])
    names = cq.fake_quantizers(model)
    assert "graph_module.conv.weight_fake_quant" not in names
    assert "graph_module.stem.weight_fake_quant" in names


def test_unknown_exclude_name_lists_close_ones(float_model, data):
    with pytest.raises(UserError, match=r"'stemm' \(close: stem\).*no such module"):
        cq.prepare_int8(float_model, data[0][:8], exclude=["stemm"])


def test_finalized_model_follows_the_fake_quantized_one(quantized, data):
    finalized = cq.finalize(copy.deepcopy(quantized))  # a copy finalizes too (training loops copy)
    assert not quantized.training
    with torch.no_grad():
        agreement = (finalized(data[0]).argmax(1) == quantized(data[0]).argmax(1)).float().mean()
    assert agreement >= 0.99  # measured: 1.0 on all 1,797 digits


def test_w8a8_package_validates_and_holds_quantize_ops(package):
    assert cmb.validate(package, input_shape=(1, 1, 8, 8), num_classes=10)["spec_version"] >= 8
    ops = cmb.op_inventory(package)
    # Activations: quantize/dequantize ops (Core ML 7, iOS17); weights: int8 constants.
    assert ops.get("quantize", 0) >= 5 and ops.get("dequantize", 0) >= 5
    assert ops.get("constexpr_affine_dequantize", 0) == 3  # stem, conv, fc
    assert ops["conv"] == 2 and ops["add"] == 1
    assert cmb.read_metadata(package) == {"precision": "int8"}


def test_w8a8_export_rejects_targets_before_ios17_and_palettizing(quantized, data, tmp_path):
    with pytest.raises(UserError, match="iOS17"):
        cmb.export(quantized, data[0][:1], tmp_path / "a.mlpackage", metadata={},
                   deployment_target="iOS16")
    with pytest.raises(UserError, match="iOS17"):
        cq.export_mlpackage(quantized, data[0][:1], tmp_path / "c.mlpackage", metadata={},
                            deployment_target="macOS13")
    with pytest.raises(UserError, match="palettizing"):
        cmb.export(quantized, data[0][:1], tmp_path / "b.mlpackage", metadata={},
                   precision="palettized")


@pytest.mark.skipif(not ON_MACOS, reason="CoreML prediction is only supported on macOS")
def test_w8a8_package_predicts_like_torch_on_macos(quantized, package, data):
    logits = cmb.predict_logits(package, data[0][:256], compute_units="CPU_ONLY")
    with torch.no_grad():
        expected = quantized(data[0][:256]).argmax(1).numpy()
    assert (logits.argmax(1) == expected).mean() >= 0.95
