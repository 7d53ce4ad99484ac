"""distill.init: random, the teacher's kept weights for a teacher-derived student, a checkpoint."""

from __future__ import annotations

import pytest
import torch

from edgekd.distill.student_init import check_init, initialise_student_
from edgekd.errors import UserError
from edgekd.models import build_model, resolve_arch
from edgekd.models.derived import derive_from_record

X = torch.rand(2, 1, 8, 8)


def teacher_and_record(depths: list[int], width_ratio: float):
    torch.manual_seed(0)
    teacher_arch = resolve_arch("resnet_m")  # widths 32-64-128, depths 2-2-2
    teacher = build_model(teacher_arch, 1, 10).eval()
    candidates = derive_from_record(teacher_arch, 8, width_ratios=[width_ratio])
    scaled = round(32 * width_ratio)
    record = next(c for c in candidates if c["depths"] == depths and c["widths"][0] == scaled)
    return teacher, teacher_arch, record


def test_full_width_derived_student_is_the_teacher_with_blocks_removed():
    teacher, teacher_arch, record = teacher_and_record([2, 1, 2], 1.0)
    student = build_model(record, 1, 10)
    assert initialise_student_(student, record, "teacher", teacher, teacher_arch, X) == "teacher"
    assert torch.equal(student.stages[2][1].conv2[0].weight, teacher.stages[2][1].conv2[0].weight)
    assert torch.equal(student.fc.weight, teacher.fc.weight)
    # the same network as the teacher with stage 1's second block skipped
    teacher.stages[1] = teacher.stages[1][:1]
    student.eval()
    assert torch.allclose(student(X), teacher(X), atol=1e-6)


def test_thinned_derived_student_keeps_a_subset_of_the_teachers_filters():
    teacher, teacher_arch, record = teacher_and_record([1, 1, 1], 0.5)
    student = build_model(record, 1, 10)
    assert initialise_student_(student, record, "teacher", teacher, teacher_arch, X) == "teacher"
    kept = student.stem[0].weight.flatten(1)  # one input channel: the filters are whole
    teacher_filters = teacher.stem[0].weight.flatten(1)
    assert kept.shape[0] == 16
    for row in kept:
        assert any(torch.equal(row, t) for t in teacher_filters)
    # and the teacher itself is untouched
    assert teacher.stem[0].weight.shape[0] == 32 and len(teacher.stages[0]) == 2


def test_teacher_init_of_a_student_not_cut_from_the_teacher_says_why():
    teacher, teacher_arch, _ = teacher_and_record([1, 1, 1], 0.5)
    record = resolve_arch("resnet_xs")
    student = build_model(record, 1, 10)
    before = student.stem[0].weight.clone()
    outcome = initialise_student_(student, record, "teacher", teacher, teacher_arch, X)
    assert outcome.startswith("random (teacher init not possible") and "teacher-derived" in outcome
    assert torch.equal(student.stem[0].weight, before)
    outcome = initialise_student_(student, {**record, "origin": "teacher-derived"}, "teacher", teacher, None, X)
    assert "not a built-in architecture" in outcome


def test_checkpoint_init_loads_a_state_dict(tmp_path):
    source = build_model("resnet_xs", 1, 10)
    path = tmp_path / "student.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    student = build_model("resnet_xs", 1, 10)
    assert initialise_student_(student, resolve_arch("resnet_xs"), str(path), source, None, X) == f"checkpoint {path}"
    assert torch.equal(student.fc.weight, source.fc.weight)


def test_bad_checkpoints_are_user_errors(tmp_path):
    student = build_model("resnet_xs", 1, 10)
    record = resolve_arch("resnet_xs")
    with pytest.raises(UserError, match="no such checkpoint"):
        check_init(str(tmp_path / "missing.pt"))
    check_init("random")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file at all")
    with pytest.raises(UserError, match="corrupt or not a PyTorch file"):
        initialise_student_(student, record, str(corrupt), student, None, X)
    other = tmp_path / "other.pt"
    torch.save(build_model("resnet_s", 1, 10).state_dict(), other)
    with pytest.raises(UserError, match="does not fit the chosen student.*other shape"):
        initialise_student_(student, record, str(other), student, None, X)
    pickled = tmp_path / "pickled.pt"
    torch.save(build_model("resnet_xs", 1, 10), pickled)  # a whole pickled module
    with pytest.raises(UserError, match="not a plain state dict"):
        initialise_student_(student, record, str(pickled), student, None, X)


def test_a_student_cut_from_a_teacher_module_keeps_or_redraws_the_teachers_weights():
    """A pickled user teacher has no record (teacher_arch None): its derived students are built
    from the module, with its weights; "teacher" keeps them, "random" draws fresh ones."""
    from edgekd.models.student import build_student

    torch.manual_seed(0)
    teacher = build_model("resnet_m", 1, 10).eval()
    record = {"family": "derived", "origin": "teacher-derived", "drop": ["stages.1.1"], "width_ratio": 0.5,
              "channel_multiple": 8}
    kept = build_student(record, 1, 10, teacher, X[:1])
    expected = kept.fc.weight.clone()
    assert initialise_student_(kept, record, "teacher", teacher, None, X) == "teacher"
    assert torch.equal(kept.fc.weight, expected)
    redrawn = build_student(record, 1, 10, teacher, X[:1])
    assert initialise_student_(redrawn, record, "random", teacher, None, X) == "random"
    assert redrawn.fc.weight.shape == expected.shape and not torch.equal(redrawn.fc.weight, expected)
