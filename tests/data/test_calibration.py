"""Calibration manifests: the committed samples load, and every bad manifest fails with one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import load_dataset
from edgekd.data.calibration import load_calibration, read_manifest
from edgekd.errors import UserError

CALIBRATION = Path(__file__).resolve().parents[2] / "calibration"
SAMPLE = CALIBRATION / "samples" / "digits-20" / "manifest.yaml"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _copy_sample(tmp_path: Path) -> Path:
    folder = tmp_path / "digits-20"
    shutil.copytree(SAMPLE.parent, folder)
    return folder / "manifest.yaml"


def test_sample_manifest_loads_the_real_digits_it_lists():
    from sklearn.datasets import load_digits

    # The embedded digits are held in memory and never cropped; a run on them decodes calibration
    # PNGs as they are (DatasetSplits.calibration_crop gives 1.0 there).
    assert load_dataset(None, seed=0).calibration_crop(0.875) == 1.0
    x = load_calibration(SAMPLE, (1, 8, 8), crop_fraction=1.0)
    assert x.shape == (20, 1, 8, 8) and x.dtype == torch.float32
    # 0-0000.png is digit 0 of load_digits: the PNG's 8 bits give back x/16 to 1/255.
    digits = load_digits()
    assert np.abs(x[0, 0].numpy() - digits.images[0] / 16.0).max() <= 1 / 255
    # 2 per class, as the file names say
    labels = [int(name.split("-")[0]) for name in read_manifest(SAMPLE).images]
    assert sorted(labels) == sorted(list(range(10)) * 2)


def test_dataset_manifest_gives_the_first_training_images():
    x = load_calibration(CALIBRATION / "digits-train-300.yaml", [1, 8, 8])
    assert torch.equal(x, load_dataset(None, seed=0).train.x[:300])


def test_dataset_manifest_by_indices(tmp_path):
    manifest = _write(tmp_path / "m.yaml", "name: picked\ninput_shape: [1, 8, 8]\ndataset: digits\nsplit: val\n"
                                          "indices: [3, 0, 7]\n")
    x = load_calibration(manifest, (1, 8, 8))
    assert torch.equal(x, load_dataset(None).val.x[[3, 0, 7]])


def test_color_images_repeat_gray_to_three_channels(tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    Image.fromarray(np.full((4, 4), 200, np.uint8), mode="L").save(folder / "gray.png")
    Image.fromarray(np.array([255, 0, 0], np.uint8) * np.ones((4, 4, 1), np.uint8), mode="RGB").save(folder / "red.png")
    manifest = _write(folder / "m.yaml", "name: rgb\ninput_shape: [3, 4, 4]\nimages: [gray.png, red.png]\n")
    x = load_calibration(manifest, (3, 4, 4))
    assert x.shape == (2, 3, 4, 4)
    assert torch.allclose(x[0], torch.full((3, 4, 4), 200 / 255))
    assert x[1, 0].min() == 1.0 and x[1, 1:].max() == 0.0


def test_missing_files_are_listed_in_one_error(tmp_path):
    manifest = _copy_sample(tmp_path)
    for name in sorted(p.name for p in manifest.parent.glob("*.png"))[:7]:
        (manifest.parent / name).unlink()
    with pytest.raises(UserError) as info:
        load_calibration(manifest, (1, 8, 8))
    message = str(info.value)
    assert "7 of 20 image files are missing" in message
    assert "0-0000.png" in message and "and 2 more" in message  # 5 shown, the rest counted


def test_manifest_for_another_input_shape_is_refused():
    with pytest.raises(UserError, match=r"made for input shape \[1, 8, 8\], but the model takes \[3, 32, 32\]"):
        load_calibration(SAMPLE, (3, 32, 32))


def test_color_image_for_a_gray_model_is_refused(tmp_path):
    Image.fromarray(np.array([0, 255, 0], np.uint8) * np.ones((8, 8, 1), np.uint8), mode="RGB").save(tmp_path / "green.png")
    manifest = _write(tmp_path / "m.yaml", "name: x\ninput_shape: [1, 8, 8]\nimages: [green.png]\n")
    with pytest.raises(UserError, match="in color, but the model takes 1 channel"):
        load_calibration(manifest, (1, 8, 8))


def test_undecodable_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    manifest = _write(tmp_path / "m.yaml", "name: x\ninput_shape: [1, 8, 8]\nimages: [broken.png]\n")
    with pytest.raises(UserError, match="cannot decode image .*broken.png"):
        load_calibration(manifest, (1, 8, 8))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must hold a YAML mapping"),
        ("name: x\ninput_shape: [1, 8, 8]\nimage: [a.png]\n", "unknown key 'image'; did you mean 'images'"),
        ("name: x\nimages: [a.png]\n", "missing key 'input_shape'"),
        ("name: x\ninput_shape: [8, 8]\nimages: [a.png]\n", r"input_shape must be \[C, H, W\]"),
        ("name: x\ninput_shape: [1, 8, 8]\n", "either `images`"),
        ("name: x\ninput_shape: [1, 8, 8]\nimages: a.png\n", "must be a list of file paths"),
        ("name: x\ninput_shape: [1, 8, 8]\ndataset: digits\nsplit: dev\nfirst: 3\n", "split must be one of"),
        ("name: x\ninput_shape: [1, 8, 8]\ndataset: digits\n", "exactly one of `indices`"),
        ("name: x\ninput_shape: [1, 8, 8]\ndataset: digits\nindices: [1, 100000]\n", r"indices \[100000\] are beyond"),
        ("name: x\ninput_shape: [1, 8, 8]\nimages: [a.png]\n!!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_bad_manifests_raise_user_error(tmp_path, text, message):
    manifest = _write(tmp_path / "m.yaml", text)
    with pytest.raises(UserError, match=message):
        load_calibration(manifest, (1, 8, 8))


def test_missing_manifest(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_calibration(tmp_path / "nope.yaml", (1, 8, 8))
