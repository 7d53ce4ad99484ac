"""Tests for edgekd.data: digits, image folders, IDX files, and the real Fashion-MNIST copy."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.config import DataConfig, load_recipe
from edgekd.data import DatasetSplits, Split, load_dataset
from edgekd.errors import UserError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- helpers ---------------------------------------------------------------------------------


def _images(split: Split) -> torch.Tensor:
    """Every image of a split (decoding them, for one streamed from disk)."""
    return split.images(torch.arange(len(split)))


def _all_rows(splits: DatasetSplits) -> list[torch.Tensor]:
    return [_images(splits.train), _images(splits.val), _images(splits.test)]


def _load(path=None, seed: int = 0, **data) -> DatasetSplits:
    return load_dataset(path, seed=seed, settings=DataConfig(**data))


def _row_keys(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def _write_png(path: Path, mode: str, size: tuple[int, int] = (10, 7), value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 30)
    Image.new(mode, size, color).save(path)


def _make_tree(root: Path, classes: dict[str, int], mode: str = "L", rgb_one: bool = False) -> None:
    """classes: name -> number of images; rgb_one makes the very first image RGB."""
    first = True
    for name, count in classes.items():
        for i in range(count):
            image_mode = "RGB" if (rgb_one and first) else mode
            _write_png(root / name / f"img{i}.png", image_mode, value=10 * i + 5)
            first = False


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def _write_idx_folder(root: Path, n_train: int = 40, n_test: int = 10, gz: bool = False) -> dict:
    """Tiny MNIST-style folder with 5x4 images; labels cycle 0..3."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 4,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 4,
    }
    for name, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


# --- digits ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset(seed=0)


def test_digits_shapes_and_range(digits: DatasetSplits) -> None:
    assert digits.name == "digits"
    assert digits.classes == [str(i) for i in range(10)]
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.val) == len(digits.test) == round(1797 * 0.15)
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.min() >= 0 and split.x.max() <= 1
    assert digits.train.x.max() == 1.0  # 16/16 occurs: values were scaled by 16, not 255
    assert set(digits.test.y.tolist()) == set(range(10))  # stratified: every class in test


def test_digits_summary(digits: DatasetSplits) -> None:
    assert digits.summary() == {
        "name": "digits",
        "n_train": len(digits.train),
        "n_val": len(digits.val),
        "n_test": len(digits.test),
        "input_shape": [1, 8, 8],
        "image_size_origin": "the data's own size",
        "preprocessing": "float32 NCHW in [0, 1], no normalisation",
        "classes": 10,
        "class_names": [str(i) for i in range(10)],
        "source": "sklearn.datasets.load_digits",
    }


def test_digits_same_seed_same_split(digits: DatasetSplits) -> None:
    again = load_dataset(seed=0)
    for a, b in zip(_all_rows(digits), _all_rows(again)):
        assert torch.equal(a, b)
    assert torch.equal(digits.train.y, again.train.y)


def test_digits_other_seed_other_split(digits: DatasetSplits) -> None:
    other = load_dataset(seed=1)
    assert not torch.equal(digits.test.x, other.test.x)


def test_digits_splits_do_not_overlap(digits: DatasetSplits) -> None:
    # Compare samples by content; digits has a few exact duplicates, so count rows instead of
    # keys: the three splits together must hold each distinct image as often as the full set.
    from sklearn.datasets import load_digits

    full = torch.from_numpy(load_digits().images[:, None] / 16.0).float()
    combined = torch.cat(_all_rows(digits))
    full_sorted = sorted(row.numpy().tobytes() for row in full)
    combined_sorted = sorted(row.numpy().tobytes() for row in combined)
    assert full_sorted == combined_sorted


def test_digits_fractions(digits: DatasetSplits) -> None:
    splits = _load(val_fraction=0.1, test_fraction=0.2)
    assert len(splits.val) == round(1797 * 0.1)
    assert len(splits.test) == round(1797 * 0.2)


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.2, 1.0), (0.6, 0.5), (-0.1, 0.1)])
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(UserError, match="fraction"):
        load_recipe(None, [f"data.val_fraction={val}", f"data.test_fraction={test}"])


# --- Split -----------------------------------------------------------------------------------


def _toy_split(n: int = 10) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1), torch.arange(n))


def test_split_batches_in_order() -> None:
    batches = list(_toy_split().batches(4))
    assert [len(y) for _, y, _ in batches] == [4, 4, 2]
    assert torch.cat([y for _, y, _ in batches]).tolist() == list(range(10))
    assert torch.cat([index for _, _, index in batches]).tolist() == list(range(10))


