"""`compress` with a user's own teacher (state dict, TorchScript) and image-folder data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_recipe import tiny_args

from edgekd.cli import main
from edgekd.models import build_model


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> Path:
    """3 classes of 12 RGB images each, told apart by their dominant colour."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir()
        for n in range(12):
            pixels = rng.integers(0, 80, size=(20, 20, 3), dtype=np.uint8)
            pixels[..., index] += 150
            Image.fromarray(pixels, "RGB").save(root / name / f"{n}.png")
    return root


def run_compress(tmp_path: Path, name: str, *extra: str) -> dict:
    # --allow-weak-teacher: these teachers are untrained; what is tested is the loading, not the teacher
    code = main(["compress", "--runs-dir", str(tmp_path), "--name", name, "--image-size", "16", "--allow-weak-teacher",
                 *extra, *tiny_args()])
    assert code == 0
    return json.loads((tmp_path / name / "report.json").read_text())


def test_torchscript_teacher_on_an_image_folder(tmp_path, rgb_folder):
    teacher = build_model("resnet_xs", 3, 3).eval()
    scripted = torch.jit.trace(teacher, torch.rand(1, 3, 16, 16))
    path = tmp_path / "teacher.ts"
    scripted.save(str(path))
    report = run_compress(tmp_path, "ts", "--data", str(rgb_folder), "--teacher", str(path))
    assert report["dataset"]["name"] == rgb_folder.name
    assert report["dataset"]["input_shape"] == [3, 16, 16]
    assert report["teacher_source"].endswith("(torchscript)")
    assert report["models"]["teacher"]["macs"] is None  # not countable for TorchScript: said, not guessed
    assert report["models"]["student_int8"]["precision"] == "int8"


def test_state_dict_teacher_with_arch(tmp_path, rgb_folder):
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": build_model("resnet_xs", 3, 3).state_dict()}, path)
    report = run_compress(tmp_path, "sd", "--data", str(rgb_folder), "--teacher", str(path),
                          "--teacher-arch", "resnet_xs")
    assert report["models"]["teacher"]["arch"] == "resnet_xs"
    assert report["models"]["teacher"]["params"] == sum(p.numel() for p in build_model("resnet_xs", 3, 3).parameters())
    # The run remembers which teacher file it used, so --resume can refuse a changed one.
    config = json.loads((tmp_path / "sd" / "config.json").read_text())
    assert config["teacher_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
