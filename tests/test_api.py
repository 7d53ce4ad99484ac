"""The Python API: the README's example runs as written (with the tiny recipe added, for time), and
an nn.Module teacher with a torch Dataset goes through the same pipeline as the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tiny_recipe import TINY

import edgekd
from edgekd.errors import UserError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    text = README.read_text()
    marker = text.index("<!-- api-example")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


def test_the_readmes_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real = edgekd.compress

    def quick(*args, overrides=(), **kwargs):  # the README's call, plus the tiny recipe's settings
        return real(*args, overrides=[*overrides, *TINY], **kwargs)  # the tiny settings win, for time

    monkeypatch.setattr(edgekd.api, "compress", quick)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()[-2:]  # after whatever the libraries printed
    student, met, source = out[0].split(" ", 2)
    assert student.startswith("resnet_w") and met in ("True", "False") and source == "measured"
    assert out[1].endswith("runs/from-python/report.html")
    assert (tmp_path / "runs" / "from-python" / "report.html").is_file()


class Digits(torch.utils.data.Dataset):
    """A user's own Dataset: the embedded digits as (image, label) pairs, with torchvision-style
    `targets` and `classes`."""

    def __init__(self):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        self.images = torch.tensor(bunch.images[:, None] / 16.0, dtype=torch.float32)
        self.targets = [int(y) for y in bunch.target]
        self.classes = [str(i) for i in range(10)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def test_an_nn_module_teacher_and_a_torch_dataset(tmp_path):
    from edgekd.models import build_model

    teacher = build_model("resnet_xs", 1, 10)
    ctx = edgekd.compress(teacher, Digits(), target="x86-cpu", budget_ms=1000, overrides=TINY,
                          run_dir=tmp_path / "py", until="search", allow_weak_teacher=True)
    assert ctx.data.name == "Digits" and ctx.data.num_classes == 10 and len(ctx.data.train) > 1000
    assert ctx.result("search").chosen.startswith("resnet_w")
    assert "pickle" in ctx.teacher.source  # saved beside the runs, reloaded with trust (it came from this process)
    with pytest.raises(UserError, match="continue it from Python"):
        from edgekd.start import resume_run

        resume_run(tmp_path / "py").data


def test_bad_input_raises_a_user_error_before_any_work(tmp_path):
    with pytest.raises(UserError, match="budget-ms must be a positive number"):
        edgekd.compress(budget_ms=float("nan"), run_dir=tmp_path / "x")
    with pytest.raises(UserError, match="unknown stage"):
        edgekd.compress(until="deploy", run_dir=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
