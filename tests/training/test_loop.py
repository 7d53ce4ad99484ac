"""The shared training loop: learning, early stopping, best-weights restore, and evaluation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgekd.data import Split
from edgekd.models import build_model
from edgekd.training import FitResult, evaluate_accuracy, fit, predict_logits

NUM_CLASSES = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _synthetic(n: int, seed: int) -> Split:
    """Four classes of 1x8x8 images: each class lights up its own quadrant, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=generator)
    for k in range(NUM_CLASSES):
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 0.7
    return Split(x, y)


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    return _synthetic(161, seed=0), _synthetic(80, seed=1)  # 161 = 2 * 64 + 33: ragged last batch


def _ce(logits, labels, _index, _epoch):
    return F.cross_entropy(logits, labels)


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, NUM_CLASSES))


def test_fit_improves_over_untrained(data):
    train, val = data
    torch.manual_seed(0)
    model = build_model("resnet_xs", 1, NUM_CLASSES)
    before = evaluate_accuracy(model, val)
    result = fit(model, train, val, _ce, epochs=6, lr=0.01, batch_size=32, patience=6, seed=0)
    assert isinstance(result, FitResult)
    after = evaluate_accuracy(model, val)
    assert after >= 0.9
    assert after > before
    assert after == result.best_val_accuracy
    assert not model.training
    assert [h["epoch"] for h in result.history] == list(range(1, result.epochs_run + 1))
    assert all(h["loss"] > 0 for h in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_fit_is_reproducible_with_seed(data):
    train, val = data
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _linear()
        result = fit(model, train, val, _ce, epochs=3, lr=0.05, batch_size=16, patience=3, seed=7)
        results.append((result.history, copy.deepcopy(model.state_dict())))
    assert results[0][0] == results[1][0]
    for key in results[0][1]:
        assert torch.equal(results[0][1][key], results[1][1][key])


def test_early_stopping_without_improvement(data):
    train, val = data
    torch.manual_seed(0)
    model = _linear()  # no BatchNorm: with lr=0 nothing at all changes between epochs
    initial = copy.deepcopy(model.state_dict())
    seen = []
    result = fit(model, train, val, _ce, epochs=20, lr=0.0, batch_size=32, patience=2, seed=0,
                 on_epoch_end=lambda epoch, accuracy: seen.append((epoch, accuracy)))
    assert result.best_epoch == 1
    assert result.epochs_run == 3  # epoch 1 is best, epochs 2 and 3 do not improve: stop
    assert result.epochs_run < 20
    assert len(result.history) == 3 and [e for e, _ in seen] == [1, 2, 3]
    assert len({a for _, a in seen}) == 1
    assert result.best_val_accuracy == seen[0][1]
    for key, value in model.state_dict().items():
        assert torch.equal(value, initial[key])


def test_patience_larger_than_epochs_runs_all_epochs(data):
    train, val = data
    torch.manual_seed(0)
    result = fit(_linear(), train, val, _ce, epochs=4, lr=0.0, batch_size=64, patience=10, seed=0)
    assert result.epochs_run == 4
    assert result.best_epoch == 1


def test_model_ends_with_best_weights(data):
    """Learn for two epochs, then train towards wrong labels so val accuracy collapses: fit must
    stop early and hand back the weights of its best epoch, not the last."""
    train, val = data
    batches_per_epoch = sum(1 for s in range(0, len(train), 16) if len(train) - s >= 2)
    calls = {"n": 0}

    def turning_loss(logits, labels, _index, _epoch):
        calls["n"] += 1
        if calls["n"] > 2 * batches_per_epoch:
            labels = (labels + 1) % NUM_CLASSES  # sabotage from epoch 3 on
        return F.cross_entropy(logits, labels)

    snapshots = {}
    torch.manual_seed(0)
    model = _linear()
    result = fit(model, train, val, turning_loss, epochs=30, lr=0.002, batch_size=16, patience=3, seed=0,
                 on_epoch_end=lambda epoch, _acc: snapshots.__setitem__(epoch, copy.deepcopy(model.state_dict())))
    accuracies = [h["val_accuracy"] for h in result.history]
    best = result.best_epoch
    assert best >= 2  # it improved after the first epoch (Adam's momentum may carry it one more)
    assert result.epochs_run == best + 3 < 30  # stopped after `patience` epochs without a better one
    assert result.best_val_accuracy == max(accuracies) == accuracies[best - 1]
    assert accuracies.index(max(accuracies)) == best - 1  # the first epoch reaching the best
    assert accuracies[-1] < result.best_val_accuracy  # the last epoch is worse ...
    assert evaluate_accuracy(model, val) == result.best_val_accuracy  # ... but its weights are gone
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[best][key])
        assert not torch.equal(value, snapshots[result.epochs_run][key])


def test_batch_of_one_is_skipped_for_batchnorm():
    train = _synthetic(65, seed=2)  # 64 + 1: the last batch would break BatchNorm in training
    val = _synthetic(8, seed=3)
    torch.manual_seed(0)
    model = build_model("resnet_xs", 1, NUM_CLASSES)
    seen = []

    def loss(logits, labels, index, _epoch):
        seen.append(len(index))
        return F.cross_entropy(logits, labels)

    fit(model, train, val, loss, epochs=1, lr=0.01, batch_size=64, patience=1, seed=0)
    assert seen == [64]


def test_loss_gets_sample_indices(data):
    train, val = data
    seen = []

    def loss(logits, labels, index, _epoch):
        assert torch.equal(labels, train.y[index])
        seen.append(index)
        return F.cross_entropy(logits, labels)

    fit(_linear(), train, val, loss, epochs=1, lr=0.01, batch_size=50, patience=1, seed=0)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(train)))


class _Fixed(nn.Module):
    """Predicts class (sum of pixels > threshold); fixed, so its accuracy is known."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        big = (x.flatten(1).sum(1) > 0.5).long()
        return F.one_hot(big, 2).float() + 0 * self.dummy


def test_evaluate_accuracy_exact_and_batched():
    x = torch.zeros(10, 1, 2, 2)
    x[:6] = 1.0  # predicted class 1 for the first six
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 1])  # right: 3 of the first six, 3 of the rest
    split = Split(x, y)
    model = _Fixed().train()
    expected = (3 + 3) / 10
    for batch_size in (1, 3, 512):
        assert evaluate_accuracy(model, split, batch_size=batch_size) == pytest.approx(expected)
    assert model.training  # mode restored
    model.eval()
    evaluate_accuracy(model, split)
    assert not model.training


def test_evaluate_accuracy_empty_split():
    empty = Split(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long))
    assert evaluate_accuracy(_Fixed(), empty) == 0.0


def test_predict_logits_matches_direct_call(data):
    train, _ = data
    torch.manual_seed(0)
    model = build_model("resnet_xs", 1, NUM_CLASSES).eval()
    logits = predict_logits(model, train.x, batch_size=50)
    assert logits.shape == (len(train), NUM_CLASSES)
    with torch.no_grad():
        direct = model(train.x)
    assert torch.allclose(logits, direct, atol=1e-5)
