"""OpenVINO's per-layer counters (PERF_COUNT) with each layer's execution precision, and the
first-load time and peak memory of an IR measured in a fresh process, on a tiny real CNN in fp32
and quantized to INT8 by NNCF."""

from __future__ import annotations

import pytest
import torch

ovb = pytest.importorskip("edgekd.backends.openvino")
from edgekd.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def irs(model, tmp_path_factory):
    nncf = pytest.importorskip("nncf")
    folder = tmp_path_factory.mktemp("irs")
    torch.manual_seed(2)
    quantized = nncf.quantize(model, nncf.Dataset([torch.rand(8, 1, 8, 8)]), subset_size=8)
    example = torch.rand(1, 1, 8, 8)
    return {"fp32": ovb.export(model, example, folder / "fp32.xml", metadata={}),
            "int8": ovb.export(quantized, example, folder / "int8.xml", metadata={})}


@pytest.mark.parametrize("exec_type, precision", [
    ("brgconv_avx512_I8", "INT8"), ("jit_avx2_FP32", "FP32"), ("gemm_mlas_f32", "FP32"), ("jit_uni_u8", "INT8"),
    ("brgconv_avx512_amx_bf16", "BF16"), ("ref_any_f16", "FP16"), ("undef", "other"),
])
def test_execution_precision_from_the_kernel_name(exec_type, precision):
    assert ovb.execution_precision(exec_type) == precision


def test_an_int8_ir_runs_its_convolutions_in_int8(irs):
    profile = ovb.profile_layers(irs["int8"], warmup=2, runs=10)
    layers = {layer["name"]: layer for layer in profile["layers"]}
    convolutions = [layer for layer in layers.values() if layer["type"] == "Convolution"]
    assert len(convolutions) == 2 and all(layer["precision"] == "INT8" for layer in convolutions)
    assert len(profile["compute_int8"]) >= 2 and profile["compute_float"] == []
    assert all(layer["origin"].startswith(("conv", "fc", "__")) or layer["origin"] == layer["name"]
               for layer in profile["layers"])
    assert {layer["origin"].split(" ")[0] for layer in convolutions} == {"conv1", "conv2"}  # the torch modules


def test_an_fp32_ir_has_no_int8_layer_and_the_times_add_up(irs):
    profile = ovb.profile_layers(irs["fp32"], warmup=2, runs=10)
    assert profile["compute_int8"] == [] and len(profile["compute_float"]) >= 3  # 2 convs + the classifier
    assert {layer["precision"] for layer in profile["layers"]} <= {"FP32", "other"}
    assert profile["runs"] == 10 and profile["total_ms"] > 0
    assert sum(layer["share"] for layer in profile["layers"]) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError):
        ovb.profile_layers(irs["fp32"], warmup=0, runs=0)


def test_load_time_and_peak_memory_come_from_a_fresh_process(irs):
    load = ovb.measure_load(irs["int8"])
    assert load["load_ms"] > 0 and load["first_inference_ms"] > 0
    # The CPU plugin alone takes tens of MB; a fresh process cannot have it already loaded.
    assert 5 < load["peak_memory_mb"] < 2000
    assert "not the Python interpreter" in load["memory_includes"] and load["memory_method"]


def test_a_broken_ir_is_a_one_line_error(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>")
    with pytest.raises(UserError, match="could not load broken.xml in a fresh process"):
        ovb.measure_load(broken)
