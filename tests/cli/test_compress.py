"""`edgekd compress` end to end on the embedded default, with a tiny recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_recipe import tiny_args

from edgekd.cli import main
from edgekd.data import load_dataset
from edgekd.pipeline import STAGES

REPORT_MODEL_KEYS = {"arch", "precision", "accuracy", "latency_ms", "throughput_ips", "size_mb", "params",
                     "macs", "artifact"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert main(["compress", "--target", "x86-cpu", "--runs-dir", str(runs), "--name", "e2e", *tiny_args()]) == 0
    return runs / "e2e"


def test_every_stage_completes_and_records_seconds(run_dir):
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["completed"]) == list(STAGES)
    assert all(metrics["seconds"] >= 0 for metrics in state["completed"].values())


def test_report_json_has_the_interface_keys(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("edgekd_version", "target", "budget_ms", "budget_met", "dataset", "models", "stages", "environment"):
        assert key in report
    assert report["target"] == "x86-cpu"
    assert report["budget_ms"] == 1000 and report["budget_met"] is True
    assert set(report["dataset"]) >= {"name", "n_train", "n_val", "n_test"}
    assert report["dataset"]["n_train"] + report["dataset"]["n_val"] + report["dataset"]["n_test"] == 1797
    assert set(report["models"]) == {"teacher", "student_fp32", "student_int8"}
    for model in report["models"].values():
        assert REPORT_MODEL_KEYS <= set(model)
        assert 0.0 <= model["accuracy"] <= 1.0
        latency = model["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
        assert (run_dir / model["artifact"]).is_file()
    assert report["models"]["student_int8"]["precision"] == "int8"
    assert report["models"]["student_int8"]["params"] < report["models"]["teacher"]["params"]
    assert set(report["environment"]) >= {"cpu", "python", "torch", "openvino", "nncf"}
    assert set(report["stages"]) == set(STAGES) - {"report"}


def test_report_accuracy_is_the_exported_artifacts_accuracy(run_dir):
    """The number in the report must be what the shipped IR does in OpenVINO, not the torch model."""
    from edgekd.backends import get_backend

    report = json.loads((run_dir / "report.json").read_text())
    data = load_dataset(None)
    ov = get_backend("openvino")
    for key in ("student_fp32", "student_int8"):
        artifact = run_dir / report["models"][key]["artifact"]
        assert ov.accuracy(artifact, data.test.x, data.test.y) == pytest.approx(report["models"][key]["accuracy"])


def test_int8_artifact_is_really_quantized(run_dir):
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(run_dir / "export" / "student_int8.xml").get_ops()}
    assert "FakeQuantize" in ops
    fp32_ops = {op.get_type_name() for op in ov.Core().read_model(run_dir / "export" / "student_fp32.xml").get_ops()}
    assert "FakeQuantize" not in fp32_ops


def test_artifacts_carry_metadata(run_dir):
    from edgekd.backends import get_backend

    meta = get_backend("openvino").read_metadata(run_dir / "export" / "student_int8.xml")
    assert meta["target"] == "x86-cpu" and meta["precision"] == "int8"
    assert meta["edgekd_version"]
    assert json.loads(meta["arch"])["family"] == "resnet"
    onnx_meta = get_backend("onnx").read_metadata(run_dir / "export" / "student_fp32.onnx")
    assert onnx_meta["precision"] == "fp32"


def test_onnx_matches_openvino_fp32(run_dir):
    from edgekd.backends import get_backend

    x = load_dataset(None).test.x[:32]
    ov_logits = get_backend("openvino").predict_logits(run_dir / "export" / "student_fp32.xml", x)
    onnx_logits = get_backend("onnx").predict_logits(run_dir / "export" / "student_fp32.onnx", x)
    np.testing.assert_allclose(ov_logits, onnx_logits, atol=1e-3)


def test_report_md_is_a_table_with_the_reproducing_command(run_dir):
    text = (run_dir / "report.md").read_text()
    assert "| teacher |" in text and "| student fp32 |" in text and "| student INT8 |" in text
    assert "edgekd compress --target x86-cpu" in text
    assert "speed-up" in text


def test_compress_writes_report_html_and_report_run_dir_writes_it_again(run_dir):
    page = run_dir / "report.html"
    assert "<h1>edgekd report: x86-cpu</h1>" in page.read_text() and "<script" not in page.read_text()
    page.unlink()
    assert main(["report", str(run_dir), "-q"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert "Student search" in page.read_text() and set(report) >= {"predicted_vs_measured", "models"}
    assert {"gpu", "power_mode", "precision_hint"} <= set(report["environment"])


def test_search_keeps_candidates_and_the_chosen_record(run_dir):
    candidates = json.loads((run_dir / "search" / "candidates.json").read_text())
    chosen = json.loads((run_dir / "search" / "arch.json").read_text())
    assert len(candidates) == 2
    assert all(c["latency_source"] == "measured" and c["latency_ms"] > 0 for c in candidates)
    # With a budget everyone meets, the best-scoring candidate (params, the default score) wins.
    best = max(candidates, key=lambda c: c["score"])
    assert chosen["widths"] == best["record"]["widths"] and chosen["name"] == best["name"]
    assert (run_dir / "search" / "study.db").is_file() and (run_dir / "search" / "front.json").is_file()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["search"]["score"] == "params" and report["search"]["chosen"] == best["name"]
    assert "## Student search" in (run_dir / "report.md").read_text()


def test_stage_subcommand_reruns_only_that_stage_and_later(run_dir):
    before = json.loads((run_dir / "state.json").read_text())["completed"]
    assert main(["bench", "--resume", str(run_dir)]) == 0
    after = json.loads((run_dir / "state.json").read_text())["completed"]
    assert after["search"] == before["search"] and after["distill"] == before["distill"]
    assert "report" not in after  # bench ran again, so the old report is stale
    assert main(["report", "--resume", str(run_dir)]) == 0
    assert "report" in json.loads((run_dir / "state.json").read_text())["completed"]
