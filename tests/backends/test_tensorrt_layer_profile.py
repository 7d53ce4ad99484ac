"""Per-layer time and precision of a TensorRT engine from trtexec's exported files
(--exportProfile, --exportLayerInfo, --exportTimes) and its log. The files in tests/backends/data
are in TensorRT 10's layout (and one profile in 8.5's, before medianMs), written for a small Q/DQ
student whose third convolution was left in FP16."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.backends.tensorrt import layer_profile as trt_profile
from edgekd.backends.tensorrt.trtexec import find_trtexec
from edgekd.errors import UserError

DATA = Path(__file__).parent / "data"


def test_profile_keeps_execution_order_and_median_times():
    profile = trt_profile.parse_profile(DATA / "trtexec_10_profile.json")
    assert profile["count"] == 200 and len(profile["layers"]) == 8
    assert profile["layers"][0]["name"] == "/conv1/input_quantizer/QuantizeLinear"
    conv3 = profile["layers"][3]
    assert (conv3["average_ms"], conv3["median_ms"], conv3["percentage"]) == (0.01024, 0.010208, 31.25)
    assert conv3["total_ms"] == pytest.approx(conv3["average_ms"] * 200)


def test_a_profile_from_before_tensorrt_8_6_has_no_median_and_uses_the_average():
    profile = trt_profile.parse_profile(DATA / "trtexec_8_5_profile.json")
    assert [layer["median_ms"] for layer in profile["layers"]] == [0.01, 0.006]


def test_layer_info_gives_each_layers_precision_from_its_formats_and_weights():
    info = trt_profile.parse_layer_info(DATA / "trtexec_10_layer_info.json")
    conv1 = info["conv1.weight + /conv1/weight_quantizer/QuantizeLinear + /conv1/Conv + /Relu"]
    assert (conv1["parameter_type"], conv1["precision"], conv1["weights"]) == ("Convolution", "INT8", "INT8")
    assert conv1["tactic"].startswith("sm87_xmma_fprop_implicit_gemm_interleaved_i8i8")
    assert info["/conv3/Conv + /Relu_2"]["weights"] == "FP16"
    assert info["/conv1/input_quantizer/QuantizeLinear"]["precision"] == "FP32"  # reads FP32, writes INT8
    assert info["/GlobalAveragePool"]["precision"] == "FP16"


@pytest.mark.parametrize("text, precision", [
    ("Row major linear FP32", "FP32"), ("Row major Int8 format", "INT8"),
    ("Thirty-two wide channel vectorized row major Int8 format", "INT8"),
    ("Channel major FP16 format where channel % 8 == 0", "FP16"), ("Row major linear BFloat16 format", "BF16"),
    ("Row major linear FP8 format", "FP8"), ("Half", "FP16"), ("Float", "FP32"), ("Unknown format", None),
])
def test_format_strings(text, precision):
    assert trt_profile.format_precision(text) == precision


def test_joined_per_layer_names_the_compute_layer_that_fell_back():
    per_layer = trt_profile.per_layer(trt_profile.parse_profile(DATA / "trtexec_10_profile.json"),
                                      trt_profile.parse_layer_info(DATA / "trtexec_10_layer_info.json"))
    assert per_layer["runs"] == 200 and len(per_layer["layers"]) == 8
    assert per_layer["compute_float"] == ["/conv3/Conv + /Relu_2"]
    assert len(per_layer["compute_int8"]) == 3  # conv1, conv2 and the classifier
    assert sum(layer["share"] for layer in per_layer["layers"]) == pytest.approx(1.0, abs=1e-3)
    assert per_layer["total_ms"] == pytest.approx(sum(layer["median_ms"] for layer in per_layer["layers"]), abs=1e-4)


def test_names_only_layer_info_leaves_precision_unknown():
    info = trt_profile.parse_layer_info(DATA / "trtexec_names_only_layer_info.json")
    assert info["/fc/Gemm"] == {"type": None, "precision": None, "weights": None, "tactic": None}
    per_layer = trt_profile.per_layer(trt_profile.parse_profile(DATA / "trtexec_8_5_profile.json"), info)
    assert {layer["precision"] for layer in per_layer["layers"]} == {"unknown"}


def test_times_and_load_stats():
    times = trt_profile.parse_times(DATA / "trtexec_10_times.json")
    assert len(times) == 20 and times[:2] == [0.06, 0.061]
    stats = trt_profile.load_stats_from_log((DATA / "trtexec_10_load_log.txt").read_text())
    assert stats["load_ms"] == pytest.approx(21.4)
    assert stats["gpu_memory_mb"] == pytest.approx(3 * 1.048576, abs=0.01)  # MiB -> MB
    assert trt_profile.load_stats_from_log("no such lines") == {"load_ms": None, "gpu_memory_mb": None,
                                                                "cpu_memory_mb": None}


def test_files_of_the_wrong_kind_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not a trtexec --exportProfile"):
        trt_profile.parse_profile(DATA / "trtexec_10_layer_info.json")
    with pytest.raises(UserError, match="not a trtexec --exportLayerInfo"):
        trt_profile.parse_layer_info(DATA / "trtexec_10_profile.json")
    with pytest.raises(UserError, match="not a trtexec --exportTimes"):
        trt_profile.parse_times(DATA / "trtexec_10_profile.json")
    broken = tmp_path / "p.json"
    broken.write_text("[{")
    with pytest.raises(UserError, match="could not read"):
        trt_profile.parse_profile(broken)


def test_profile_command_exports_the_three_files_from_a_separate_profile_run(tmp_path):
    command = trt_profile.build_trtexec_profile_command(Path("s.engine"), tmp_path, runs=100, warmup_ms=200,
                                                        shapes="input:1x1x8x8")
    assert command[:3] == ["trtexec", "--loadEngine=s.engine", "--shapes=input:1x1x8x8"]
    for flag in ("--iterations=100", "--separateProfileRun", "--profilingVerbosity=detailed",
                 f"--exportProfile={tmp_path / 'profile.json'}", f"--exportLayerInfo={tmp_path / 'layer_info.json'}",
                 f"--exportTimes={tmp_path / 'times.json'}"):
        assert flag in command


@pytest.mark.skipif(find_trtexec() is None, reason="trtexec is not installed here (TensorRT host only)")
def test_profile_engine_on_a_tensorrt_host(tmp_path):  # pragma: no cover - needs TensorRT
    engine = Path(__import__("os").environ.get("EDGEKD_TEST_ENGINE", ""))
    if not engine.is_file():
        pytest.skip("set EDGEKD_TEST_ENGINE to a TensorRT engine to profile")
    result = trt_profile.profile_engine(engine, tmp_path, runs=20, warmup_ms=100)
    assert result["per_layer"]["layers"] and result["timings_ms"] and result["load_ms"] > 0
