"""bench's per-artifact profile: what it returns for each backend, and that a failure to profile
says so instead of failing the measurement beside it."""

from __future__ import annotations

import pytest
import torch
from backends.tiny_cnn import TinyCNN  # tests/ is on sys.path (tests/conftest.py)

from edgekd.bench.profile import profile_artifact


def test_an_openvino_ir_gets_per_layer_load_and_memory(tmp_path):
    ovb = pytest.importorskip("edgekd.backends.openvino")
    path = ovb.export(TinyCNN().eval(), torch.rand(1, 1, 8, 8), tmp_path / "m.xml", metadata={})
    result = profile_artifact("openvino", path, warmup=2, runs=5)
    assert set(result) == {"per_layer", "load_ms", "first_inference_ms", "peak_memory_mb", "memory_includes",
                           "memory_method"}
    assert result["per_layer"]["runs"] == 5 and result["per_layer"]["layers"]


def test_a_broken_artifact_is_reported_not_raised(tmp_path):
    pytest.importorskip("edgekd.backends.openvino")
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>")
    result = profile_artifact("openvino", broken, warmup=1, runs=1)
    assert list(result) == ["profile_error"] and "broken.xml" in result["profile_error"]


def test_backends_without_counters_here_say_why(tmp_path):
    assert "not measured for onnxruntime" in profile_artifact("onnx", tmp_path / "m.onnx", warmup=1, runs=1)["profile_unavailable"]
    unbuilt = profile_artifact("tensorrt", tmp_path / "m.engine", warmup=1, runs=1)["profile_unavailable"]
    assert "no TensorRT engine was built here" in unbuilt
