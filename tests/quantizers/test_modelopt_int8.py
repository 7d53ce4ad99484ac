"""ModelOpt INT8 for TensorRT on a tiny real residual CNN trained on real digits: PTQ, a QAT step,
weights-only save/load, the Q/DQ ONNX TensorRT builds from (checked by TensorRT's rules and run in
onnxruntime against the fake-quantized torch model), and excluded layers."""

from __future__ import annotations

import pytest
import torch
from residual_cnn import ResidualCNN, train_steps_

from edgekd.errors import UserError
from edgekd.models import build_model
from edgekd.quantizers import get_quantizer

pytest.importorskip("modelopt", reason="nvidia-modelopt is not installed (pip install 'edgekd[tensorrt]')")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'edgekd[onnx]')")
mo = get_quantizer("modelopt")

from edgekd.backends import onnx as onnx_backend  # noqa: E402
from edgekd.backends.tensorrt.qdq import qdq_problems


@pytest.fixture(scope="module")
def quantized(float_model, data):
    return mo.prepare_int8(float_model, data[0][:256])


@pytest.fixture(scope="module")
def onnx_path(quantized, data, tmp_path_factory):
    return mo.export_onnx(quantized, data[0][:1], tmp_path_factory.mktemp("modelopt") / "int8.onnx")


def test_quantizers_follow_tensorrt_placement(quantized, float_model):
    enabled = set(mo.enabled_quantizers(quantized))
    # Inputs and weights of every conv/linear, the residual add's skip input; nothing else.
    assert enabled == {
        f"{layer}.{kind}_quantizer"
        for layer in ("stem", "conv", "fc")
        for kind in ("input", "weight")
    } | {"add_residual.input_quantizer"}
    assert not float_model.training and not any(
        "quantizer" in name for name, _ in float_model.named_modules()
    ), "prepare_int8 must quantize a copy"


def test_qat_step_changes_weights_and_keeps_accuracy(quantized, data):
    import copy

    x, y = data
    model = copy.deepcopy(quantized)
    before = model.network.conv.weight.detach().clone()
    amax_before = model.network.conv.input_quantizer.amax.clone()
    train_steps_(model, x, y, steps=5, lr=1e-3)
    assert not torch.equal(model.network.conv.weight, before)
    # Scales are fixed after calibration (ModelOpt's default): QAT trains the weights around them.
    assert torch.equal(model.network.conv.input_quantizer.amax, amax_before)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.8


def test_save_load_round_trip_is_exact(quantized, data, tmp_path):
    path = tmp_path / "student_int8.pt"
    mo.save_int8(quantized, path)
    torch.load(path, weights_only=True)  # a plain-data checkpoint: no code unpickled
    loaded = mo.load_int8(ResidualCNN(), path)
    with torch.no_grad():
        assert torch.equal(loaded(data[0]), quantized(data[0]))
    assert mo.enabled_quantizers(loaded) == mo.enabled_quantizers(quantized)


def test_onnx_has_standard_signed_qdq_that_tensorrt_accepts(onnx_path):
    graph = onnx.load(str(onnx_path)).graph
    ops = [node.op_type for node in graph.node]
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 7
    assert qdq_problems(onnx.load(str(onnx_path))) == []
    values = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    zero_points = [values[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert all(zp.dtype.name == "int8" and not zp.any() for zp in zero_points)


def test_residual_add_takes_a_quantized_skip_and_a_float_conv_branch(onnx_path):
    graph = onnx.load(str(onnx_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    (add,) = [node for node in graph.node if node.op_type == "Add"]
    # TensorRT fuses conv+BN+add into one INT8 conv when the skip input is Q/DQ'd and the
    # conv branch is not (its output stays inside the fused kernel).
    assert sorted(producer[name].op_type for name in add.input) == [
        "BatchNormalization",
        "DequantizeLinear",
    ]


def test_onnxruntime_agrees_with_the_fake_quantized_torch_model(quantized, onnx_path, data):
    result = onnx_backend.compare_with_torch(quantized, onnx_path, data[0])
    assert result["samples"] == 1797
    # Measured: 1.0 (all 1,797 digits), max |logit diff| 0.083 (a rounding tie now and then).
    assert result["argmax_agreement"] >= 0.995
    assert result["max_abs_diff"] < 0.5


def test_a_deep_copy_saves_and_loads_too(quantized, data, tmp_path):
    import copy

    copied = copy.deepcopy(quantized)  # as a training loop keeping its best model might
    mo.save_int8(copied, tmp_path / "copy.pt")
    loaded = mo.load_int8(ResidualCNN(), tmp_path / "copy.pt")
    with torch.no_grad():
        assert torch.equal(loaded(data[0][:64]), quantized(data[0][:64]))


def test_exclude_keeps_the_named_layer_in_float(float_model, data, tmp_path):
    model = mo.prepare_int8(float_model, data[0][:64], exclude=["conv"])
    enabled = mo.enabled_quantizers(model)
    assert not any(name.startswith("conv.") for name in enabled)
    assert "stem.weight_quantizer" in enabled and "fc.input_quantizer" in enabled
    # The add's conv branch runs in float now: no INT8 fusion for a quantized skip to join.
    assert "add_residual.input_quantizer" not in enabled
    mo.save_int8(model, tmp_path / "excluded.pt")
    assert mo.enabled_quantizers(mo.load_int8(ResidualCNN(), tmp_path / "excluded.pt")) == enabled


def test_unknown_exclude_name_lists_close_ones(float_model, data):
    with pytest.raises(UserError, match=r"'conv_1' \(close: conv\).*no such module"):
        mo.prepare_int8(float_model, data[0][:8], exclude=["conv_1"])


def test_edgekd_resnet_exports_tensorrt_ready_qdq(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet_xs", 1, 10).eval()
    quantized = mo.prepare_int8(model, torch.rand(32, 1, 8, 8))
    path = mo.export_onnx(quantized, torch.rand(1, 1, 8, 8), tmp_path / "resnet_xs_int8.onnx")
    onnx_model = onnx.load(str(path))
    assert qdq_problems(onnx_model) == []
    producer = {out: node.op_type for node in onnx_model.graph.node for out in node.output}
    adds = [node for node in onnx_model.graph.node if node.op_type == "Add"]
    assert len(adds) == 3  # one per residual block, each with one Q/DQ'd (skip) input
    assert all([producer[i] for i in add.input].count("DequantizeLinear") == 1 for add in adds)
    result = onnx_backend.compare_with_torch(quantized, path, torch.rand(64, 1, 8, 8))
    assert result["argmax_agreement"] >= 0.95
