"""`edgekd compress` for the devices that are not attached here (jetson-orin: TensorRT, apple-m:
Core ML). Everything that can run here runs for real (ModelOpt / coremltools QAT, the Q/DQ ONNX in
onnxruntime, CoreML conversion and validation); latency is predicted from the device's published
peaks and labelled so everywhere; the engine-build commands for the device are written out."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import onnx
import pytest
from labels import unlabelled_latencies
from tiny_recipe import tiny_args

from edgekd.cli import main
from edgekd.target import load_target, why_not_measurable

pytestmark = pytest.mark.skipif(why_not_measurable(load_target("jetson-orin")) is None,
                                reason="TensorRT is installed here: the predicted path is not taken")


def _compress(tmp_path_factory, target: str) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert main(["compress", "--target", target, "--runs-dir", str(runs), "--name", "run", *tiny_args()]) == 0
    return runs / "run"


@pytest.fixture(scope="module")
def orin_run(tmp_path_factory) -> Path:
    return _compress(tmp_path_factory, "jetson-orin")


def test_jetson_orin_writes_a_tensorrt_ready_qdq_onnx_checked_in_onnxruntime(orin_run):
    from edgekd.backends.tensorrt.qdq import qdq_problems

    model = onnx.load(str(orin_run / "export" / "student_int8.trt.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert qdq_problems(model) == []
    export = json.loads((orin_run / "state.json").read_text())["completed"]["export"]
    check = export["details"]["artifact_checks"]["student_int8"]
    assert check["argmax_agreement"] >= 0.98 and check["samples"] == 270


def test_jetson_orin_latency_is_predicted_and_labelled_and_accuracy_comes_from_onnxruntime(orin_run):
    report = json.loads((orin_run / "report.json").read_text())
    for model in report["models"].values():
        assert model["latency_source"].startswith("predicted")
        assert model["latency_ms"]["p50"] > 0 and model["latency_ms"]["p99"] is None
        assert model["accuracy_source"].startswith("onnxruntime on") and 0.5 < model["accuracy"] <= 1.0
    assert report["models"]["teacher"]["precision"] == "fp16"
    assert report["models"]["student_int8"]["precision"] == "int8"
    assert "not attached" in report["conditions"]["device"]
    assert "Jetson AGX Orin" in report["conditions"]["peaks_source"]
    assert report["budget_met_source"] == report["speedup_p50_source"] == "predicted (analytical)"
    text = (orin_run / "report.md").read_text()
    assert "Latencies are PREDICTED, not measured" in text and "(predicted)" in text
    assert "timed runs" not in text and "Nothing was timed" in text
    # A prediction must never calibrate later predictions: no record was appended.
    from edgekd.latency.records import load_records

    assert load_records("jetson-orin", (1, 8, 8), "int8") == []


def test_jetson_orin_writes_the_exact_engine_build_commands_for_the_device(orin_run):
    script = (orin_run / "export" / "build_engines.sh").read_text()
    lines = [line for line in script.splitlines() if line.startswith("trtexec ")]
    assert len(lines) == 3
    int8 = next(line for line in lines if "student_int8" in line)
    assert "--onnx=export/student_int8.trt.onnx" in int8 and "--saveEngine=export/student_int8.engine" in int8
    assert "--int8" in int8 and "--minShapes=input:1x1x8x8" in int8
    assert not (orin_run / "export" / "student_int8.engine").exists()  # nothing pretends to be an engine
    assert "sh export/build_engines.sh" in (orin_run / "report.md").read_text()


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS Core ML runs: the predicted path is not taken")
def test_apple_m_writes_validated_w8a8_ml_programs(tmp_path_factory):
    run = _compress(tmp_path_factory, "apple-m")
    export = json.loads((run / "state.json").read_text())["completed"]["export"]
    checks = export["details"]["artifact_checks"]
    assert set(checks) == {"teacher", "student_fp32", "student_int8"}
    # validated against the data: batch-1 input of its shape, one logit per class
    assert all(check["valid"] and check["input_shape"] == [1, 1, 8, 8] for check in checks.values())
    assert checks["student_int8"]["ops"].get("quantize", 0) > 0
    assert (run / "export" / "student_int8.mlpackage").is_dir()
    report = json.loads((run / "report.json").read_text())
    deployed = report["models"]["student_int8"]
    assert deployed["latency_source"].startswith("predicted")
    assert deployed["accuracy_source"].startswith("torch model")


def test_a_target_without_peak_figures_that_cannot_be_measured_fails_before_any_work(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["compress", "--target", "nvidia-gpu", "--runs-dir", str(runs), "--name", "gpu", *tiny_args()])
    assert code == 2
    assert "peaks.int8_tops" in capsys.readouterr().err
    assert not (runs / "gpu").exists()


def test_no_latency_in_a_predicted_run_appears_without_its_source(orin_run):
    """report.md: every "<number> ms" has a source label beside it (the budget, a requirement, aside);
    report.json: every latency value has a source key beside it."""
    assert unlabelled_latencies((orin_run / "report.md").read_text()) == []
    report = json.loads((orin_run / "report.json").read_text())
    assert all(m["latency_source"] for m in report["models"].values())
    for point in report["search"]["front"]:
        assert point["latency_source"] == "predicted (analytical)"
    for attempt in report["search"]["attempts"]:
        assert attempt["search_latency_source"] and attempt["bench_latency_source"]
    for name, stage in report["stages"].items():
        for key, value in stage.items():
            if key.endswith("_ms") and value is not None and key.removesuffix("_ms") + "_source" in stage:
                assert stage[key.removesuffix("_ms") + "_source"], (name, key)
