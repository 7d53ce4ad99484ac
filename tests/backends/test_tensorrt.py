"""TensorRT backend: what runs without TensorRT is tested here for real (trtexec command lines,
output parsing, Q/DQ ONNX for INT8, Jetson state); engine build and timing need TensorRT and a
GPU and are skipped where they are missing."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_cnn import TinyCNN

from edgekd.backends import get_backend
from edgekd.backends import tensorrt as trtb
from edgekd.backends.tensorrt import api as tensorrt_api
from edgekd.backends.tensorrt import jetson
from edgekd.backends.tensorrt import qdq as tensorrt_qdq
from edgekd.backends.tensorrt import trtexec as trtx
from edgekd.backends.tensorrt.trtexec_output import (
    decode_version_tag,
    parse_trtexec_output,
)
from edgekd.errors import MissingDependencyError, UserError

DATA = Path(__file__).parent / "data"
HAVE_TENSORRT = tensorrt_api.trt is not None or trtx.find_trtexec() is not None
needs_tensorrt = pytest.mark.skipif(
    not HAVE_TENSORRT,
    reason="TensorRT is not installed on this machine (no wheel reachable, no GPU)",
)



def test_get_backend_imports_without_tensorrt():
    # Only building and timing need TensorRT; the module itself must import anywhere.
    assert get_backend("tensorrt").NAME == "tensorrt"


# --- trtexec command lines --------------------------------------------------------------------


def build(**overrides):
    kwargs = {"precision": "fp16", "input_name": "input", "input_shape": (1, 3, 32, 32)}
    kwargs.update({"max_batch": 8, **overrides})
    return trtx.build_trtexec_command(Path("m.onnx"), Path("m.engine"), **kwargs)


def test_trtexec_fp16_with_dynamic_batch():
    assert build() == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--fp16",
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:8x3x32x32",
        "--maxShapes=input:8x3x32x32",
    ]


def test_trtexec_fp32_sets_no_precision_flag():
    command = build(precision="fp32", max_batch=1)
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(command)
    assert "--optShapes=input:1x3x32x32" in command


def test_trtexec_int8_tensorrt10_uses_the_int8_flag_and_fp16_for_unquantized_layers():
    command = build(precision="int8")
    assert "--int8" in command and "--fp16" in command
    assert "--stronglyTyped" not in command


@pytest.mark.parametrize("precision", ["fp16", "int8", "fp32"])
def test_trtexec_strongly_typed_has_no_precision_flags(precision):
    # TensorRT 11 removed --fp16/--int8: the precision must come from the ONNX itself.
    command = build(precision=precision, strongly_typed=True)
    assert "--stronglyTyped" in command
    assert not {"--fp16", "--int8"} & set(command)


def test_trtexec_sparsity_timing_cache_workspace(tmp_path):
    cache = tmp_path / "timing.cache"
    command = build(sparsity=True, timing_cache=cache, workspace_mb=1024, trtexec="/opt/trtexec")
    assert command[0] == "/opt/trtexec"
    assert "--sparsity=enable" in command
    assert f"--timingCacheFile={cache}" in command
    assert "--memPoolSize=workspace:1024" in command


def test_trtexec_sparsity_is_off_unless_asked_and_joins_int8():
    assert not any(arg.startswith("--sparsity") for arg in build(precision="int8"))
    command = build(precision="int8", sparsity=True)
    assert {"--int8", "--fp16", "--sparsity=enable"} <= set(command)


def test_trtexec_rejects_bad_precision_and_batch():
    with pytest.raises(UserError, match="precision must be one of"):
        build(precision="int4")
    with pytest.raises(UserError, match="max_batch"):
        build(max_batch=0)


def test_builder_flags_match_trtexec_flags():
    assert trtx.builder_flags("fp16", sparsity=True, strongly_typed=False) == [
        "FP16",
        "SPARSE_WEIGHTS",
    ]
    assert trtx.builder_flags("int8", sparsity=False, strongly_typed=False) == ["INT8", "FP16"]
    assert trtx.builder_flags("int8", sparsity=False, strongly_typed=True) == []


def test_network_creation_flags_per_version():
    flags = SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    fake_trt = SimpleNamespace(NetworkDefinitionCreationFlag=flags)
    assert tensorrt_api.network_creation_flags(fake_trt, 8, strongly_typed=False) == 1 << 0
    assert tensorrt_api.network_creation_flags(fake_trt, 10, strongly_typed=False) == 0
    assert tensorrt_api.network_creation_flags(fake_trt, 10, strongly_typed=True) == 1 << 1
    assert tensorrt_api.network_creation_flags(fake_trt, 11, strongly_typed=True) == 0
    assert trtb.strongly_typed_for("11.4.1") and not trtb.strongly_typed_for("10.3.0")


def test_trtexec_benchmark_command():
    command = trtx.build_trtexec_benchmark_command(
        Path("m.engine"), runs=100, warmup_ms=200, shapes="input:4x3x32x32"
    )
    assert command == [
        "trtexec",
        "--loadEngine=m.engine",
        "--shapes=input:4x3x32x32",
        "--warmUp=200",
        "--iterations=100",
        "--duration=0",
        "--avgRuns=1",
        "--percentile=50,90,99",
        "--useSpinWait",
    ]


# --- trtexec output ---------------------------------------------------------------------------


def test_parse_default_percentiles():
    result = parse_trtexec_output((DATA / "trtexec_10_default_percentiles.txt").read_text())
    assert result["tensorrt_version"] == "10.3.0"
    assert result["throughput_qps"] == 130.298
    assert result["latency_ms"] == {
        "min": 5.38672,
        "max": 13.3664,
        "mean": 7.60628,
        "median": 7.16092,
        "percentiles": {"90": 10.2996, "95": 10.8698, "99": 12.9675},
    }
    assert result["gpu_compute_ms"] == {
        "min": 5.34595,
        "max": 13.3388,
        "mean": 7.58404,
        "median": 7.14139,
        "percentiles": {"90": 10.2881, "95": 10.8175, "99": 12.9485},
    }
    assert result["enqueue_time_ms"]["median"] == 7.86694
    assert result["h2d_latency_ms"]["percentiles"]["99"] == 0.0515137
    assert result["d2h_latency_ms"]["min"] == 0.00390625
    assert result["total_host_walltime_s"] == 3.00082
    assert result["total_gpu_compute_time_s"] == 2.96536
    assert (result["warmup_queries"], result["warmup_ms"], result["timing_queries"]) == (
        26,
        200,
        391,
    )


def test_parse_custom_percentiles_and_latency_stats():
    result = parse_trtexec_output((DATA / "trtexec_10_custom_percentiles.txt").read_text())
    assert result["tensorrt_version"] == "10.3.0"
    assert result["throughput_qps"] == 32.7261
    assert result["latency_ms"]["percentiles"] == {"50": 30.7585, "90": 30.8303, "99": 30.8523}
    assert result["gpu_compute_ms"]["percentiles"] == {"50": 30.333, "90": 30.4037, "99": 30.4204}
    assert result["h2d_latency_ms"]["mean"] == 0.247712
    assert result["d2h_latency_ms"]["max"] == 0.187988
    assert result["total_gpu_compute_time_s"] == 3.06355

    stats = trtx.latency_stats_from_trtexec(result, batch=1, runs=100)
    assert (stats.p50_ms, stats.p90_ms, stats.p99_ms) == (30.7585, 30.8303, 30.8523)
    assert (stats.mean_ms, stats.min_ms) == (30.7571, 30.1348)
    assert (stats.runs, stats.warmup, stats.batch) == (101, 7, 1)


def test_latency_stats_need_p90_and_p99():
    result = parse_trtexec_output((DATA / "trtexec_10_default_percentiles.txt").read_text())
    stats = trtx.latency_stats_from_trtexec(result, batch=2, runs=10)
    assert stats.p50_ms == 7.16092  # no percentile(50%): the median stands in
    del result["latency_ms"]["percentiles"]["99"]
    with pytest.raises(UserError, match="could not parse trtexec output"):
        trtx.latency_stats_from_trtexec(result, batch=2, runs=10)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        (
            "&&&& FAILED TensorRT.trtexec [TensorRT v100300] # trtexec",
            "no '=== Performance summary",
        ),
        ("[I] === Performance summary ===\n[I] Throughput: 3 qps\n", "'latency_ms'"),
        (
            "=== Performance summary ===\nThroughput: 3 qps\nLatency: min = 1 ms, max = 2 ms\n",
            "'mean', 'median'",
        ),
    ],
)
def test_parse_errors(text, reason):
    with pytest.raises(UserError, match="could not parse trtexec output: .*" + reason):
        parse_trtexec_output(text)


def test_version_tag():
    assert decode_version_tag(100300) == "10.3.0"
    assert decode_version_tag(101602) == "10.16.2"
    assert decode_version_tag(8601) == "8.6.1"


# --- Jetson state, missing TensorRT -----------------------------------------------------------


@pytest.mark.skipif(Path("/etc/nv_tegra_release").exists(), reason="this machine is a Jetson")
def test_jetson_state_off_jetson_is_unknown():
    assert jetson.jetson_state() == {
        "nvpmodel_mode": "unknown",
        "nvpmodel_id": "unknown",
        "jetson_clocks": "unknown",
        "l4t": "unknown",
        "jetpack": "unknown",
    }


def test_jetson_state_parses_release_file(tmp_path, monkeypatch):
    release = tmp_path / "nv_tegra_release"
    release.write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    )
    monkeypatch.setattr(jetson, "_TEGRA_RELEASE", release)
    assert jetson.jetson_state()["l4t"] == "36.4.3"


@pytest.fixture
def no_tensorrt(monkeypatch):
    # trt is looked up in backends.tensorrt; trtexec (shutil.which, then the fallback paths) in
    # backends.tensorrt_trtexec, whose fallback paths backends.tensorrt also reads for its message.
    monkeypatch.setattr(tensorrt_api, "trt", None)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.setattr(trtx, "_TRTEXEC_FALLBACK_PATHS", ())


def test_missing_tensorrt_names_the_extra_and_trtexec(no_tensorrt, tmp_path):
    with pytest.raises(MissingDependencyError) as info:
        trtb.export(TinyCNN(), torch.rand(1, 1, 8, 8), tmp_path / "m.engine", metadata={})
    message = str(info.value)
    assert "pip install 'edgekd[tensorrt]'" in message
    assert "trtexec was not found on PATH" in message
    assert "\n" not in message
    assert not list(tmp_path.iterdir())  # nothing written before the check
    with pytest.raises(MissingDependencyError):
        trtb.version()


def test_benchmark_without_trtexec_is_missing_dependency(no_tensorrt, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(MissingDependencyError, match="edgekd\\[tensorrt\\]"):
        trtb.benchmark(engine, warmup=2, runs=10)


def test_benchmark_of_an_onnx_builds_its_engine_first_int8_for_qdq(tmp_path, monkeypatch):
    """On a device reached over SSH, edgekd copies the ONNX (no engine can be built on a host
    without TensorRT); the device builds the engine beside it, once, in the ONNX's precision."""
    import onnx
    from onnx import TensorProto, helper

    def write(path, with_qdq):
        nodes = [helper.make_node("Identity", ["input"], ["logits"])]
        if with_qdq:
            nodes = [helper.make_node("QuantizeLinear", ["input", "s"], ["q"]),
                     helper.make_node("DequantizeLinear", ["q", "s"], ["logits"])]
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 8, 8])],
            [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])])
        onnx.save(helper.make_model(graph), str(path))
        return path

    built = []

    def fake_build(onnx_path, engine_path, *, precision, input_chw, max_batch, **_):
        built.append((Path(onnx_path).name, Path(engine_path).name, precision, input_chw, max_batch))
        Path(engine_path).write_bytes(b"plan")
        return Path(engine_path)

    monkeypatch.setattr(trtb, "export_from_onnx", fake_build)
    assert trtb.engine_for_onnx(write(tmp_path / "student_int8.trt.onnx", True), max_batch=4).name == "student_int8-b4.engine"
    trtb.engine_for_onnx(write(tmp_path / "teacher_fp16.trt.onnx", False))
    trtb.engine_for_onnx(tmp_path / "student_int8.trt.onnx", max_batch=4)  # already built: reused
    assert built == [("student_int8.trt.onnx", "student_int8-b4.engine", "int8", (1, 8, 8), 4),
                     ("teacher_fp16.trt.onnx", "teacher_fp16-b1.engine", "fp16", (1, 8, 8), 1)]


