"""build_student: the one place a run's student record becomes a module, built-in or cut from the
teacher module; and the names and latency of students cut from a teacher module."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.models import arch_name, build_model, count_params
from edgekd.models.derived import build_derived, derive_from_module
from edgekd.models.student import build_student, is_derived, reinitialise_

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


class TinyNet(nn.Module):
    """Not a built-in family: a stem, two residual blocks, a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return TinyNet().eval()


X = torch.rand(2, 1, 8, 8)


def test_a_built_in_record_builds_as_build_model_does():
    record = {"family": "resnet", "stem": 8, "widths": [8, 16, 32], "depths": [1, 1, 1], "origin": "teacher-derived"}
    assert not is_derived(record)
    torch.manual_seed(0)
    student = build_student(record, 1, 10)  # no teacher needed
    torch.manual_seed(0)
    reference = build_model(record, 1, 10)
    assert str(student) == str(reference)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), reference.state_dict().values()))
    assert str(build_student("resnet_xs", 1, 10)) == str(build_model("resnet_xs", 1, 10))


def test_a_derived_record_is_cut_from_the_teacher(teacher):
    record = {"family": "derived", "origin": "teacher-derived", "drop": ["blocks.1"], "width_ratio": 0.5,
              "channel_multiple": 8}
    assert is_derived(record)
    student = build_student(json.loads(json.dumps(record)), 1, 10, teacher, X[:1])
    reference = build_derived(record, teacher, X[:1])
    assert isinstance(student.blocks[1], nn.Identity)
    assert student.stem[0].out_channels == 8 and teacher.stem[0].out_channels == 16
    for key, value in reference.state_dict().items():
        assert torch.equal(student.state_dict()[key], value)  # deterministic: a resumed run gets the same
    with torch.no_grad():
        assert student.eval()(X).shape == (2, 10)
    assert count_params(student) < count_params(teacher)


def test_a_derived_record_without_its_teacher_is_a_clear_error():
    record = {"family": "derived", "origin": "teacher-derived", "drop": [], "width_ratio": 0.5,
              "channel_multiple": 8, "name": "derived_w0.5_drop0"}
    with pytest.raises(UserError, match="cut from the teacher module.*same --teacher"):
        build_student(record, 1, 10)
    with pytest.raises(UserError, match="derived_w0.5_drop0"):
        build_student(record, 1, 10, teacher=nn.Linear(2, 2))  # no example input either


def test_reinitialise_draws_fresh_weights_and_batchnorm_statistics(teacher):
    student = build_student({"family": "derived", "drop": ["blocks.0"], "width_ratio": 1.0, "channel_multiple": 8},
                            1, 10, teacher, X[:1])
    with torch.no_grad():
        student.stem[1].running_mean.fill_(3.0)
    before = student.head.weight.clone()
    reinitialise_(student)
    assert not torch.equal(student.head.weight, before)
    assert torch.equal(student.stem[1].running_mean, torch.zeros(16))


def test_derived_names_are_readable_and_tell_plans_apart(teacher):
    records = [c.record for c in derive_from_module(teacher, X, 8)]
    names = [arch_name(r) for r in records]
    assert len(set(names)) == len(names) == len(records)
    by_plan = dict(zip(names, records))
    for name, record in by_plan.items():
        assert name.startswith(f"derived_w{record['width_ratio']:g}_drop{len(record['drop'])}")
    assert "derived_w0.5_drop0" in names  # nothing dropped: no digest needed
    assert arch_name({**records[0], "name": "kept"}) == "kept"


def test_analytical_latency_walks_a_derived_student(teacher):
    from edgekd.latency.analytical import predict_latency_ms
    from edgekd.target import load_target

    orin = load_target("jetson-orin")
    full = predict_latency_ms(teacher, (1, 8, 8), orin, "int8").total_ms
    cut = build_student({"family": "derived", "drop": ["blocks.0", "blocks.1"], "width_ratio": 0.5,
                         "channel_multiple": 8}, 1, 10, teacher, X[:1])
    assert 0 < predict_latency_ms(cut, (1, 8, 8), orin, "int8").total_ms < full
