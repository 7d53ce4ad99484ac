"""Teacher-derived candidates: records cut from built-in teachers, and Torch-Pruning cuts of a
user module, on tiny real models."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from edgekd.models import PRESETS, build_model, count_params
from edgekd.models.derived import (
    build_derived,
    derive_from_module,
    derive_from_record,
    droppable_blocks,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MULTIPLE = 8


def _build(record: dict) -> nn.Module:
    return build_model(record, 3, 10)  # the "origin" tag is not passed to the builder


# --- built-in teacher records ------------------------------------------------------------------


def test_record_candidates_are_distinct_smaller_and_rounded():
    teacher = {"name": "resnet_m", **PRESETS["resnet_m"]}
    teacher_params = count_params(_build(teacher))
    candidates = derive_from_record(teacher, MULTIPLE)
    assert len(candidates) >= 10
    assert len({json.dumps(c, sort_keys=True) for c in candidates}) == len(candidates)
    depth_plans = {tuple(c["depths"]) for c in candidates}
    assert (1, 1, 1) in depth_plans and (2, 2, 1) in depth_plans  # uniform cut, one block fewer
    for record in candidates:
        assert record["origin"] == "teacher-derived"
        assert record["family"] == "resnet" and "name" not in record
        assert json.loads(json.dumps(record)) == record  # a run dir can keep it
        assert all(1 <= d <= t for d, t in zip(record["depths"], teacher["depths"]))
        assert all(w % MULTIPLE == 0 for w in [record["stem"], *record["widths"]])
        model = _build(record).eval()
        assert count_params(model) < teacher_params
        with torch.no_grad():
            assert model(torch.rand(1, 3, 16, 16)).shape == (1, 10)


def test_record_width_ratios_round_to_the_multiple():
    teacher = PRESETS["resnet_m"]  # widths 32/64/128
    thin = [c for c in derive_from_record(teacher, 32, width_ratios=(0.25,)) if c["depths"] == [2, 2, 2]]
    assert [c["widths"] for c in thin] == [[32, 32, 32]]  # 8/16/32 rounded up to 32, never 0
    depth_only = derive_from_record(teacher, MULTIPLE, width_ratios=())
    assert all(c["widths"] == teacher["widths"] for c in depth_only)


def test_record_by_preset_name_and_bad_ratio():
    assert derive_from_record("resnet_xs", MULTIPLE)  # depths 1/1/1: thinner only
    with pytest.raises(ValueError, match="width ratios"):
        derive_from_record("resnet_xs", MULTIPLE, width_ratios=(0.0,))


def test_record_of_unknown_family_is_skipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="edgekd.models.derived"):
        assert derive_from_record({"family": "vit", "depth": 12}, MULTIPLE) == []
    assert "teacher-derived candidates skipped" in caplog.text


MOBILENET = {
    "family": "mobilenet", "stem": 16, "stem_stride": 1, "head": 128,
    "stages": [
        {"width": 16, "depth": 1, "stride": 1, "kernel": 3, "expand": 1, "se": False},
        {"width": 24, "depth": 3, "stride": 2, "kernel": 3, "expand": 4, "se": False},
        {"width": 40, "depth": 2, "stride": 2, "kernel": 5, "expand": 4, "se": True},
    ],
}


def test_mobilenet_record_candidates():
    teacher_params = count_params(_build(MOBILENET))
    candidates = derive_from_record(MOBILENET, MULTIPLE)
    depth_plans = {tuple(s["depth"] for s in c["stages"]) for c in candidates}
    assert {(1, 1, 1), (1, 2, 2), (1, 3, 1)} <= depth_plans
    for record in candidates:
        assert record["origin"] == "teacher-derived"
        assert all(s["depth"] <= t["depth"] for s, t in zip(record["stages"], MOBILENET["stages"]))
        assert all(s["width"] % MULTIPLE == 0 for s in record["stages"])
        assert count_params(_build(record)) < teacher_params


# --- a user's teacher module -------------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Plain(nn.Module):
    """Keeps the shape but has no skip path: dropping it would change what follows."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class UserNet(nn.Module):
    """Not a built-in family: a stem, a residual block, a downsampling conv, a plain block, a
    second residual block wrapped in a Sequential, and a classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.block1 = Residual(32)
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU())
        self.plain = Plain(64)
        self.block2 = nn.Sequential(Residual(64))  # the wrapper is dropped, not both
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.plain(self.down(self.block1(self.stem(x)))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = UserNet()
    for p in model.parameters():
        p.requires_grad_(False)  # teachers are frozen; pruning must still trace them
    return model.eval()


@pytest.fixture(scope="module")
def example():
    torch.manual_seed(1)
    return torch.rand(2, 3, 16, 16)


@pytest.fixture(scope="module")
def candidates(teacher, example):
    return derive_from_module(teacher, example, MULTIPLE)


def test_only_residual_blocks_are_droppable(teacher, example):
    assert droppable_blocks(teacher, example) == ["block1", "block2"]


def test_module_candidates_run_smaller_and_rounded(teacher, example, candidates):
    assert len(candidates) >= 6
    assert len({json.dumps(c.record, sort_keys=True) for c in candidates}) == len(candidates)
    teacher_params = count_params(teacher)
    reference = teacher(example)
    for candidate in candidates:
        record = candidate.record
        assert record["family"] == "derived" and record["origin"] == "teacher-derived"
        assert json.loads(json.dumps(record)) == record
        student = candidate.build(teacher).eval()
        with torch.no_grad():
            assert student(example).shape == reference.shape
        assert count_params(student) < teacher_params
        convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.out_channels % MULTIPLE == 0 for c in convs)
        if record["width_ratio"] < 1.0:
            assert max(c.out_channels for c in convs) < 64
        assert student.head.out_features == 10  # the classifier is never thinned
        for name in record["drop"]:
            assert isinstance(student.get_submodule(name), nn.Identity)
    ratios = {c.record["width_ratio"] for c in candidates}
    assert ratios == {0.25, 0.5, 0.75, 1.0}
    assert teacher.block1.conv1.out_channels == 32  # the teacher itself is untouched


def test_module_candidate_rebuilds_identically_from_its_record(teacher, example, candidates):
    candidate = next(c for c in candidates if c.record["width_ratio"] == 0.5 and c.record["drop"])
    record = json.loads(json.dumps(candidate.record))  # as read back from the run dir
    first = candidate.build(teacher)
    again = build_derived(record, teacher, example, MULTIPLE)
    assert str(first) == str(again)
    assert first.state_dict().keys() == again.state_dict().keys()
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    with pytest.raises(ValueError, match="channel multiple"):
        build_derived(record, teacher, example, 16)


def test_torchscript_teacher_gives_nothing_and_one_warning(teacher, example, caplog):
    scripted = torch.jit.trace(teacher, example)
    with caplog.at_level(logging.WARNING, logger="edgekd.models.derived"):
        assert derive_from_module(scripted, example, MULTIPLE) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "teacher-derived candidates skipped" in warnings[0].getMessage()
    assert "TorchScript" in warnings[0].getMessage()


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)

    def forward(self, x):
        return self.conv(x), x


def test_untraceable_teacher_gives_nothing_and_one_warning(example, caplog):
    with caplog.at_level(logging.WARNING, logger="edgekd.models.derived"):
        assert derive_from_module(TupleOut(), example, MULTIPLE) == []
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert "teacher-derived candidates skipped" in caplog.text


class SameLayersEitherWay(UserNet):
    """Data-dependent control flow over the same layers: one trace sees every layer, so the cut
    is right for both paths."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if x.sum() > 0 else super().forward(-x)


