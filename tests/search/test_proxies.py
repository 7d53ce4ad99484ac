"""Zero-cost proxies on tiny real models and the digits images: finite, deterministic, side-effect
free, DisWOT maximal for identical networks, hand-checked similarity pieces, clear errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from edgekd.data import load_dataset
from edgekd.errors import UserError
from edgekd.models import build_model, resolve_arch, scale_width
from edgekd.search.proxies import (
    PROXIES,
    ProxyScorer,
    forward_with_taps,
    matrix_distance,
    naswot_score,
    relation_matrix,
    semantic_matrix,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset(None)
    return data.train.x[:64], data.train.y[:64]


def model(arch, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, in_channels=1, num_classes=10)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    return model("resnet_s", seed=1).eval()


@pytest.mark.parametrize("name", PROXIES)
def test_every_proxy_is_a_finite_deterministic_float_that_leaves_the_student_alone(name, batch, teacher):
    scorer = ProxyScorer(name, teacher, *batch)
    student = model("resnet_xs").eval()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    first, second = scorer.score(student), scorer.score(student)
    assert isinstance(first, float) and math.isfinite(first)
    assert first == second
    assert first == ProxyScorer(name, teacher, *batch).score(model("resnet_xs"))  # a fresh scorer too
    after = student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert not any(m.training for m in student.modules())


def test_teacher_is_not_modified(batch):
    teacher = model("resnet_s").eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ProxyScorer("diswot", teacher, *batch).score(model("resnet_xs"))
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training


def test_mobilenet_students_score_too(batch, teacher):
    # Its squeeze-excitation blocks pool globally too: the last pool, not the first, marks the features.
    student = model("mobilenet_xs")
    _logits, features, classifier = forward_with_taps(student, batch[0])
    assert features.shape[1] == 64 and classifier is student.fc  # the head's 64 channels, before pooling
    for name in PROXIES:
        assert math.isfinite(ProxyScorer(name, teacher, *batch).score(student))


def test_diswot_is_maximal_for_the_teacher_itself(batch, teacher):
    scorer = ProxyScorer("diswot", teacher, *batch)
    itself = scorer.score(copy.deepcopy(teacher))
    assert itself == 0.0  # same architecture, same seeded initialisation: identical matrices
    assert itself >= scorer.score(model("resnet_xs"))
    assert itself > scorer.score(model("mobilenet_xs"))


def test_diswot_with_the_trained_teacher_weights(batch, teacher):
    scorer = ProxyScorer("diswot", teacher, *batch, teacher_weights="trained")
    assert scorer.score(model("resnet_xs")) < 0
    with pytest.raises(UserError, match="random, trained"):
        ProxyScorer("diswot", teacher, *batch, teacher_weights="pretrained")


def test_relation_distance_by_hand():
    same = torch.randn(4, 3, 2, 2)
    assert matrix_distance(relation_matrix(same), relation_matrix(same)) == 0.0
    # Each row is normalised, so scaling the features changes nothing.
    assert matrix_distance(relation_matrix(same), relation_matrix(3 * same)) == pytest.approx(0.0, abs=1e-12)
    # Orthogonal samples vs identical samples: G_t = I, G_s = all entries 1/sqrt(2).
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    r = 1 / math.sqrt(2)
    expected = (2 * (1 - r) ** 2 + 2 * r**2) / 4  # sum of squared differences over B^2
    assert matrix_distance(relation_matrix(teacher), relation_matrix(student)) == pytest.approx(expected)


def test_semantic_matrix_compares_any_widths():
    teacher_grad, student_grad = torch.randn(10, 64), torch.randn(10, 16)
    assert semantic_matrix(teacher_grad).shape == semantic_matrix(student_grad).shape == (10, 10)
    assert matrix_distance(semantic_matrix(teacher_grad), semantic_matrix(teacher_grad)) == 0.0
    # Parallel class gradients g and 3g: A A^T = [[1, 3], [3, 9]], both rows [1, 3] / sqrt(10);
    # orthogonal ones: the identity.
    parallel = semantic_matrix(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert parallel == pytest.approx(torch.tensor([[1.0, 3.0], [1.0, 3.0]]) / math.sqrt(10))
    orthogonal = semantic_matrix(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert torch.equal(orthogonal, torch.eye(2))


def test_naswot_by_hand():
    # One ReLU over two features; codes [1, 0], [1, 0], [0, 1]: K[i][j] = number of equal bits,
    # K = [[2, 2, 0], [2, 2, 0], [0, 0, 2]] is singular (two samples share a code) ...
    net = nn.Sequential(nn.ReLU())
    assert naswot_score(net, torch.tensor([[1.0, -1.0], [2.0, -3.0], [-1.0, 1.0]])[:, :, None, None]) == -math.inf
    # ... and distinct codes [1, 0], [0, 1], [1, 1]: K = [[2, 0, 1], [0, 2, 1], [1, 1, 2]], det 4.
    x = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])[:, :, None, None]
    assert naswot_score(net, x) == pytest.approx(math.log(4))
    with pytest.raises(UserError, match="ReLU"):
        naswot_score(nn.Sequential(nn.Tanh()), x)


def test_unknown_proxy_name_suggests_the_closest(batch):
    with pytest.raises(UserError, match=r"'naswt'.*did you mean 'naswot'.*diswot, naswot, synflow, params, macs"):
        ProxyScorer("naswt", None, *batch)


def test_diswot_needs_a_hookable_teacher(batch, teacher):
    scripted = torch.jit.trace(teacher, batch[0][:2])
    with pytest.raises(UserError, match="TorchScript.*naswot, synflow, params, macs"):
        ProxyScorer("diswot", scripted, *batch)
    with pytest.raises(UserError, match="naswot, synflow, params, macs"):
        ProxyScorer("diswot", None, *batch)
    assert math.isfinite(ProxyScorer("naswot", scripted, *batch).score(model("resnet_xs")))


@pytest.mark.parametrize("name", ["params", "macs", "synflow"])
def test_size_proxies_grow_with_width(name, batch):
    base = resolve_arch("resnet_s")
    scorer = ProxyScorer(name, None, *batch)
    scores = [scorer.score(model(scale_width(base, m, 8))) for m in (0.5, 1.0, 2.0)]
    assert scores == sorted(scores) and len(set(scores)) == 3
