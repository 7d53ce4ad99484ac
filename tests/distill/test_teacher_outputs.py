"""Cached teacher outputs (top-k log-probabilities on disk) against the online teacher, on a tiny
teacher trained for a few seconds on the built-in digits."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgekd.config import DistillConfig
from edgekd.data import load_dataset
from edgekd.data.augment import Augmentation
from edgekd.distill.losses import KD_LOSSES, make_kd_loss
from edgekd.distill.teacher_outputs import TeacherOutputCache, bytes_per_sample
from edgekd.errors import UserError
from edgekd.io import atomic_write, fingerprint_model, fingerprint_tensor
from edgekd.models import build_model
from edgekd.training import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 200  # samples cached per test: 2 batches of 128, the last one ragged
BATCH = 128
AUG = Augmentation(seed=3)  # 1 px shifts at 8x8


class CountingTeacher(nn.Module):
    """The teacher, counting its forward calls (its state_dict, and so its fingerprint, is the
    wrapped model's under an `inner.` prefix)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.train(inner.training)  # a fresh module is in training mode; keep the teacher's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset()
    return data.train.x[:N], data.train.y[:N]


@pytest.fixture(scope="module")
def trained_teacher(one_torch_thread):
    """A teacher with peaked outputs (~0.8 top-1 probability), so the top-k tail is not uniform."""
    data = load_dataset()
    torch.manual_seed(0)
    model = build_model("resnet_xs", 1, 10)
    fit(model, data.train.subset(512), data.val, lambda logits, y, *_: F.cross_entropy(logits, y),
        epochs=4, lr=0.01, batch_size=64, patience=4, seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(1)
    return build_model("mobilenet_xs", 1, 10).eval()


def _online_logits(teacher: nn.Module, x: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
    assert not teacher.training  # the cache leaves the teacher in the mode it found it
    with torch.no_grad():
        return teacher(AUG.apply(x[index], index, epoch))


def _cache(teacher, x, tmp_path, **overrides) -> TeacherOutputCache:
    settings = {"k": 10, "augmentation": AUG, "n_epochs": 3, "root": tmp_path, "batch_size": BATCH}
    return TeacherOutputCache(teacher, x, **{**settings, **overrides})


# ---- the same loss as the online teacher ---------------------------------------------------------


@pytest.mark.parametrize("loss_name", sorted(KD_LOSSES))
def test_cached_teacher_gives_the_online_teachers_loss_with_k_equal_to_classes(
        loss_name, trained_teacher, student, digits, tmp_path):
    x, y = digits
    objective = make_kd_loss(loss_name, DistillConfig())
    cache = _cache(trained_teacher, x, tmp_path)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    for epoch in range(4):  # epoch 3 replays epoch 0's augmentation (n_epochs=3)
        index = order[epoch * 40 : epoch * 40 + 64]
        student_logits = student(cache.inputs(x[index], index, epoch))
        online = objective(student_logits, _online_logits(trained_teacher, x, index, epoch % 3), y[index])
        cached = objective(student_logits, cache.logits(index, epoch), y[index])
        assert cached.item() == pytest.approx(online.item(), rel=1e-5, abs=1e-6)


def test_float16_values_stay_within_a_thousandth(trained_teacher, student, digits, tmp_path):
    x, y = digits
    cache = _cache(trained_teacher, x, tmp_path, value_dtype="float16")
    index = torch.arange(0, N, 3)
    student_logits = student(cache.inputs(x[index], index, 1))
    online = _online_logits(trained_teacher, x, index, 1)
    for name in KD_LOSSES:
        objective = make_kd_loss(name, DistillConfig())
        exact = objective(student_logits, online, y[index]).item()
        assert objective(student_logits, cache.logits(index, 1), y[index]).item() == pytest.approx(exact, rel=1e-3)


def test_dense_log_probs_are_the_teachers_and_sum_to_one(trained_teacher, digits, tmp_path):
    x, _ = digits
    cache = _cache(trained_teacher, x, tmp_path)
    index = torch.tensor([5, 0, 199, 77])
    expected = F.log_softmax(_online_logits(trained_teacher, x, index, 2), dim=1)
    dense = cache.logits(index, 2)
    assert torch.allclose(dense, expected, atol=1e-5)
    assert torch.allclose(dense.exp().sum(1), torch.ones(4), atol=1e-5)


# ---- k < C: TinyViT's rebuild and its bounds -------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_top_k_rebuild_keeps_the_top_k_and_spreads_the_rest_evenly(k, trained_teacher, digits, tmp_path):
    x, _ = digits
    cache = _cache(trained_teacher, x, tmp_path, k=k)
    index = torch.arange(N)
    true = F.log_softmax(_online_logits(trained_teacher, x, index, 0), dim=1)
    dense = cache.logits(index, 0)
    top = true.topk(k, dim=1)
    assert torch.allclose(dense.gather(1, top.indices), top.values, atol=1e-6)
    tail = torch.ones_like(true, dtype=torch.bool).scatter_(1, top.indices, False)
    tail_true = true.exp()[tail].reshape(N, -1)
    tail_rebuilt = dense.exp()[tail].reshape(N, -1)
    assert torch.allclose(tail_rebuilt, tail_true.mean(1, keepdim=True).expand_as(tail_rebuilt), rtol=1e-4)
    assert torch.allclose(dense.exp().sum(1), torch.ones(N), atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("k", [1, 4, 9, 10])
def test_tail_mass_bounds_the_soft_targets_total_variation(k, temperature, trained_teacher, digits, tmp_path):
    x, _ = digits
    cache = _cache(trained_teacher, x, tmp_path, k=k)
    index = torch.arange(N)
    true = F.softmax(_online_logits(trained_teacher, x, index, 1) / temperature, dim=1)
    rebuilt = F.softmax(cache.logits(index, 1) / temperature, dim=1)
    total_variation = 0.5 * (true - rebuilt).abs().sum(1)
    bound = cache.tail_mass(index, 1, temperature)
    assert bool((total_variation <= bound + 1e-6).all())
    if k == 10:
        assert float(bound.abs().max()) < 1e-5


def _binary_entropy(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(1e-12, 1 - 1e-12)
    return -(t * t.log() + (1 - t) * (1 - t).log())


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_hinton_loss_difference_is_within_its_bound(k, trained_teacher, student, digits, tmp_path):
    """|KL(p||s) - KL(p~||s)| <= TV * range(log s) + |H(p) - H(p~)|, the entropy term bounded by
    Audenaert's sharp Fannes inequality TV log(C - 1) + h(TV) (h, the binary entropy, grows up to
    TV = 1/2; log C caps any entropy difference), with TV <= the rebuilt tail mass. The bound is
    loose (about 10-34 here against differences of 0.01-0.37 on a loss of 0.9, at T = 4): it shows
    the gap is governed by the tail mass, not that it is small; the next test measures it."""
    x, y = digits
    settings = DistillConfig()
    temperature, alpha, classes = settings.temperature, settings.alpha, 10
    cache = _cache(trained_teacher, x, tmp_path, k=k)
    index = torch.arange(N)
    student_logits = student(cache.inputs(x[index], index, 0))
    objective = make_kd_loss("hinton", settings)
    difference = abs(objective(student_logits, _online_logits(trained_teacher, x, index, 0), y).item()
                     - objective(student_logits, cache.logits(index, 0), y).item())
    tv = cache.tail_mass(index, 0, temperature).clamp(0, 1)
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    entropy = (tv * math.log(classes - 1) + _binary_entropy(tv.clamp(max=0.5))).clamp(max=math.log(classes))
    per_sample = tv * (log_s.max(1).values - log_s.min(1).values) + entropy
    bound = alpha * temperature**2 * per_sample.mean().item()
    assert 0 < difference <= bound


def test_every_loss_difference_shrinks_to_zero_as_k_grows(trained_teacher, student, digits, tmp_path):
    x, y = digits
    index = torch.arange(N)
    student_logits = student(AUG.apply(x, index, 0))
    online = _online_logits(trained_teacher, x, index, 0)
    for name in KD_LOSSES:
        objective = make_kd_loss(name, DistillConfig())
        exact = objective(student_logits, online, y).item()
        gaps = [abs(objective(student_logits, _cache(trained_teacher, x, tmp_path, k=k).logits(index, 0), y).item()
                    - exact) / exact for k in (1, 3, 5, 8, 10)]
        assert gaps == sorted(gaps, reverse=True), (name, gaps)
        assert gaps[-1] < 1e-5


# ---- caching: once per key, on disk, robust ------------------------------------------------------


def test_second_cache_with_the_same_key_runs_no_teacher(trained_teacher, digits, tmp_path):
    x, _ = digits
    first_teacher = CountingTeacher(trained_teacher)
    first = _cache(first_teacher, x, tmp_path)
    first.prepare()
    assert first_teacher.calls == 3 * math.ceil(N / BATCH)  # one pass per augmentation epoch

    second_teacher = CountingTeacher(trained_teacher)
    second = _cache(second_teacher, x, tmp_path)
    assert second.key == first.key
    index = torch.arange(N)
    for epoch in range(5):
        assert torch.equal(second.logits(index, epoch), first.logits(index, epoch))
    second.prepare()
    assert second_teacher.calls == 0


def test_logits_compute_a_missing_epoch_on_demand_only(trained_teacher, digits, tmp_path):
    x, _ = digits
    teacher = CountingTeacher(trained_teacher)
    cache = _cache(teacher, x, tmp_path)
    assert teacher.calls == 0  # nothing runs at construction
    cache.logits(torch.arange(4), 1)
    assert teacher.calls == math.ceil(N / BATCH)
    assert [p.name for p in sorted(cache.directory.glob("*.npz"))] == ["epoch-0001.npz"]


def test_key_follows_teacher_data_augmentation_and_k(trained_teacher, digits, tmp_path):
    x, _ = digits
    base = _cache(trained_teacher, x, tmp_path).key
    assert _cache(trained_teacher, x, tmp_path, n_epochs=7).key == base  # epoch files are shared
    other_teacher = build_model("resnet_xs", 1, 10)
    variants = [
        _cache(other_teacher, x, tmp_path),
        _cache(trained_teacher, x[1:], tmp_path),
        _cache(trained_teacher, x, tmp_path, augmentation=Augmentation(seed=4)),
        _cache(trained_teacher, x, tmp_path, augmentation=Augmentation(seed=3, hflip=True)),
        _cache(trained_teacher, x, tmp_path, augmentation=None),
        _cache(trained_teacher, x, tmp_path, k=9),
        _cache(trained_teacher, x, tmp_path, value_dtype="float16"),
    ]
    keys = {v.key for v in variants}
    assert base not in keys and len(keys) == len(variants)
    assert fingerprint_model(trained_teacher) != fingerprint_model(other_teacher)
    assert fingerprint_tensor(x) == fingerprint_tensor(x.clone())


def test_no_augmentation_caches_one_epoch_and_leaves_inputs_alone(trained_teacher, digits, tmp_path):
    x, _ = digits
    for augmentation in (None, Augmentation(shift_px=0)):
        cache = _cache(trained_teacher, x, tmp_path, augmentation=augmentation, n_epochs=5)
        assert cache.n_epochs == 1 and cache.augmentation is None
        index = torch.arange(10)
        assert torch.equal(cache.inputs(x[index], index, 4), x[index])
        with torch.no_grad():
            expected = F.log_softmax(trained_teacher(x[index]), dim=1)
        assert torch.allclose(cache.logits(index, 4), expected, atol=1e-5)
    assert [p.name for p in cache.directory.glob("*.npz")] == ["epoch-0000.npz"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_key"])
def test_a_broken_file_is_recomputed_with_a_warning(damage, trained_teacher, digits, tmp_path, caplog):
    x, _ = digits
    good = _cache(trained_teacher, x, tmp_path)
    index = torch.arange(N)
    expected = good.logits(index, 0)
    path = good.path(0)
    if damage == "garbage":
        path.write_bytes(b"not a numpy archive")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a well-formed file of another key (k=5) under this key's name
        other = _cache(trained_teacher, x, tmp_path, k=5)
        other.logits(index, 0)
        path.write_bytes(other.path(0).read_bytes())
    teacher = CountingTeacher(trained_teacher)
    fresh = _cache(teacher, x, tmp_path, teacher_fingerprint=good.key_parts["teacher"])
    with caplog.at_level(logging.WARNING, logger="edgekd.distill.teacher_outputs"):
        rebuilt = fresh.logits(index, 0)
    assert "unusable" in caplog.text and str(path) in caplog.text
    assert teacher.calls == math.ceil(N / BATCH)
    assert torch.equal(rebuilt, expected)
    assert torch.equal(_cache(trained_teacher, x, tmp_path).logits(index, 0), expected)  # repaired on disk


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "epoch-0000.npz"
    path.write_bytes(b"complete old file")

    def interrupted(handle):
        handle.write(b"half of a new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == b"complete old file"
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0000.npz"]


def test_a_teacher_failing_midway_writes_nothing(trained_teacher, digits, tmp_path):
    x, _ = digits

    class FailsOnSecondBatch(CountingTeacher):
        def forward(self, batch):
            if self.calls == 1:
                raise RuntimeError("out of memory")
            return super().forward(batch)

    cache = _cache(FailsOnSecondBatch(trained_teacher), x, tmp_path)
    with pytest.raises(RuntimeError, match="out of memory"):
        cache.prepare()
    assert not list(cache.directory.glob("*.npz")) and not list(cache.directory.glob("*.tmp"))


# ---- format and sizes ------------------------------------------------------------------------------


def test_file_format_and_size_per_sample(trained_teacher, digits, tmp_path):
    x, _ = digits
    assert bytes_per_sample(10, 10) == 64 and bytes_per_sample(10, 10, "float16") == 44
    for dtype in ("float32", "float16"):
        cache = _cache(trained_teacher, x, tmp_path, value_dtype=dtype)
        cache.logits(torch.arange(2), 0)
        with np.load(cache.path(0), allow_pickle=False) as archive:
            assert archive["values"].dtype == np.dtype(dtype) and archive["values"].shape == (N, 10)
            assert archive["indices"].dtype == np.int16 and archive["rest_logmass"].dtype == np.float32
        size = cache.path(0).stat().st_size
        assert N * bytes_per_sample(10, 10, dtype) < size < N * bytes_per_sample(10, 10, dtype) + 2048
    assert (cache.directory / "key.json").is_file()


def test_bad_settings_are_user_errors(trained_teacher, digits, tmp_path):
    x, _ = digits
    with pytest.raises(UserError, match="exceeds the teacher's 10 classes"):
        _cache(trained_teacher, x, tmp_path, k=11).prepare()
    for bad in ({"k": 0}, {"n_epochs": 0}, {"value_dtype": "bfloat16"}):
        with pytest.raises(UserError):
            _cache(trained_teacher, x, tmp_path, **bad)


def test_the_teacher_runs_in_eval_mode_and_keeps_its_own_mode(digits, tmp_path):
    x, _ = digits
    torch.manual_seed(2)
    teacher = build_model("resnet_xs", 1, 10)  # in training mode: BatchNorm would use batch stats
    cache = _cache(teacher, x, tmp_path, augmentation=None)
    index = torch.arange(N)
    cached = cache.logits(index, 0)
    assert teacher.training
    teacher.eval()
    with torch.no_grad():
        assert torch.allclose(cached, F.log_softmax(teacher(x), dim=1), atol=1e-5)
