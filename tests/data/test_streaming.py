"""Image folders streamed from disk: the size rule, the class order, normalisation, a broken file
found inside a DataLoader worker, and the saved split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from edgekd.config import DataConfig
from edgekd.data import load_dataset
from edgekd.data.datasets import load_file_lists
from edgekd.data.files import FileImages
from edgekd.errors import UserError


def make_folder(root: Path, sizes: list[tuple[int, int]], classes=("cat", "dog"), per_class: int = 6) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = sizes[(c * per_class + i) % len(sizes)]
            Image.new("RGB", size, (40 * c + 5 * i, 100, 200 - 10 * i)).save(root / name / f"{i}.jpg", quality=95)
    return root


def load(root, teacher_size=None, **data):
    return load_dataset(root, seed=0, settings=DataConfig(**data), teacher_size=teacher_size)


def test_uniform_images_keep_their_own_size(tmp_path):
    splits = load(make_folder(tmp_path / "d", [(20, 20)]))
    assert splits.input_shape == (3, 20, 20) and splits.image_size_origin == "the images' own size"
    assert isinstance(splits.train.source, FileImages)  # file paths only: nothing decoded yet


def test_mixed_sizes_need_an_image_size_and_the_error_lists_them(tmp_path):
    root = make_folder(tmp_path / "d", [(20, 20), (32, 24)])
    with pytest.raises(UserError, match=r"not all one square size \(.*20x20 \(6\).*32x24 \(6\).*--image-size"):
        load(root)
    assert load(root, teacher_size=16).input_shape == (3, 16, 16)  # the teacher's input size
    splits = load(root, image_size=12)
    assert splits.input_shape == (3, 12, 12) and splits.image_size_origin == "data.image_size"
    images, _, _ = next(splits.train.batches(4))
    assert images.shape == (4, 3, 12, 12)


def test_resize_then_centre_crop_as_torchvision_evaluates(tmp_path):
    root = tmp_path / "d"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            image = Image.new("L", (40, 20), 0)
            image.paste(255, (10, 0, 30, 20))  # a white centre band 20 px wide
            image.save(root / name / f"{i}.png")
    # shorter side 20 -> 16 / 0.8 = 20 (no scaling), centre crop 16: the crop lies inside the band
    splits = load(root, image_size=16, crop_fraction=0.8)
    assert torch.all(splits.train.head(1) == 1.0)


def test_an_image_already_at_the_size_is_resized_and_cropped_as_torchvision_does(tmp_path):
    # torchvision's Resize(256) + CenterCrop(224) zooms a 224-px image too: a teacher trained that
    # way must see the same pixels from edgekd (the e2e benchmark found a 14-point gap before).
    root = tmp_path / "d"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            image = Image.new("L", (16, 16), 0)
            image.paste(255, (4, 4, 12, 12))  # an 8-px white square in the middle
            image.save(root / name / f"{i}.png")
    zoomed = load(root, crop_fraction=0.5).train.head(1)[0, 0]  # 16 -> 32, centre 16: the square fills it
    assert zoomed.shape == (16, 16) and torch.all(zoomed[2:14, 2:14] == 1.0)
    as_is = load(root, crop_fraction=1.0).train.head(1)[0, 0]  # 1.0: the file's pixels as they are
    assert torch.all(as_is[4:12, 4:12] == 1.0) and torch.all(as_is[:4] == 0.0)


def test_class_order_given_by_the_user_sets_the_labels(tmp_path):
    root = make_folder(tmp_path / "d", [(8, 8)])
    default = load(root)
    swapped = load(root, classes=["dog", "cat"])
    assert default.classes == ["cat", "dog"] and swapped.classes == ["dog", "cat"]
    first = default.train.source.paths[0]
    label = int(default.train.y[0])
    assert int(swapped.train.y[swapped.train.source.paths.index(first)]) == 1 - label
    with pytest.raises(UserError, match=r"folders not in the class order: \['dog'\]; classes without a folder: "
                                        r"\['bird'\]"):
        load(root, classes=["cat", "bird"])
    (tmp_path / "order.txt").write_text("dog\ncat\n")
    assert load(root, classes=str(tmp_path / "order.txt")).classes == ["dog", "cat"]


def test_normalisation_is_applied_to_every_image(tmp_path):
    root = make_folder(tmp_path / "d", [(8, 8)])
    raw = load(root).train.head(3)
    normalised = load(root, mean="imagenet", std="imagenet").train.head(3)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(normalised, (raw - mean) / std, atol=1e-6)
    bgr = load(root, mean=[0.0], std=[1.0], channel_order="bgr", input_scale=255.0).train.head(3)
    assert torch.allclose(bgr, raw.flip(1) * 255, atol=1e-4)


def test_gray_images_become_rgb_only_when_asked(tmp_path):
    root = tmp_path / "g"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (8, 8), 30 * i).save(root / name / f"{i}.png")
    assert load(root).input_shape == (1, 8, 8)
    rgb = load(root, channels=3)
    image = rgb.train.head(1)
    assert rgb.input_shape == (3, 8, 8) and torch.equal(image[:, 0], image[:, 2])


def test_a_broken_file_found_inside_a_worker_is_named_in_one_line(tmp_path):
    root = make_folder(tmp_path / "d", [(16, 16)], per_class=8)
    broken = root / "dog" / "3.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(broken)
    data = bytearray(broken.read_bytes())
    data[200:260] = bytes(60)  # inside the pixel data: the header reads, the pixels do not
    broken.write_bytes(bytes(data))
    splits = load(root, workers=2, image_size=16)
    split = next(s for s in (splits.train, splits.val, splits.test) if broken in s.source.paths)
    with pytest.raises(UserError) as caught:
        for _ in split.batches(4):
            pass
    message = str(caught.value)
    assert "3.png" in message and "cannot decode image" in message
    assert "\n" not in message and "Traceback" not in message


def test_the_saved_split_gives_back_the_same_files_and_pixels(tmp_path):
    root = make_folder(tmp_path / "d", [(10, 10)])
    splits = load(root, mean=[0.5], std=[0.5])
    again = load_file_lists(splits.file_lists(), DataConfig(mean=[0.5], std=[0.5]))
    for name in ("train", "val", "test"):
        a, b = getattr(splits, name), getattr(again, name)
        assert a.source.paths == b.source.paths and torch.equal(a.y, b.y)
        assert torch.equal(a.head(2), b.head(2))
    assert splits.train.fingerprint() == again.train.fingerprint()


def test_a_file_that_changed_changes_the_fingerprint(tmp_path):
    root = make_folder(tmp_path / "d", [(10, 10)])
    splits = load(root)
    before = splits.train.fingerprint()
    path = splits.train.source.paths[0]
    Image.new("RGB", (10, 10), (1, 2, 3)).save(path, quality=50)
    assert load(root).train.fingerprint() != before
