import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_cnn import TinyCNN

from edgekd.backends import get_backend
from edgekd.errors import UserError

ov = pytest.importorskip("openvino")
from edgekd.backends import openvino as ovb  # noqa: E402 - after the skip: it imports openvino

REPO_ROOT = Path(__file__).resolve().parents[2]
METADATA = {"teacher": "resnet18", "stage": "distil", "note": 'odd "chars" & <more>'}



@pytest.fixture(scope="module")
def fp32_ir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ov") / "student.xml"
    return ovb.export(model, torch.rand(1, 1, 8, 8), path, metadata=METADATA)


def test_import_backends_does_not_import_runtimes():
    code = (
        "import edgekd.backends, sys; "
        "assert 'openvino' not in sys.modules, 'openvino imported'; "
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_get_backend():
    assert get_backend("openvino").NAME == "openvino"
    with pytest.raises(UserError, match="openvino.*onnx"):
        get_backend("tflite")


def test_export_writes_xml_and_bin(fp32_ir):
    assert fp32_ir.exists() and fp32_ir.with_suffix(".bin").exists()
    assert ovb.size_mb(fp32_ir) > 0


def test_export_keeps_fp32_weights_and_model_mode(fp32_ir, tmp_path):
    # compress_to_fp16=False: no f16 constants in the IR
    types = {
        op.get_output_element_type(0).get_type_name()
        for op in ov.Core().read_model(fp32_ir).get_ops()
        if op.get_type_name() == "Constant"
    }
    assert "f16" not in types

    training_model = TinyCNN().train()
    ovb.export(training_model, torch.rand(1, 1, 8, 8), tmp_path / "m.xml", metadata={})
    assert training_model.training


def test_metadata_round_trips(fp32_ir):
    assert ovb.read_metadata(fp32_ir) == METADATA


def test_dynamic_batch(fp32_ir, samples):
    assert ovb.predict_logits(fp32_ir, samples[:5]).shape == (5, 10)
    assert ovb.predict_logits(fp32_ir, samples[:1].numpy()).shape == (1, 10)


def test_logits_match_torch(model, fp32_ir, samples):
    with torch.no_grad():
        expected = model(samples).numpy()
    # batch_size=20 also exercises a short last chunk
    actual = ovb.predict_logits(fp32_ir, samples, batch_size=20)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_accuracy_against_torch_labels(model, fp32_ir, samples):
    with torch.no_grad():
        labels = model(samples).argmax(dim=1)
    assert ovb.accuracy(fp32_ir, samples, labels) == 1.0
    assert ovb.accuracy(fp32_ir, samples, (labels + 1) % 10) == 0.0


def test_benchmark(fp32_ir):
    stats = ovb.benchmark(fp32_ir, warmup=2, runs=10)
    assert stats.runs == 10 and stats.warmup == 2 and stats.batch == 1
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.p50_ms < 1000

    stats_b4 = ovb.benchmark(fp32_ir, warmup=2, runs=10, batch=4, threads=1)
    assert stats_b4.batch == 4


def test_compile_with_fixed_batch(fp32_ir):
    compiled = ovb.compile(fp32_ir, batch=4, threads=1)
    assert list(compiled.input(0).get_shape()) == [4, 1, 8, 8]
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert "f32" in ovb.precision_note()


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ovb.read_metadata(tmp_path / "nope.xml")


class RaisingForward(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("this model cannot run")


class UnsupportedOp(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.eig(x)[0].real


def test_conversion_failure_is_user_error(tmp_path):
    x = torch.rand(1, 1, 8, 8)
    prefix = "OpenVINO cannot convert this model: "
    with pytest.raises(UserError, match=prefix + "this model cannot run"):
        ovb.export(RaisingForward(), x, tmp_path / "bad.xml", metadata={})
    with pytest.raises(UserError, match=prefix + ".*aten::linalg_eig"):
        ovb.export(UnsupportedOp(), x, tmp_path / "eig.xml", metadata={})


def test_a_failed_conversion_leaves_the_root_loggers_level_alone(tmp_path):
    root = logging.getLogger()
    before = root.level
    with pytest.raises(UserError):
        ovb.export(UnsupportedOp(), torch.rand(1, 1, 8, 8), tmp_path / "eig.xml", metadata={})
    assert root.level == before


@pytest.fixture(scope="module")
def quantized_model(model):
    nncf = pytest.importorskip("nncf")
    torch.manual_seed(2)
    return nncf.quantize(model, nncf.Dataset([torch.rand(8, 1, 8, 8)]), subset_size=8)


def test_int8_export(quantized_model, samples, tmp_path):
    path = ovb.export(
        quantized_model,
        torch.rand(1, 1, 8, 8),
        tmp_path / "int8.xml",
        metadata={"precision": "int8"},
    )
    op_types = [op.get_type_name() for op in ov.Core().read_model(path).get_ops()]
    assert "FakeQuantize" in op_types
    assert ovb.read_metadata(path) == {"precision": "int8"}
    assert ovb.size_mb(path) > 0

    with torch.no_grad():
        expected = quantized_model(samples).numpy()
    actual = ovb.predict_logits(path, samples)
    agreement = np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))
    assert agreement >= 0.9
    # Reported accuracy must not change from one evaluation to the next (see predict_logits).
    np.testing.assert_array_equal(actual, ovb.predict_logits(path, samples))
