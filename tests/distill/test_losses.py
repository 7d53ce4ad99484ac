"""The knowledge-distillation losses (Hinton, DIST, DKD) and the recipe's choice among them."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from edgekd.config import DistillConfig, load_recipe
from edgekd.distill.losses import (
    KD_LOSSES,
    dist_loss,
    dkd_loss,
    hinton_kd_loss,
    make_kd_loss,
    pearson_correlation,
)
from edgekd.errors import UserError


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


# ---- DIST ------------------------------------------------------------------------------------


def _pearson(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return cov / (math.sqrt(sum((x - mx) ** 2 for x in xs)) * math.sqrt(sum((y - my) ** 2 for y in ys)))


def test_dist_zero_for_identical_logits_and_positive_otherwise():
    torch.manual_seed(5)
    teacher = torch.randn(8, 5) * 3
    assert dist_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert dist_loss(teacher.clone(), teacher, temperature=4.0).item() == pytest.approx(0.0, abs=1e-4)
    student = torch.randn(8, 5) * 3
    assert dist_loss(student, teacher).item() > 0.01


def test_pearson_invariant_to_positive_affine_transform_per_row():
    torch.manual_seed(6)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    scale = torch.tensor([[0.5], [2.0], [7.0], [1.3]])
    shift = torch.tensor([[3.0], [-1.0], [0.0], [10.0]])
    assert torch.allclose(pearson_correlation(a * scale + shift, b), pearson_correlation(a, b), atol=1e-6)
    assert torch.allclose(pearson_correlation(-a, b), -pearson_correlation(a, b), atol=1e-6)
    assert torch.allclose(pearson_correlation(a, a), torch.ones(4), atol=1e-6)


def test_dist_correlates_probabilities_not_logits():
    """As in the reference code, DIST correlates softmax outputs: adding a constant to a sample's
    logits changes nothing, scaling them does."""
    torch.manual_seed(7)
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    base = dist_loss(student, teacher, temperature=2.0)
    shifted = student + torch.randn(6, 1) * 5
    assert dist_loss(shifted, teacher, temperature=2.0).item() == pytest.approx(base.item(), rel=1e-5)
    assert dist_loss(student * 3, teacher, temperature=2.0).item() != pytest.approx(base.item(), rel=1e-3)


def test_dist_hand_computed_value():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.5]])
    t, beta, gamma = 2.0, 1.5, 0.5
    ys = [_softmax(row, t) for row in student.tolist()]
    yt = [_softmax(row, t) for row in teacher.tolist()]
    inter = 1 - sum(_pearson(s, q) for s, q in zip(ys, yt)) / 2  # per sample, across classes
    cols_s, cols_t = list(zip(*ys)), list(zip(*yt))
    intra = 1 - sum(_pearson(s, q) for s, q in zip(cols_s, cols_t)) / 3  # per class, across the batch
    expected = t * t * (beta * inter + gamma * intra)

    loss = dist_loss(student, teacher, temperature=t, beta=beta, gamma=gamma)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the parts: beta alone is the inter-class term, gamma alone the intra-class term
    assert dist_loss(student, teacher, temperature=t, beta=1, gamma=0).item() == pytest.approx(t * t * inter, rel=1e-5)
    assert dist_loss(student, teacher, temperature=t, beta=0, gamma=1).item() == pytest.approx(t * t * intra, rel=1e-5)


def test_dist_gradient_flows():
    torch.manual_seed(8)
    student = torch.randn(5, 4, requires_grad=True)
    dist_loss(student, torch.randn(5, 4), temperature=4.0).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


# ---- DKD -------------------------------------------------------------------------------------


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_dkd_parts_hand_computed():
    student = torch.tensor([[1.0, 2.0, 0.5, -0.5], [0.0, -1.0, 3.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0, 0.5], [1.0, 1.0, 1.5, -2.0]])
    labels = torch.tensor([1, 2])
    t = 2.0
    tckd = nckd = 0.0
    for s_row, t_row, gt in zip(student.tolist(), teacher.tolist(), labels.tolist()):
        ps, pt = _softmax(s_row, t), _softmax(t_row, t)
        tckd += _kl([pt[gt], 1 - pt[gt]], [ps[gt], 1 - ps[gt]])  # binary: target vs the rest
        rest_s = _softmax([v for i, v in enumerate(s_row) if i != gt], t)  # non-target classes only
        rest_t = _softmax([v for i, v in enumerate(t_row) if i != gt], t)
        nckd += _kl(rest_t, rest_s)
    tckd, nckd = tckd / 2 * t * t, nckd / 2 * t * t

    part = dict(temperature=t)
    assert dkd_loss(student, teacher, labels, alpha=1, beta=0, **part).item() == pytest.approx(tckd, rel=1e-5)
    assert dkd_loss(student, teacher, labels, alpha=0, beta=1, **part).item() == pytest.approx(nckd, rel=1e-5)
    assert dkd_loss(student, teacher, labels, alpha=1.5, beta=8, **part).item() == pytest.approx(
        1.5 * tckd + 8 * nckd, rel=1e-5)


def test_dkd_reformulates_hinton_kd():
    """The paper's identity: KD = TCKD + (1 - p_t^teacher) * NCKD (one sample, so batch means agree)."""
    student = torch.tensor([[0.3, 1.2, -0.7, 2.0, 0.1]])
    teacher = torch.tensor([[1.5, 2.5, 0.0, -1.0, 0.4]])
    labels = torch.tensor([1])
    t = 3.0
    p_target = F.softmax(teacher / t, dim=1)[0, 1].item()
    kd = hinton_kd_loss(student, teacher, labels, temperature=t, alpha=1.0)
    dkd = dkd_loss(student, teacher, labels, temperature=t, alpha=1.0, beta=1 - p_target)
    assert dkd.item() == pytest.approx(kd.item(), rel=1e-5)


