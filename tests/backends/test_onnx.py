import numpy as np
import pytest
import torch

from edgekd.backends import get_backend
from edgekd.errors import UserError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from edgekd.backends import onnx as onnxb  # noqa: E402 - after the skip: it imports onnxruntime

METADATA = {"teacher": "resnet18", "stage": "distil"}



@pytest.fixture(scope="module")
def fp32_onnx(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "student.onnx"
    return onnxb.export(model, torch.rand(1, 1, 8, 8), path, metadata=METADATA)


def test_get_backend():
    assert get_backend("onnx").NAME == "onnx"
    assert onnxb.version()


def test_export_fp32(fp32_onnx):
    assert fp32_onnx.exists()
    assert onnxb.size_mb(fp32_onnx) > 0
    graph = onnx.load(str(fp32_onnx)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]


def test_metadata_round_trips(fp32_onnx):
    assert onnxb.read_metadata(fp32_onnx) == METADATA


def test_dynamic_batch(fp32_onnx, samples):
    assert onnxb.predict_logits(fp32_onnx, samples[:5]).shape == (5, 10)
    assert onnxb.predict_logits(fp32_onnx, samples[:1].numpy()).shape == (1, 10)


def test_logits_match_torch(model, fp32_onnx, samples):
    with torch.no_grad():
        expected = model(samples).numpy()
    actual = onnxb.predict_logits(fp32_onnx, samples, batch_size=20)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_accuracy_against_torch_labels(model, fp32_onnx, samples):
    with torch.no_grad():
        labels = model(samples).argmax(dim=1)
    assert onnxb.accuracy(fp32_onnx, samples, labels) == 1.0


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        onnxb.predict_logits(tmp_path / "nope.onnx", np.zeros((1, 1, 8, 8)))


class RaisingForward(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("this model cannot run")


def test_export_failure_is_user_error(tmp_path):
    with pytest.raises(UserError, match="ONNX cannot export this model: this model cannot run"):
        onnxb.export(RaisingForward(), torch.rand(1, 1, 8, 8), tmp_path / "bad.onnx", metadata={})


@pytest.fixture(scope="module")
def quantized_model(model):
    nncf = pytest.importorskip("nncf")
    torch.manual_seed(2)
    return nncf.quantize(model, nncf.Dataset([torch.rand(8, 1, 8, 8)]), subset_size=8)


def test_int8_export(quantized_model, samples, tmp_path):
    path = onnxb.export(
        quantized_model,
        torch.rand(1, 1, 8, 8),
        tmp_path / "int8.onnx",
        metadata={"precision": "int8"},
    )
    op_types = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types
    assert onnxb.read_metadata(path) == {"precision": "int8"}

    with torch.no_grad():
        expected = quantized_model(samples).numpy()
    actual = onnxb.predict_logits(path, samples)
    agreement = np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))
    assert agreement >= 0.9
    # the caller's model still carries its NNCF quantizers (strip worked on a copy)
    assert "__nncf_hooks" in dict(quantized_model.named_children())
