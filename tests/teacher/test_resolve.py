"""The run's teacher: trained on first use and cached, reused from the cache, copied into the run
dir, and a user's own checkpoint checked against the data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from edgekd.config import load_recipe, to_dict
from edgekd.errors import UserError
from edgekd.io import cache_dir
from edgekd.models import build_model
from edgekd.run import RunContext, RunSpec
from edgekd.target import load_target
from edgekd.teacher.resolve import Teacher, resolve_teacher

SETTINGS = ["teacher.arch='resnet_xs'", "teacher.epochs=1", "teacher.batch_size=128"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(path))
    return path


def _spec(overrides=(), **fields) -> RunSpec:
    recipe = load_recipe(None, [*SETTINGS, *overrides])
    return RunSpec(target=to_dict(load_target("x86-cpu")), recipe=to_dict(recipe), **fields)


def _context(run_dir: Path, overrides=(), **fields) -> RunContext:
    return RunContext.create(run_dir, _spec(overrides, **fields))


def _cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "teachers").glob("*.pt")) if (cache / "teachers").is_dir() else []


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- cache_dir ----------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEKD_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "edgekd"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "edgekd"
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("EDGEKD_CACHE_DIR", "")  # empty means unset
    assert cache_dir() == tmp_path / "xdg" / "edgekd"


# ---- trained and cached teacher ----------------------------------------------------------------


@pytest.fixture
def first(tmp_path, cache, caplog):
    """One teacher trained from scratch in an empty cache."""
    torch.manual_seed(0)
    ctx = _context(tmp_path / "run1")
    with caplog.at_level(logging.INFO, logger="edgekd.teacher.resolve"):
        teacher = resolve_teacher(ctx)
    return ctx, teacher, caplog.text


def test_trains_and_writes_cache_and_run_copy(first, cache):
    ctx, teacher, log_text = first
    assert isinstance(teacher, Teacher)
    assert "teacher: training resnet_xs on digits" in log_text
    assert "using cached" not in log_text
    assert teacher.arch["name"] == "resnet_xs"
    assert 0.0 <= teacher.val_accuracy <= 1.0
    assert not teacher.model.training

    files = _cache_files(cache)
    assert len(files) == 1
    assert files[0].name.startswith("digits-resnet_xs-")
    assert str(files[0]) in teacher.source
    assert not list((cache / "teachers").glob("*.tmp"))  # the temporary file was moved into place

    cached = build_model("resnet_xs", 1, 10)
    cached.load_state_dict(torch.load(files[0], weights_only=True))
    assert _same_weights(cached, teacher.model)

    run_copy = ctx.run_dir / "teacher" / "teacher.pt"
    assert run_copy.is_file()
    copied = build_model("resnet_xs", 1, 10)
    copied.load_state_dict(torch.load(run_copy, weights_only=True))
    assert _same_weights(copied, teacher.model)
    info = __import__("json").loads(run_copy.with_suffix(".json").read_text())
    assert info["arch"] == teacher.arch and info["val_accuracy"] == teacher.val_accuracy


def test_second_run_uses_cache(first, tmp_path, cache, caplog):
    _, teacher, _ = first
    (cache_file,) = _cache_files(cache)
    mtime = cache_file.stat().st_mtime_ns
    ctx2 = _context(tmp_path / "run2")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgekd.teacher.resolve"):
        again = ctx2.teacher  # the RunContext's lazy property goes through resolve_teacher
    assert "using cached" in caplog.text
    assert "teacher: training" not in caplog.text
    assert cache_file.stat().st_mtime_ns == mtime
    assert _cache_files(cache) == [cache_file]
    assert _same_weights(again.model, teacher.model)
    assert again.arch == teacher.arch
    assert not again.model.training
    assert (ctx2.run_dir / "teacher" / "teacher.pt").is_file()


def test_different_settings_get_their_own_cache_entry(first, tmp_path, cache, caplog):
    ctx2 = _context(tmp_path / "run2", seed=1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgekd.teacher.resolve"):
        resolve_teacher(ctx2)
    assert "using cached" not in caplog.text
    assert len(_cache_files(cache)) == 2


def test_resumed_run_keeps_its_teacher_without_the_cache(first, cache, caplog):
    ctx, teacher, _ = first
    for path in _cache_files(cache):
        path.unlink()  # the cache was cleared: the run dir's copy still holds the teacher
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgekd.teacher.resolve"):
        resumed = resolve_teacher(RunContext.load(ctx.run_dir))
    assert "teacher: training" not in caplog.text
    assert _cache_files(cache) == []
    assert _same_weights(resumed.model, teacher.model)
    assert resumed.source == teacher.source
    assert resumed.val_accuracy == teacher.val_accuracy


def test_corrupt_cache_is_retrained_with_a_warning(first, tmp_path, cache, caplog):
    (cache_file,) = _cache_files(cache)
    cache_file.write_bytes(b"\x00garbage, not a checkpoint" * 10)
    ctx2 = _context(tmp_path / "run2")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgekd.teacher.resolve"):
        teacher = resolve_teacher(ctx2)  # not fatal
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "unreadable" in warnings[0].getMessage() and "retraining" in warnings[0].getMessage()
    assert "teacher: training" in caplog.text
    # the cache entry is whole again and holds the new teacher
    fixed = build_model("resnet_xs", 1, 10)
    fixed.load_state_dict(torch.load(cache_file, weights_only=True))
    assert _same_weights(fixed, teacher.model)


def test_cache_entry_of_wrong_shape_is_retrained(first, tmp_path, cache, caplog):
    (cache_file,) = _cache_files(cache)
    torch.save(build_model("resnet_s", 1, 10).state_dict(), cache_file)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgekd.teacher.resolve"):
        teacher = resolve_teacher(_context(tmp_path / "run2"))
    assert "unreadable" in caplog.text
    assert teacher.arch["name"] == "resnet_xs"


# ---- the user's own teacher -------------------------------------------------------------------


def test_user_state_dict_teacher(tmp_path, cache):
    torch.manual_seed(0)
    model = build_model("resnet_xs", 1, 10)
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    ctx = _context(tmp_path / "run", teacher=str(path), teacher_arch="resnet_xs")
    teacher = resolve_teacher(ctx)
    assert teacher.source == f"{path} (state_dict)"
    assert teacher.arch["name"] == "resnet_xs"
    assert _same_weights(teacher.model, model)
    assert 0.0 <= teacher.val_accuracy <= 1.0
    assert _cache_files(cache) == []  # nothing trained, nothing cached


def test_user_torchscript_teacher_has_no_arch(tmp_path, cache):
    model = build_model("resnet_xs", 1, 10).eval()
    path = tmp_path / "mine_ts.pt"
    torch.jit.trace(model, torch.zeros(1, 1, 8, 8)).save(str(path))
    teacher = resolve_teacher(_context(tmp_path / "run", teacher=str(path)))
    assert teacher.arch is None
    assert teacher.source.endswith("(torchscript)")


def test_user_teacher_with_wrong_class_count_is_rejected(tmp_path, cache):
    model = build_model("resnet_xs", 1, 7).eval()  # digits has 10 classes
    path = tmp_path / "seven.pt"
    torch.jit.trace(model, torch.zeros(1, 1, 8, 8)).save(str(path))
    with pytest.raises(UserError, match="outputs shape .*7.* 10 classes"):
        resolve_teacher(_context(tmp_path / "run", teacher=str(path)))


def test_user_teacher_with_wrong_input_channels_is_rejected(tmp_path, cache):
    model = build_model("resnet_xs", 3, 10).eval()  # digits is 1-channel
    path = tmp_path / "rgb.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 8, 8)).save(str(path))
    with pytest.raises(UserError, match=r"takes 3-channel images, but the data has 1 channel\(s\); convert them with --channels 3"):
        resolve_teacher(_context(tmp_path / "run", teacher=str(path)))


class _TupleOut(torch.nn.Module):
    """A teacher whose forward returns (logits, features), as many training codebases do."""

    def __init__(self):
        super().__init__()
        self.body = build_model("resnet_xs", 1, 10)

    def forward(self, x):
        logits = self.body(x)
        return logits, x


def test_user_teacher_returning_a_tuple_is_rejected_clearly(tmp_path, cache):
    path = tmp_path / "tuple_ts.pt"
    torch.jit.trace(_TupleOut().eval(), torch.zeros(1, 1, 8, 8), strict=False).save(str(path))
    with pytest.raises(UserError, match="returns tuple, not one tensor"):
        resolve_teacher(_context(tmp_path / "run", teacher=str(path)))


def test_resumed_run_refuses_a_changed_teacher_file(tmp_path, cache):
    from edgekd.io import fingerprint_file

    path = tmp_path / "mine.pt"
    torch.manual_seed(0)
    torch.save(build_model("resnet_xs", 1, 10).state_dict(), path)
    recorded = fingerprint_file(path)
    ctx = _context(tmp_path / "run", teacher=str(path), teacher_arch="resnet_xs", teacher_sha256=recorded)
    assert resolve_teacher(ctx).arch["name"] == "resnet_xs"  # unchanged: loads

    torch.manual_seed(1)
    torch.save(build_model("resnet_xs", 1, 10).state_dict(), path)  # retrained in place
    ctx = _context(tmp_path / "run2", teacher=str(path), teacher_arch="resnet_xs", teacher_sha256=recorded)
    with pytest.raises(UserError, match="changed since this run started"):
        resolve_teacher(ctx)
