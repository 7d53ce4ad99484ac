"""The Hinton knowledge-distillation loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from edgekd.kd import hinton_kd_loss


def _softmax(values, t):
    exps = [math.exp(v / t) for v in values]
    return [e / sum(exps) for e in exps]


def test_identical_logits_give_zero_soft_term():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    labels = torch.randint(0, 5, (6,))
    loss = hinton_kd_loss(logits, logits.clone(), labels, temperature=4.0, alpha=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_soft_term_positive_when_logits_differ():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.zeros(4, dtype=torch.long)
    assert hinton_kd_loss(student, teacher, labels, temperature=2.0, alpha=1.0).item() > 0


def test_hand_computed_value():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([1, 2])
    t, alpha = 2.0, 0.7

    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = _softmax(t_row, t), _softmax(s_row, t)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))  # KL(teacher || student)
    soft = kl / 2 * t * t  # batchmean, times T^2
    ce = 0.0
    for row, label in zip(student.tolist(), labels.tolist()):
        ce += -math.log(_softmax(row, 1.0)[label])
    hard = ce / 2
    expected = alpha * soft + (1 - alpha) * hard

    loss = hinton_kd_loss(student, teacher, labels, temperature=t, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_alpha_zero_is_cross_entropy():
    torch.manual_seed(2)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    loss = hinton_kd_loss(student, teacher, labels, temperature=4.0, alpha=0.0)
    assert torch.allclose(loss, F.cross_entropy(student, labels))


def test_temperature_squared_scaling():
    """At high temperature the soft term scaled by T^2 approaches the logit MSE / (2 * classes)
    limit instead of vanishing."""
    student = torch.tensor([[0.1, -0.2, 0.3]])
    teacher = torch.tensor([[0.3, 0.1, -0.4]])
    labels = torch.tensor([0])
    values = [hinton_kd_loss(student, teacher, labels, temperature=t, alpha=1.0).item() for t in (50.0, 100.0)]
    assert values[0] == pytest.approx(values[1], rel=0.02)
    assert values[1] > 1e-3


def test_gradient_flows_to_student_only():
    torch.manual_seed(3)
    student = torch.randn(5, 4, requires_grad=True)
    teacher = torch.randn(5, 4)
    labels = torch.randint(0, 4, (5,))
    loss = hinton_kd_loss(student, teacher, labels, temperature=3.0, alpha=0.9)
    loss.backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


def test_gradient_zero_at_teacher_when_alpha_one():
    teacher = torch.tensor([[1.0, -2.0, 0.5]])
    student = teacher.clone().requires_grad_(True)
    hinton_kd_loss(student, teacher, torch.tensor([0]), temperature=4.0, alpha=1.0).backward()
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-6)


def test_descent_moves_student_towards_teacher():
    torch.manual_seed(4)
    teacher = torch.randn(3, 5)
    student = torch.zeros(3, 5, requires_grad=True)
    labels = teacher.argmax(1)
    optimizer = torch.optim.SGD([student], lr=1.0)
    losses = []
    for _ in range(50):
        loss = hinton_kd_loss(student, teacher, labels, temperature=2.0, alpha=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.1
    assert torch.equal(student.detach().argmax(1), labels)
