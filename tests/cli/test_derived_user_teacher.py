"""A user's own teacher class, pickled (`--teacher t.pt --trust-pickle`): search offers students cut
from the module (family "derived"), and the chosen one goes through distill, export, bench and
report in a resumed run, rebuilt from its record and the same teacher file. A teacher that cannot
be cut along one trace gives no such students, with a warning, and search picks from its own
families."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tiny_recipe import tiny_args
from torch import nn
from torch.nn import functional as F

from edgekd.cli import main
from edgekd.data import load_dataset
from edgekd.models.student import build_student
from edgekd.training import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Only teacher-derived students, a few trials: every distinct candidate is exported and timed.
DERIVED_ONLY = ["--set", "search.families=['teacher-derived']", "--set", "search.trials=3"]


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class DigitNet(nn.Module):
    """A small residual CNN that is no built-in record: a stem, two residual blocks, a strided
    conv, one more residual block, a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stage1 = nn.Sequential(Residual(16), Residual(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU())
        self.stage2 = nn.Sequential(Residual(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Branchy(DigitNet):
    """Data-dependent control flow with a layer only one branch uses: Torch-Pruning follows the
    path the example takes, so the teacher cannot be cut along one trace."""

    def __init__(self):
        super().__init__()
        self.negative = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() < 0:  # never for images in [0, 1]
            x = self.negative(x)
        return super().forward(x)


def pickled_teacher(path: Path, cls: type[nn.Module]) -> Path:
    """One epoch on the embedded digits (the run's own data): a teacher that has learned something."""
    torch.manual_seed(0)
    model = cls()
    data = load_dataset(None, seed=0)
    fit(model, data.train, data.val, lambda logits, labels, _index, _epoch: F.cross_entropy(logits, labels),
        epochs=1, lr=3e-3, batch_size=64, patience=1, seed=0)
    torch.save(model.eval(), path)  # the whole module: a pickle, loaded with --trust-pickle
    return path


def test_a_pickled_teacher_gives_derived_students_that_survive_a_resumed_run(tmp_path):
    teacher_path = pickled_teacher(tmp_path / "t.pt", DigitNet)
    run_dir = tmp_path / "derived"
    common = ["--target", "x86-cpu", "--teacher", str(teacher_path), "--trust-pickle", "--allow-weak-teacher"]
    assert main(["search", "--runs-dir", str(tmp_path), "--name", "derived", *common, *tiny_args(),
                 *DERIVED_ONLY]) == 0
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["completed"]) == ["search"]
    arch = json.loads((run_dir / "search" / "arch.json").read_text())
    assert arch["family"] == "derived" and arch["origin"] == "teacher-derived"
    assert arch["name"].startswith(f"derived_w{arch['width_ratio']:g}_drop{len(arch['drop'])}")
    candidates = json.loads((run_dir / "search" / "candidates.json").read_text())
    assert candidates and all(c["record"]["family"] == "derived" for c in candidates)
    assert all(c["latency_source"] == "measured" for c in candidates)

    # A new process would do the same: the resumed run reloads the teacher file and rebuilds the
    # student from arch.json alone.
    assert main(["compress", "--resume", str(run_dir)]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["models"]["student_int8"]["arch"] == arch["name"]
    assert report["models"]["student_int8"]["precision"] == "int8"
    assert (run_dir / "export" / "student_int8.xml").is_file() and (run_dir / "export" / "student_fp32.onnx").is_file()

    teacher = torch.load(teacher_path, map_location="cpu", weights_only=False)
    data = load_dataset(None, seed=0)
    rebuilt = build_student(arch, 1, 10, teacher, data.train.x[:1])
    trained = torch.load(run_dir / "distill" / "student_fp32.pt", map_location="cpu", weights_only=True)
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert report["models"]["student_int8"]["params"] == sum(p.numel() for p in rebuilt.parameters())
    assert report["models"]["student_int8"]["params"] < report["models"]["teacher"]["params"]


def test_an_untraceable_pickled_teacher_skips_derived_students_with_a_warning(tmp_path, caplog):
    teacher_path = pickled_teacher(tmp_path / "branchy.pt", Branchy)
    args = ["--runs-dir", str(tmp_path), "--target", "x86-cpu", "--teacher", str(teacher_path), "--trust-pickle",
            "--allow-weak-teacher", *tiny_args(), "--set", "search.families=['resnet','teacher-derived']", "--set", "search.trials=2"]
    with caplog.at_level(logging.WARNING, logger="edgekd.models.derived"):
        assert main(["search", "--name", "branchy", *args]) == 0
    skipped = [r for r in caplog.records if "teacher-derived candidates skipped" in r.getMessage()]
    assert len(skipped) == 1 and "did not run on the example input (negative)" in skipped[0].getMessage()
    arch = json.loads((tmp_path / "branchy" / "search" / "arch.json").read_text())
    assert arch["family"] == "resnet"
    candidates = json.loads((tmp_path / "branchy" / "search" / "candidates.json").read_text())
    assert {c["record"]["family"] for c in candidates} == {"resnet"}

    # Only teacher-derived asked for, none possible: the user is told what to do.
    code = main(["search", "--name", "branchy-only", *args, "--set", "search.families=['teacher-derived']"])
    assert code == 2


def test_the_teacher_flow_prunes_a_pickled_user_teacher_and_rebuilds_it_from_weights(tmp_path):
    # A user's own architecture, no record of edgekd's: pruned along its DepGraph, saved as a plain
    # state dict, and rebuilt by narrowing the pickled module (what export does when it ships).
    import copy

    from edgekd.models.resize import narrow_to_state_dict_

    teacher_path = pickled_teacher(tmp_path / "t.pt", DigitNet)
    assert main(["compress", "--runs-dir", str(tmp_path), "--name", "pruned", "--target", "x86-cpu", "--teacher",
                 str(teacher_path), "--trust-pickle", "--allow-weak-teacher", *tiny_args(),
                 "--set", "prune.enabled=true", "--set", "prune.flow=teacher", "--set", "prune.allocation='uniform'",
                 "--set", "prune.ratio=0.5", "--set", "prune.recovery_epochs=1"]) == 0
    state = json.loads((tmp_path / "pruned" / "state.json").read_text())["completed"]
    prune = state["prune"]
    assert prune["flow"] == "teacher" and prune["arch"]["name"] == "teacher pruned"
    assert prune["plan"]["plan"], "the 32-channel groups were narrowed to 16"
    teacher = torch.load(teacher_path, map_location="cpu", weights_only=False)
    weights = torch.load(tmp_path / "pruned" / "prune" / "pruned_fp32.pt", map_location="cpu", weights_only=True)
    rebuilt = narrow_to_state_dict_(copy.deepcopy(teacher), weights).eval()
    assert sum(p.numel() for p in rebuilt.parameters()) == prune["plan"]["params_after"] < sum(
        p.numel() for p in teacher.parameters())
    assert rebuilt(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    if prune["shipped"]:  # then export and bench used it
        assert state["bench"]["models"]["student_fp32"]["params"] == prune["plan"]["params_after"]