class BranchOnlyLayer(UserNet):
    """A layer that runs only when the data says so: a cut traced on the other path breaks it."""

    def __init__(self):
        super().__init__()
        self.rare = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.stem(x))
        if x.mean() > 1e6:
            x = self.rare(x)
        x = self.block2(self.plain(self.down(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_control_flow_over_the_same_layers_keeps_candidates_that_run_both_ways(example):
    torch.manual_seed(0)
    teacher = SameLayersEitherWay().eval()
    candidates = derive_from_module(teacher, example, MULTIPLE)
    assert candidates
    student = next(c for c in candidates if c.record["width_ratio"] == 0.5).build(teacher).eval()
    with torch.no_grad():
        assert student(example).shape == student(-example).shape == (2, 10)  # both branches


def test_a_layer_off_the_traced_path_skips_candidates_with_one_warning(example, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="edgekd.models.derived"):
        assert derive_from_module(BranchOnlyLayer().eval(), example, MULTIPLE) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "teacher-derived candidates skipped" in warnings[0] and "rare" in warnings[0]


def test_pruned_student_exports_to_onnx(teacher, example, candidates, tmp_path):
    pytest.importorskip("onnxruntime")
    from edgekd.backends import onnx as onnxb
    candidate = next(c for c in candidates if c.record["width_ratio"] == 0.25 and c.record["drop"])
    student = candidate.build(teacher).eval()
    path = onnxb.export(student, example[:1], tmp_path / "derived.onnx", metadata={"arch": "derived"})
    with torch.no_grad():
        expected = student(example).numpy()
    assert onnxb.predict_logits(path, example) == pytest.approx(expected, abs=1e-4)
    assert onnxb.read_metadata(path)["arch"] == "derived"
