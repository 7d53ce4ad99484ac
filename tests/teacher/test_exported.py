"""Teachers as teams have them: a torch.export program (.pt2) with its input shape and metadata,
timm/torchvision names, a teacher fed the wrong channel count, and a teacher near chance level."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgekd.cli import main
from edgekd.errors import MissingDependencyError, UserError
from edgekd.teacher.exported import load_exported
from edgekd.teacher.hub import build_hub_model
from edgekd.teacher.loading import load_teacher, teacher_file_facts
from edgekd.teacher.resolve import Teacher, check_teacher_accuracy


class Tiny(nn.Module):
    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def export(path, model, shape, *, dynamic_batch=True, metadata=None):
    dims = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.export.export(model.eval(), (torch.rand(*shape),), dynamic_shapes=dims)
    extra = {"edgekd.json": json.dumps(metadata)} if metadata else None
    torch.export.save(program, str(path), extra_files=extra)
    return path


def test_a_pt2_teacher_loads_with_its_input_shape_and_metadata(tmp_path):
    model = Tiny(3)
    path = export(tmp_path / "t.pt2", model, (2, 3, 16, 16), metadata={"classes": list("abcdefghij"), "mean": [0.5]})
    loaded, kind = load_teacher(path, None, 3, 10)
    x = torch.rand(5, 3, 16, 16)
    assert kind == "exported program" and torch.allclose(loaded(x), model(x), atol=1e-5)
    metadata, shape = teacher_file_facts(path)
    assert shape == (3, 16, 16) and metadata["classes"] == list("abcdefghij")


def test_a_pt2_exported_for_one_batch_size_still_runs_any_batch(tmp_path):
    model = Tiny()
    path = export(tmp_path / "t.pt2", model, (1, 1, 8, 8), dynamic_batch=False)
    loaded, _, _ = load_exported(path)
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_cli_pt2_teacher_of_another_input_size_fails_before_any_work(tmp_path, capsys):
    path = export(tmp_path / "t.pt2", Tiny(), (2, 1, 16, 16))
    code = main(["compress", "--teacher", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "exported for 16x16 inputs" in err and "--image-size 16" in err
    assert not (tmp_path / "runs").exists()


def test_cli_a_teacher_taking_rgb_on_gray_data_names_both_counts_and_the_option(tmp_path, capsys):
    scripted = torch.jit.script(Tiny(3).eval())
    path = tmp_path / "rgb.pt"
    scripted.save(str(path))
    code = main(["compress", "--teacher", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "takes 3-channel images, but the data has 1 channel(s)" in err and "--channels 3" in err
    assert not (tmp_path / "runs").exists()


def test_cli_a_teacher_near_chance_stops_the_run_and_names_the_causes(tmp_path, capsys):
    torch.manual_seed(0)
    scripted = torch.jit.script(Tiny(1).eval())  # untrained: chance level on the digits
    path = tmp_path / "random.pt"
    scripted.save(str(path))
    code = main(["compress", "--teacher", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    for cause in ("near chance", "--mean/--std", "--channels", "--image-size", "--classes", "--allow-weak-teacher"):
        assert cause in err[0]
    assert not (tmp_path / "runs").exists()


def test_allow_weak_teacher_goes_on_with_a_warning(caplog):
    weak = Teacher(Tiny(), None, "t", 0.11)
    with pytest.raises(UserError, match="near chance"):
        check_teacher_accuracy(weak, 10, allow_weak=False)
    check_teacher_accuracy(weak, 10, allow_weak=True)
    assert "near chance" in caplog.text
    check_teacher_accuracy(Teacher(Tiny(), None, "t", 0.9), 10, allow_weak=False)  # a good one passes


@pytest.mark.parametrize("name, extra", [("timm:resnet18", "timm"), ("torchvision:resnet18", "torchvision")])
def test_hub_names_need_their_extra(name, extra):
    try:
        model = build_hub_model(name, 3, 10)
    except MissingDependencyError as exc:
        assert f"pip install 'edgekd[{extra}]'" in str(exc)
        pytest.skip(f"{extra} does not import here (it is an optional extra): {exc}")
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