def test_dkd_zero_for_identical_logits():
    torch.manual_seed(9)
    logits = torch.randn(6, 5)
    labels = torch.randint(0, 5, (6,))
    # fp32 rounding, times beta * T^2 = 128 with the defaults
    assert dkd_loss(logits.clone(), logits, labels).item() == pytest.approx(0.0, abs=1e-4)


def test_dkd_gradient_flows_to_student_only():
    torch.manual_seed(10)
    student = torch.randn(5, 4, requires_grad=True)
    teacher = torch.randn(5, 4)
    labels = torch.randint(0, 4, (5,))
    dkd_loss(student, teacher, labels).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert teacher.grad is None


# ---- make_kd_loss and the recipe --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KD_LOSSES))
def test_make_kd_loss_gives_a_differentiable_scalar(name):
    torch.manual_seed(11)
    student = torch.randn(6, 4, requires_grad=True)
    teacher, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    loss = make_kd_loss(name, DistillConfig(loss=name))(student, teacher, labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_make_kd_loss_combines_with_cross_entropy_as_each_paper_does():
    torch.manual_seed(12)
    student, teacher, labels = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    cfg = DistillConfig(temperature=3.0, alpha=0.7, dist_beta=2.0, dist_gamma=0.5, dkd_alpha=0.5, dkd_beta=4.0)
    ce = F.cross_entropy(student, labels)
    expected = {
        "hinton": hinton_kd_loss(student, teacher, labels, temperature=3.0, alpha=0.7),
        "dist": ce + dist_loss(student, teacher, temperature=3.0, beta=2.0, gamma=0.5),
        "dkd": ce + dkd_loss(student, teacher, labels, temperature=3.0, alpha=0.5, beta=4.0),
    }
    for name, value in expected.items():
        assert torch.allclose(make_kd_loss(name, cfg)(student, teacher, labels), value), name


def test_default_kd_loss_is_hinton_and_paper_defaults():
    cfg = DistillConfig()
    assert cfg.loss == "hinton"
    assert (cfg.dist_beta, cfg.dist_gamma, cfg.dkd_alpha, cfg.dkd_beta) == (1.0, 1.0, 1.0, 8.0)


def test_unknown_kd_loss_names_the_closest_and_the_known():
    with pytest.raises(UserError) as info:
        make_kd_loss("dsit", DistillConfig())
    assert str(info.value) == "unknown KD loss 'dsit' (did you mean 'dist'?); known: dist, dkd, hinton"
    with pytest.raises(UserError, match=r"unknown KD loss 'xyz'; known: dist, dkd, hinton$"):
        make_kd_loss("xyz", DistillConfig())


def test_recipe_selects_kd_loss():
    recipe = load_recipe(None, ["distill.loss=dkd", "distill.dkd_beta=2"])
    assert recipe.distill.loss == "dkd" and recipe.distill.dkd_beta == 2.0
    assert callable(make_kd_loss(recipe.distill.loss, recipe.distill))
    with pytest.raises(UserError, match="distill.dist_gamma must be float"):
        load_recipe(None, ["distill.dist_gamma='x'"])


def test_distill_stage_fails_fast_on_unknown_loss():
    """The distill stage builds its loss before touching data, teacher or search results."""
    from types import SimpleNamespace

    from edgekd.distill import stage as distill

    ctx = SimpleNamespace(recipe=SimpleNamespace(distill=DistillConfig(loss="dkdd")))
    with pytest.raises(UserError, match="did you mean 'dkd'"):
        distill.run(ctx)


def test_meal_v2_recipe_is_soft_labels_only():
    """recipes/meal-v2.yaml: the KD term alone, so the labels do not change the loss."""
    from pathlib import Path

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "meal-v2.yaml")
    settings = recipe.distill
    assert (settings.loss, settings.alpha, settings.init) == ("hinton", 1.0, "teacher")
    assert 0 < settings.weight_decay <= 1e-4 and recipe.search.families == ["teacher-derived"]
    objective = make_kd_loss(settings.loss, settings)
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    one = objective(student, teacher, torch.zeros(6, dtype=torch.long))
    other = objective(student, teacher, torch.full((6,), 3, dtype=torch.long))
    assert one.item() == pytest.approx(other.item()) and one.item() > 0