def test_benchmark_of_an_onnx_without_tensorrt_is_missing_dependency(no_tensorrt, tmp_path):
    onnx_path = tmp_path / "m.trt.onnx"
    trtb.export_onnx(TinyCNN().eval(), torch.rand(1, 1, 8, 8), onnx_path, metadata={}, precision="fp32")
    with pytest.raises(MissingDependencyError, match="edgekd\\[tensorrt\\]"):
        trtb.benchmark(onnx_path, warmup=2, runs=10)
    assert not list(tmp_path.glob("*.engine"))


# --- the INT8 artifact TensorRT builds from (runs here) ---------------------------------------


@pytest.fixture(scope="module")
def quantized():
    nncf = pytest.importorskip("nncf")
    torch.manual_seed(0)
    model = TinyCNN().eval()
    torch.manual_seed(2)
    return nncf.quantize(model, nncf.Dataset([torch.rand(8, 1, 8, 8)]), subset_size=8)


def test_int8_qdq_onnx_for_tensorrt(quantized, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgekd.backends import onnx as onnxb

    # What NNCF exports as is: non-negative activations quantized as uint8, which TensorRT refuses.
    plain = onnxb.export(quantized, torch.rand(1, 1, 8, 8), tmp_path / "nncf.onnx", metadata={})
    problems = tensorrt_qdq.qdq_problems(onnx.load(str(plain)))
    assert problems and all("uint8" in problem for problem in problems)

    path = trtb.export_onnx(
        quantized,
        torch.rand(1, 1, 8, 8),
        tmp_path / "m.trt.onnx",
        metadata={"precision": "int8"},
        precision="int8",
    )
    model = onnx.load(str(path))
    op_types = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types
    assert tensorrt_qdq.qdq_problems(model) == []
    assert onnxb.read_metadata(path) == {"precision": "int8"}

    torch.manual_seed(1)
    samples = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        expected = quantized(samples).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"input": samples.numpy()})[0]
    assert np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)) >= 0.9


def test_int8_needs_a_quantized_model(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(UserError, match="explicitly quantized"):
        trtb.export_onnx(
            TinyCNN().eval(),
            torch.rand(1, 1, 8, 8),
            tmp_path / "m.onnx",
            metadata={},
            precision="int8",
        )


# --- needs TensorRT ---------------------------------------------------------------------------


@needs_tensorrt
def test_export_and_benchmark(tmp_path):
    torch.manual_seed(0)
    path = trtb.export(
        TinyCNN().eval(),
        torch.rand(4, 1, 8, 8),
        tmp_path / "m.engine",
        metadata={"arch": "tiny"},
        precision="fp16",
    )
    assert path.is_file() and trtb.size_mb(path) > 0
    metadata = trtb.read_metadata(path)
    assert metadata["arch"] == "tiny" and metadata["max_batch"] == "4"
    stats = trtb.benchmark(path, warmup=2, runs=20, batch=4)
    assert stats.batch == 4 and 0 < stats.min_ms <= stats.p50_ms <= stats.p99_ms
