"""Recovery after pruning, on real digits: KD from the teacher and labels-only fine-tuning both
train the pruned student (edgekd.training.fit), and "none" leaves it as pruned."""

from __future__ import annotations

import pytest
import torch
from prune_patterns import RESNET
from torch.nn import functional as F

from edgekd.config import DistillConfig
from edgekd.data import load_dataset
from edgekd.distill.losses import make_kd_loss
from edgekd.errors import UserError
from edgekd.models import build_model
from edgekd.prune.channels import prune_channels
from edgekd.prune.recovery import recover_
from edgekd.training import evaluate_accuracy, fit, predict_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained():
    data = load_dataset(None)
    torch.manual_seed(0)
    model = build_model(RESNET, 1, 10)
    fit(model, data.train, data.val, lambda logits, y, _i, _e: F.cross_entropy(logits, y),
        epochs=6, lr=0.01, batch_size=32, patience=6, seed=0)
    return data, model


@pytest.mark.parametrize("mode", ["kd", "labels"])
def test_recovery_trains_the_pruned_student_back(trained, mode):
    data, teacher = trained
    pruned = prune_channels(teacher, data.train.x[:2], channel_multiple=8, ratio=0.75).model
    before = evaluate_accuracy(pruned, data.val)
    distill = DistillConfig()
    result = recover_(pruned, data.train, data.val, mode=mode, epochs=3, lr=0.01, batch_size=32,
                      kd_loss=make_kd_loss(distill.loss, distill),
                      teacher_logits=predict_logits(teacher, data.train.x) if mode == "kd" else None)
    assert result is not None and result.epochs_run == 3
    assert result.best_val_accuracy > before
    assert evaluate_accuracy(pruned, data.val) == pytest.approx(result.best_val_accuracy)


def test_no_recovery_leaves_the_model_alone(trained):
    data, teacher = trained
    pruned = prune_channels(teacher, data.train.x[:2], channel_multiple=8, ratio=0.5).model
    state = {k: v.clone() for k, v in pruned.state_dict().items()}
    assert recover_(pruned, data.train, data.val, mode="none", epochs=3, lr=0.01, batch_size=32) is None
    assert all(torch.equal(state[k], v) for k, v in pruned.state_dict().items())


def test_kd_recovery_needs_a_teacher_and_a_loss(trained):
    data, teacher = trained
    with pytest.raises(UserError, match="unknown prune recovery"):
        recover_(teacher, data.train, data.val, mode="distill", epochs=1, lr=0.01, batch_size=32)
    with pytest.raises(ValueError, match="teacher"):
        recover_(teacher, data.train, data.val, mode="kd", epochs=1, lr=0.01, batch_size=32)
    with pytest.raises(ValueError, match="kd_loss"):
        recover_(teacher, data.train, data.val, mode="kd", epochs=1, lr=0.01, batch_size=32, teacher=teacher)
