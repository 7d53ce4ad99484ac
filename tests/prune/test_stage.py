"""The prune stage end to end on the digits with the tiny recipe: the gate rolls back a pruning that
does not pay (measured on OpenVINO), a pruned student ships through export and bench, 2:4 on
jetson-orin writes a 2:4-valid Q/DQ ONNX and trtexec's sparsity flag, and the teacher flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_recipe import tiny_args

from edgekd.cli import main
from edgekd.io import load_weights_only
from edgekd.prune.gate import ArtifactMeasurement
from edgekd.results import Budget
from edgekd.latency.source import MEASURED, Latency


def _compress(runs: Path, name: str, target: str, *settings: str) -> Path:
    args = ["compress", "--target", target, "--runs-dir", str(runs), "--name", name, *tiny_args(),
            "--set", "prune.enabled=true", "--set", "prune.recovery_epochs=1"]
    for item in settings:
        args += ["--set", item]
    assert main(args) == 0
    return runs / name


def _state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())["completed"]


def test_the_gate_rolls_back_a_pruning_that_is_not_fast_enough_and_the_unpruned_student_ships(tmp_path):
    # Forced not to pay: a quarter of the channels cannot make the artifact 90% faster.
    run = _compress(tmp_path, "rollback", "x86-cpu", "search.width_multipliers=[2.0]",
                    "prune.allocation='uniform'", "prune.ratio=0.25",
                    "prune.min_speedup=0.9")
    prune = _state(run)["prune"]
    assert prune["ran"] and not prune["shipped"]
    assert "rolled back" in prune["rolled_back"] and "less than the 90% required" in prune["rolled_back"]
    # both artifacts were measured, on the target, in this run
    assert prune["baseline"]["latency"]["source"] == MEASURED == prune["candidate"]["latency"]["source"]
    assert (run / "prune" / "gate" / "baseline.xml").is_file() and (run / "prune" / "gate" / "candidate.xml").is_file()
    # layers that cannot be pruned are listed with the reason, not crashed on
    skipped = {row["layer"]: row["reason"] for row in prune["plan"]["skipped"]}
    assert "fc" in skipped and "classifier" in skipped["fc"]
    # the unpruned student ships: bench counts the distilled student's parameters
    bench = _state(run)["bench"]
    distilled = load_weights_only(run / "distill" / "student_fp32.pt", what="test")
    assert bench["models"]["student_fp32"]["params"] == sum(t.numel() for k, t in distilled.items()
                                                           if not k.endswith(("running_mean", "running_var",
                                                                              "num_batches_tracked")))
    report = json.loads((run / "report.json").read_text())
    assert report["prune"]["rolled_back"] and report["stages"]["prune"]["rolled_back"]
    text = (run / "report.md").read_text()
    assert "## Prune" in text and "ROLLED BACK" in text and "Pruning did not pay and was rolled back" in text
    assert "ROLLED BACK" in (run / "report.html").read_text()

    # The stage again with other settings of its own: recorded in config.json; export, bench and
    # report are then to be redone. Earlier stages' settings may not change on a resume.
    before = _state(run)["prune"]["plan"]["plan"]
    assert main(["prune", "--resume", str(run), "--set", "prune.ratio=0.5"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["prune"]["ratio"] == 0.5 and len(config["changes"]) == 1
    state = _state(run)
    assert state["prune"]["plan"]["plan"] != before and "export" not in state and "report" not in state
    assert main(["prune", "--resume", str(run), "--set", "distill.epochs=5"]) == 2
    assert main(["compress", "--resume", str(run), "--set", "prune.ratio=0.3"]) == 2


def test_a_pruned_student_ships_through_export_and_bench_with_predicted_latency_labelled(tmp_path):
    # jetson-orin is not attached: both artifacts' latencies are predicted, and labelled so; fewer
    # channels predict faster, so with no accuracy limit the pruned student ships.
    run = _compress(tmp_path, "ships", "jetson-orin", "search.width_multipliers=[2.0]",
                    "prune.allocation='uniform'", "prune.ratio=0.5",
                    "prune.min_speedup=0.0", "prune.max_accuracy_drop_pt=100.0")
    state = _state(run)
    prune = state["prune"]
    assert prune["shipped"] and prune["rolled_back"] is None
    assert prune["candidate"]["latency"]["source"].startswith("predicted")
    assert prune["plan"]["plan"], "some channel group was pruned"
    for group in prune["plan"]["plan"].values():
        assert group["after"] % 32 == 0  # jetson-orin's channel multiple
    assert (run / "prune" / "pruned_fp32.pt").is_file() and (run / "prune" / "pruned_int8.pt").is_file()
    # export and bench use the pruned student: fewer parameters than the distilled one
    assert prune["plan"]["params_after"] < prune["plan"]["params_before"]
    assert state["bench"]["models"]["student_fp32"]["params"] == prune["plan"]["params_after"]
    assert (run / "export" / "student_int8.trt.onnx").is_file()
    report = json.loads((run / "report.json").read_text())
    assert report["prune"]["shipped"] and report["prune"]["candidate"]["latency_source"].startswith("predicted")
    text = (run / "report.md").read_text()
    assert "pruned model ships" in text and "The shipped student is pruned" in text


def test_a_student_too_narrow_for_the_multiple_is_not_pruned_and_says_why(tmp_path):
    # The tiny students have 8-32 channels per layer; jetson-orin's multiple is 32.
    run = _compress(tmp_path, "narrow", "jetson-orin", "prune.allocation='uniform'")
    prune = _state(run)["prune"]
    assert not prune["shipped"] and "nothing pruned" in prune["rolled_back"] and "(32)" in prune["rolled_back"]
    assert prune["plan"]["skipped"], "every layer is listed with the reason"
    assert not (run / "prune" / "pruned_fp32.pt").exists()


def test_2_4_on_jetson_orin_writes_a_2_4_qdq_onnx_and_the_sparsity_flag(tmp_path):
    pytest.importorskip("modelopt.torch.sparsity")
    # The tiny students' layers are far below the ~256 channels where TensorRT's sparse tactics
    # win; the threshold comes down so that some layers qualify.
    run = _compress(tmp_path, "sparse", "jetson-orin", "search.width_multipliers=[2.0]",
                    "prune.enabled=false", "prune.sparse_2_4=true",
                    "prune.sparse_min_channels=16", "prune.max_accuracy_drop_pt=100.0")
    prune = _state(run)["prune"]
    assert prune["method"] == "2:4" and prune["shipped"]
    sparse = [row["layer"] for row in prune["plan"]["layers"] if row["sparse"]]
    assert sparse, prune["plan"]["layers"]
    assert any(not row["sparse"] and "16" in row["reason"] for row in prune["plan"]["layers"]) or len(sparse) == len(
        prune["plan"]["layers"])
    # no TensorRT here: the 2:4 artifact's latency is "not measured", never predicted
    assert prune["candidate"]["latency"] is None and "TensorRT" in prune["candidate"]["not_measured"]
    assert "speed-up is unverified" in prune["reason"]
    export = _state(run)["export"]
    check = export["details"]["sparsity_2_4"]
    assert check["student_int8"]["ok"] and check["student_fp32"]["ok"], check
    script = (run / "export" / "build_engines.sh").read_text()
    student_lines = [line for line in script.splitlines() if "student_" in line and "trtexec" in line]
    assert student_lines and all("--sparsity=enable" in line for line in student_lines)
    teacher_lines = [line for line in script.splitlines() if "teacher_" in line and "trtexec" in line]
    assert teacher_lines and not any("--sparsity" in line for line in teacher_lines)
    text = (run / "report.md").read_text()
    assert "not measured (" in text and "2:4 sparse layers" in text
    page = (run / "report.html").read_text()
    assert "<h2>Prune</h2>" in page and "NOT MEASURED" in page


def test_teacher_flow_prunes_the_teacher_and_compares_it_with_the_searched_student(tmp_path):
    run = _compress(tmp_path, "teacher", "x86-cpu", "prune.flow='teacher'", "prune.allocation='uniform'",
                    "prune.ratio=0.5")
    prune = _state(run)["prune"]
    assert prune["flow"] == "teacher" and prune["arch"]["name"] == "resnet_s pruned"
    assert prune["plan"]["params_after"] < prune["plan"]["params_before"]
    assert prune["baseline"]["name"] == "unpruned student" and prune["candidate"]["name"] == "pruned teacher"
    assert prune["baseline"]["latency"]["source"] == MEASURED == prune["candidate"]["latency"]["source"]
    assert "flow teacher" in prune["reason"]
    report = (run / "report.md").read_text()
    assert "Flow **teacher**" in report and "| pruned teacher |" in report


def test_latency_guided_allocation_in_the_pipeline_is_bounded_and_labelled(tmp_path):
    # jetson-orin is not attached: each candidate's latency is predicted (deterministic), labelled so.
    run = _compress(tmp_path, "guided", "jetson-orin", "search.width_multipliers=[2.0]", "prune.max_steps=2",
                    "prune.target_speedup=1.2", "prune.max_accuracy_drop_pt=100.0")
    prune = _state(run)["prune"]
    allocation = prune["allocation"]
    assert allocation["latency_source"].startswith("predicted") and len(allocation["steps"]) <= 2
    assert "prune.target_speedup 1.2" in allocation["goal_origin"]
    text = (run / "report.md").read_text()
    assert "Latency-guided plan:" in text and "predicted" in text.split("Latency-guided plan:")[1].split("\n")[0]


def test_teacher_flow_ships_only_a_more_accurate_pruned_teacher_within_the_budget():
    from types import SimpleNamespace

    from edgekd.prune.stage import _teacher_flow_decision

    budget = Budget(ms=1.0, origin="--budget-ms", teacher=Latency(2.0, MEASURED))
    ctx = SimpleNamespace(result=lambda stage: SimpleNamespace(budget=budget))
    student = ArtifactMeasurement("unpruned student", 0.5, MEASURED, 0.90)
    better_in_budget = ArtifactMeasurement("pruned teacher", 0.9, MEASURED, 0.93)
    better_too_slow = ArtifactMeasurement("pruned teacher", 1.2, MEASURED, 0.95)
    worse = ArtifactMeasurement("pruned teacher", 0.4, MEASURED, 0.85)
    assert _teacher_flow_decision(ctx, student, better_in_budget).ship_candidate
    slow = _teacher_flow_decision(ctx, student, better_too_slow)
    assert not slow.ship_candidate and "misses the budget" in slow.reason
    assert not _teacher_flow_decision(ctx, student, worse).ship_candidate
    predicted = ArtifactMeasurement("pruned teacher", 0.9, "predicted (analytical)", 0.99)
    assert not _teacher_flow_decision(ctx, student, predicted).ship_candidate  # measured vs predicted: no verdict


@pytest.mark.parametrize("setting, message", [
    ("prune.sparse_2_4=true", "does not run 2:4 sparse weights faster"),
    ("prune.flow='both'", "prune.flow"),
    ("prune.min_speedup=nan", "prune.min_speedup"),
    ("prune.recovery_lr=0", "prune.recovery_lr"),
])
def test_bad_prune_settings_fail_before_any_work_with_one_line(tmp_path, capsys, setting, message):
    code = main(["compress", "--target", "x86-cpu", "--runs-dir", str(tmp_path), "--name", "bad", *tiny_args(),
                 "--set", setting])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "bad").exists()


def test_the_teacher_flow_refuses_an_exported_program_before_any_work(tmp_path, capsys):
    teacher = tmp_path / "teacher.pt2"
    teacher.write_bytes(b"not read: the recipe is refused first")
    code = main(["compress", "--target", "x86-cpu", "--runs-dir", str(tmp_path), "--name", "bad", "--teacher",
                 str(teacher), "--set", "prune.enabled=true", "--set", "prune.flow=teacher"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot prune an exported program" in err[0], err
    assert not (tmp_path / "bad").exists()