def test_split_batches_shuffle_is_seeded() -> None:
    split = _toy_split()
    def order(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y, _ in split.batches(3, shuffle=True, generator=gen)])

    first, second = order(5), order(5)
    assert torch.equal(first, second)
    assert sorted(first.tolist()) == list(range(10))
    for x, y, index in split.batches(3, shuffle=True):
        assert torch.equal(x.flatten().long(), y) and torch.equal(y, index)  # x, y and index stay paired


def test_split_subset_and_checks() -> None:
    split = _toy_split()
    assert split.subset(3).y.tolist() == [0, 1, 2]
    assert len(split.subset(100)) == 10
    with pytest.raises(UserError, match="batch_size"):
        list(split.batches(0))
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(4, dtype=torch.int64))


# --- image folders ---------------------------------------------------------------------------


def test_image_folder_gray(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    _make_tree(root, {"circle": 6, "square": 6, "triangle": 6})
    splits = _load(root, image_size=12)
    assert splits.name == "shapes"
    assert splits.classes == ["circle", "square", "triangle"]
    assert splits.input_shape == (1, 12, 12)
    assert splits.source == str(root.resolve())
    assert len(splits.train) + len(splits.val) + len(splits.test) == 18
    assert len(splits.val) == len(splits.test) == 3  # one image of each class, stratified
    assert sorted(splits.test.y.tolist()) == [0, 1, 2]
    # Uniform images stay uniform under resizing; check the /255 scaling on one of them.
    values = {round(float(x.mean()) * 255) for x in _images(splits.train)}
    assert values <= {10 * i + 5 for i in range(6)}


def test_image_folder_rgb_if_any_color(tmp_path: Path) -> None:
    _make_tree(tmp_path / "mixed", {"a": 4, "b": 4}, rgb_one=True)
    splits = _load(tmp_path / "mixed", image_size=8, seed=3)
    assert splits.input_shape == (3, 8, 8)
    assert all(_images(s).shape[1] == 3 for s in (splits.train, splits.val, splits.test))
    assert float(torch.cat(_all_rows(splits)).max()) <= 1.0


def test_image_folder_formats_and_hidden_files(tmp_path: Path) -> None:
    root = tmp_path / "fmt"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (5, 5), (1, 2, 3)).save(root / "a" / "x.JPG", format="JPEG")
    Image.new("L", (5, 5), 9).save(root / "a" / "y.bmp")
    Image.new("L", (5, 5), 9).convert("P").save(root / "a" / "z.gif")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "._x.png").write_bytes(b"macOS resource fork")
    for i in range(3):
        _write_png(root / "b" / f"{i}.webp", "L")
    (root / ".cache").mkdir()
    splits = _load(root, image_size=4)
    assert splits.classes == ["a", "b"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 6
    assert splits.input_shape == (3, 4, 4)  # the JPEG is colour


def test_image_folder_deterministic(tmp_path: Path) -> None:
    _make_tree(tmp_path / "d", {"a": 6, "b": 6, "c": 6}, rgb_one=True)
    first, again = _load(tmp_path / "d", seed=7, image_size=6), _load(tmp_path / "d", seed=7, image_size=6)
    for a, b in zip(_all_rows(first), _all_rows(again)):
        assert torch.equal(a, b)
    assert torch.equal(first.train.y, again.train.y)


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    _make_tree(root / "train", {"cat": 8, "dog": 8})
    _make_tree(root / "test", {"cat": 2, "dog": 3})
    splits = _load(root, image_size=6)
    assert splits.classes == ["cat", "dog"]
    assert len(splits.test) == 5  # exactly the test/ folder
    assert sorted(splits.test.y.tolist()) == [0, 0, 1, 1, 1]
    assert len(splits.train) + len(splits.val) == 16  # val comes out of train/
    assert len(splits.val) == round(16 * 0.15)
    assert splits.input_shape == (1, 6, 6)


def test_image_folder_train_val_test_layout(tmp_path: Path) -> None:
    root = tmp_path / "full"
    _make_tree(root / "train", {"a": 3, "b": 3})
    _make_tree(root / "val", {"a": 1, "b": 1})
    _make_tree(root / "test", {"a": 2, "b": 1}, rgb_one=True)
    splits = _load(root, image_size=5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 3)
    assert splits.input_shape == (3, 5, 5)  # one colour image anywhere makes every split RGB


def test_class_named_train_is_a_class(tmp_path: Path) -> None:
    _make_tree(tmp_path / "vehicles", {"bus": 4, "car": 4, "train": 4})
    splits = _load(tmp_path / "vehicles", image_size=4)
    assert splits.classes == ["bus", "car", "train"]


# --- image-folder errors ---------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dataset path '.*nope' does not exist"):
        load_dataset(tmp_path / "nope")


def test_file_path(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2\n")
    with pytest.raises(UserError, match="is a file"):
        load_dataset(path)


def test_too_few_classes(tmp_path: Path) -> None:
    _make_tree(tmp_path / "one", {"only": 5})
    with pytest.raises(UserError, match=r"found 1 class folder.*<class>/<image>\.png"):
        load_dataset(tmp_path / "one")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="found 0 class folder"):
        load_dataset(tmp_path / "empty")


def test_class_without_images(tmp_path: Path) -> None:
    _make_tree(tmp_path / "t", {"a": 3, "b": 3})
    (tmp_path / "t" / "c").mkdir()
    (tmp_path / "t" / "c" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"class folder '.*[/\\]c' has no images"):
        load_dataset(tmp_path / "t")


def test_undecodable_image(tmp_path: Path) -> None:
    _make_tree(tmp_path / "t", {"a": 3, "b": 3})
    (tmp_path / "t" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"cannot read image '.*broken\.png'"):
        load_dataset(tmp_path / "t")  # found when the headers are scanned, before any work


def test_split_classes_differ(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    _make_tree(root / "train", {"cat": 4, "dog": 4})
    _make_tree(root / "test", {"cat": 2, "fox": 2})
    with pytest.raises(UserError, match=r"differ from train/: missing \['dog'\]; extra \['fox'\]"):
        load_dataset(root)


def test_too_small_to_split(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tiny", {"a": 1, "b": 1})
    with pytest.raises(UserError, match="only 2 samples, too few to split"):
        _load(tmp_path / "tiny", image_size=4)


# --- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path: Path, gz: bool) -> None:
    arrays = _write_idx_folder(tmp_path / "mnist", gz=gz)
    splits = load_dataset(tmp_path / "mnist", seed=2)
    assert splits.name == "mnist"
    assert splits.classes == ["0", "1", "2", "3"]
    assert splits.input_shape == (1, 5, 4)
    assert len(splits.test) == 10 and len(splits.val) == 6 and len(splits.train) == 34
    expected_test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:, None] / 255.0).float()
    assert torch.allclose(splits.test.x, expected_test)  # test keeps file order
    assert splits.test.y.tolist() == (np.arange(10) % 4).tolist()
    # train + val are exactly the train file's images, each once
    train_rows = sorted(r.tobytes() for r in arrays["train-images-idx3-ubyte"])
    got = torch.cat([_images(splits.train), _images(splits.val)]).mul(255).round().to(torch.uint8).squeeze(1)
    assert sorted(r.numpy().tobytes() for r in got) == train_rows


def test_idx_fashion_names(tmp_path: Path) -> None:
    _write_idx_folder(tmp_path / "my-fashion-copy")
    splits = load_dataset(tmp_path / "my-fashion-copy")
    assert splits.classes[0] == "T-shirt/top" and splits.num_classes == 10


def test_idx_missing_file(tmp_path: Path) -> None:
    _write_idx_folder(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset(tmp_path / "m")


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b"\x08\x03" + b[2:], "bad magic number"),
        (lambda b: b[:-7], "is truncated"),
        (lambda b: b[:10], "is truncated"),
        (lambda b: b + b"xx", "trailing bytes"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "data type 0x0d"),
    ],
)
def test_idx_corrupt(tmp_path: Path, corrupt, message: str) -> None:
    _write_idx_folder(tmp_path / "m")
    target = tmp_path / "m" / "train-images-idx3-ubyte"
    target.write_bytes(corrupt(target.read_bytes()))
    with pytest.raises(UserError, match=message) as info:
        load_dataset(tmp_path / "m")
    assert "train-images-idx3-ubyte" in str(info.value)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    _write_idx_folder(tmp_path / "m", gz=True)
    target = tmp_path / "m" / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:20])
    with pytest.raises(UserError, match=r"cannot read IDX file '.*t10k-images-idx3-ubyte\.gz'"):
        load_dataset(tmp_path / "m")


def test_idx_count_mismatch(tmp_path: Path) -> None:
    _write_idx_folder(tmp_path / "m")
    labels = _idx_bytes(np.zeros(39, dtype=np.uint8))
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(UserError, match="40 images but .* 39 labels"):
        load_dataset(tmp_path / "m")


# --- the real Fashion-MNIST ------------------------------------------------------------------


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"no Fashion-MNIST copy at {FASHION_DIR}")
def test_real_fashion_mnist() -> None:
    splits = load_dataset(FASHION_DIR, seed=0)
    assert splits.name == "fashion-mnist"
    assert splits.num_classes == 10 and splits.classes[-1] == "Ankle boot"
    assert splits.input_shape == (1, 28, 28)
    assert len(splits.val) == 9000 and len(splits.train) == 51000 and len(splits.test) == 10000
    assert splits.train.x.dtype == torch.float32
    assert 0.0 <= float(splits.test.x.min()) and float(splits.test.x.max()) <= 1.0
    # Stratified: every class has 6000 train images, so 900 of each land in val.
    assert torch.bincount(splits.val.y, minlength=10).tolist() == [900] * 10
