"""Loading a user's teacher checkpoint: state dicts, TorchScript, pickles, and broken files."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from edgekd.errors import UserError
from edgekd.models import build_model, resolve_arch
from edgekd.teacher.loading import load_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference():
    """A resnet_xs with non-default weights and BatchNorm statistics, plus an input batch."""
    torch.manual_seed(0)
    model = build_model("resnet_xs", 1, 10)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 1, 8, 8))  # move the BN running stats off their defaults
    model.eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    return model, x, expected


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_state_dict_loads_with_equal_outputs(tmp_path, reference):
    model, x, expected = reference
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    loaded, kind = load_teacher(path, "resnet_xs", 1, 10)
    assert kind == "state_dict"
    assert not loaded.training
    assert torch.equal(_outputs(loaded, x), expected)
    # an arch record works as well as a preset name, and a str path as well as a Path
    loaded, kind = load_teacher(str(path), resolve_arch("resnet_xs"), 1, 10)
    assert kind == "state_dict"
    assert torch.equal(_outputs(loaded, x), expected)


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model", "net"])
def test_wrapped_state_dict(tmp_path, reference, wrapper):
    model, x, expected = reference
    path = tmp_path / "ckpt.pt"
    torch.save({wrapper: model.state_dict(), "epoch": 12, "best_acc": 0.9}, path)
    loaded, kind = load_teacher(path, "resnet_xs", 1, 10)
    assert kind == "state_dict"
    assert torch.equal(_outputs(loaded, x), expected)


def test_torchscript_loads(tmp_path, reference):
    model, x, expected = reference
    path = tmp_path / "teacher_ts.pt"
    torch.jit.trace(model, x).save(str(path))
    # no arch needed for TorchScript; any given one is ignored
    loaded, kind = load_teacher(path, None, 1, 10)
    assert kind == "torchscript"
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert torch.allclose(_outputs(loaded, x), expected, atol=1e-6)


def test_full_pickle_refused_without_trust(tmp_path, reference):
    model, x, expected = reference
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(UserError) as info:
        load_teacher(path, "resnet_xs", 1, 10)
    message = str(info.value)
    assert "--trust-pickle" in message
    assert "runs code" in message


def test_full_pickle_loads_with_trust(tmp_path, reference, caplog):
    model, x, expected = reference
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with caplog.at_level(logging.WARNING, logger="edgekd.teacher.loading"):
        loaded, kind = load_teacher(path, None, 1, 10, trust_pickle=True)
    assert kind == "pickle"
    assert not loaded.training
    assert torch.equal(_outputs(loaded, x), expected)
    assert "pickled model" in caplog.text


def test_state_dict_with_trust_pickle_is_still_a_state_dict(tmp_path, reference):
    model, x, expected = reference
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    loaded, kind = load_teacher(path, "resnet_xs", 1, 10, trust_pickle=True)
    assert kind == "state_dict"


def test_truncated_state_dict_is_corrupt(tmp_path, reference):
    model, _, _ = reference
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    data = good.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    for trust in (False, True):
        with pytest.raises(UserError, match="corrupt"):
            load_teacher(path, "resnet_xs", 1, 10, trust_pickle=trust)


def test_truncated_torchscript_is_a_user_error(tmp_path, reference):
    model, x, _ = reference
    good = tmp_path / "ts.pt"
    torch.jit.trace(model, x).save(str(good))
    data = good.read_bytes()
    path = tmp_path / "ts_truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_teacher(path, "resnet_xs", 1, 10)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a checkpoint\n"])
def test_empty_or_text_file_is_corrupt(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="corrupt"):
        load_teacher(path, "resnet_xs", 1, 10)


def test_random_bytes_are_a_user_error_even_when_trusted(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    for trust in (False, True):
        with pytest.raises(UserError):
            load_teacher(path, "resnet_xs", 1, 10, trust_pickle=trust)


def test_random_bytes_are_reported_corrupt(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(UserError) as info:
        load_teacher(path, "resnet_xs", 1, 10)
    assert "corrupt" in str(info.value)
    assert "--trust-pickle" not in str(info.value)


def test_wrong_arch_does_not_fit(tmp_path):
    path = tmp_path / "s.pt"
    torch.save(build_model("resnet_s", 1, 10).state_dict(), path)
    with pytest.raises(UserError) as info:
        load_teacher(path, "resnet_xs", 1, 10)
    message = str(info.value)
    assert "does not fit architecture 'resnet_xs'" in message
    assert "1 input channel(s) and 10 classes" in message
    assert "size mismatch" in message


@pytest.mark.parametrize("channels, classes", [(3, 10), (1, 7)])
def test_wrong_channels_or_classes_does_not_fit(tmp_path, reference, channels, classes):
    model, _, _ = reference
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(UserError, match="does not fit"):
        load_teacher(path, "resnet_xs", channels, classes)


def test_deeper_arch_missing_keys_does_not_fit(tmp_path, reference):
    model, _, _ = reference
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    deeper = {"family": "resnet", "stem": 8, "widths": [8, 16, 32], "depths": [2, 1, 1]}
    with pytest.raises(UserError, match="does not fit"):
        load_teacher(path, deeper, 1, 10)


def test_state_dict_without_arch_asks_for_teacher_arch(tmp_path, reference):
    model, _, _ = reference
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(UserError, match="--teacher-arch"):
        load_teacher(path, None, 1, 10)


def test_unknown_arch_name(tmp_path, reference):
    model, _, _ = reference
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(UserError, match="unknown architecture"):
        load_teacher(path, "resnet_xxl", 1, 10)


@pytest.mark.parametrize("obj", [[1, 2, 3], {}, {"epoch": 3}, {"state_dict": {"a": 1}}, torch.zeros(3)])
def test_file_without_state_dict(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match="holds no state dict"):
        load_teacher(path, "resnet_xs", 1, 10)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_teacher(tmp_path / "nope.pt", "resnet_xs", 1, 10)
    with pytest.raises(UserError, match="does not exist"):
        load_teacher(tmp_path, "resnet_xs", 1, 10)  # a directory is not a checkpoint
