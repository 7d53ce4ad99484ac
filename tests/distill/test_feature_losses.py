"""Feature KD (FitNets, attention transfer, ND): the losses, the hooks that read features, the
layer names and their errors, adapters trained by the optimizer, and the fake-quantized student."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.config import DistillConfig
from edgekd.data import Split
from edgekd.distill.feature_distiller import FeatureDistiller, resolve_name
from edgekd.distill.feature_losses import (
    FEATURE_LOSSES,
    FeatureTap,
    LayerPairs,
    attention_map,
    attention_transfer_loss,
    choose_layer_pairs,
    class_centers,
    fitnets_loss,
    nd_loss,
)
from edgekd.distill.losses import make_kd_loss
from edgekd.errors import UserError
from edgekd.models import build_model

X = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.arange(8) % 4


def tiny(arch: str = "resnet_xs", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 1, 4)


# ---- losses -----------------------------------------------------------------------------------

def test_attention_transfer_is_zero_for_equal_features_and_ignores_channels_and_scale():
    feature = torch.randn(4, 16, 6, 6)
    assert attention_transfer_loss(feature, feature.clone()).item() == pytest.approx(0.0, abs=1e-9)
    # the map is a channel mean, normalised: a wider, scaled copy has the same attention
    wider = torch.cat([feature, feature], dim=1) * 3.0
    assert attention_transfer_loss(feature, wider).item() == pytest.approx(0.0, abs=1e-9)
    assert attention_transfer_loss(feature, torch.randn(4, 16, 6, 6)).item() > 1e-4
    assert attention_map(feature).norm(dim=1) == pytest.approx(torch.ones(4), abs=1e-6)


def test_attention_transfer_pools_the_larger_map():
    student, teacher = torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4)
    loss = attention_transfer_loss(student, teacher)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_fitnets_is_zero_with_an_identity_regressor_and_trains_the_regressor():
    feature = torch.randn(4, 8, 5, 5)
    regressor = nn.Conv2d(8, 8, 1)
    with torch.no_grad():
        regressor.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))
        regressor.bias.zero_()
    assert fitnets_loss(feature, feature.clone(), regressor).item() == pytest.approx(0.0, abs=1e-10)
    wide = nn.Conv2d(8, 16, 1)  # a thin student regressed to a wider teacher
    loss = fitnets_loss(feature, torch.randn(4, 16, 5, 5), wide)
    loss.backward()
    assert loss.item() > 0 and wide.weight.grad is not None and wide.weight.grad.abs().sum() > 0


def test_nd_is_zero_along_the_class_centre_with_the_teachers_norm():
    centers = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1])
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    assert nd_loss(teacher.clone(), teacher, centers, labels).item() == pytest.approx(0.0, abs=1e-7)
    # same norm, another direction: positive; the authors' per-sample formula, by hand
    student = torch.tensor([[0.0, 3.0, 0.0], [3.0, 4.0, 0.0]])
    expected = ((1 - 0.0 / 3.0) + (1 - 4.0 / 5.0)) / 2
    assert nd_loss(student, teacher, centers, labels).item() == pytest.approx(expected)
    # a shorter student along the right direction still pays: the norm term
    assert nd_loss(teacher * 0.5, teacher, centers, labels).item() == pytest.approx(0.5)


def test_nd_gradient_turns_the_student_towards_its_class_centre():
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[0.6, 0.8]], requires_grad=True)
    nd_loss(student, torch.tensor([[1.0, 0.0]]), centers, torch.tensor([0])).backward()
    assert student.grad[0, 0] < 0  # descending raises the component along centre 0


def test_class_centers_are_per_class_means():
    embeddings = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, 4.0]])
    centers = class_centers(embeddings, torch.tensor([0, 0, 2]), num_classes=3)
    assert centers.tolist() == [[2.0, 1.0], [0.0, 0.0], [0.0, 4.0]]


# ---- names, hooks, defaults -------------------------------------------------------------------

def test_hooks_read_the_named_layers_outputs_and_inputs():
    model = tiny().eval()
    with FeatureTap(model, ["stages.1", "stem"], "student") as tap:
        model(X)
        stage, stem = tap.take()
    assert stage.shape == (8, 16, 4, 4) and stem.shape == (8, 8, 8, 8)
    with FeatureTap(model, ["fc"], "student", inputs=True) as tap:
        model(X)
        (embedding,) = tap.take()
    assert embedding.shape == (8, 32)
    assert not model.stages[1]._forward_hooks  # removed on exit


def test_bad_layer_name_lists_close_names():
    with pytest.raises(UserError) as err:
        choose_layer_pairs("fitnets", tiny(), tiny("resnet_s"), ["stage.1"], None, X)
    message = str(err.value)
    assert "'stage.1' does not exist in the student" in message and "stages.1" in message
    with pytest.raises(UserError, match="does not exist in the teacher.*stages.2"):
        choose_layer_pairs("at", tiny(), tiny("resnet_s"), ["stages.2"], ["stages.2.9"], X)


def test_unknown_feature_loss_lists_the_known_ones():
    settings = DistillConfig(feature_loss="fitnet")
    with pytest.raises(UserError, match=r"did you mean 'fitnets'.*fitnets, at, nd"):
        make_kd_loss("hinton", settings)
    for name in FEATURE_LOSSES:
        make_kd_loss("hinton", DistillConfig(feature_loss=name))


def test_default_layers_pair_each_stage_by_spatial_size():
    pairs = choose_layer_pairs("fitnets", tiny(), tiny("resnet_s"), None, None, X)
    assert pairs == LayerPairs(["stages.0", "stages.1", "stages.2"], ["stages.0", "stages.1", "stages.2"])
    # a 4-stage mobilenet student: 8x8, 4x4, 2x2, 1x1 against the resnet's 8x8, 4x4, 2x2
    pairs = choose_layer_pairs("at", tiny("mobilenet_s"), tiny("resnet_s"), None, None, X)
    assert pairs.student == ["stages.0", "stages.1", "stages.2"]
    assert choose_layer_pairs("nd", tiny("mobilenet_xs"), tiny("resnet_s"), None, None, X) == LayerPairs(["fc"], ["fc"])


def test_a_torchscript_teacher_is_refused_for_feature_kd():
    scripted = torch.jit.script(tiny().eval())
    with pytest.raises(UserError, match="TorchScript"):
        choose_layer_pairs("at", tiny(), scripted, None, None, X)


# ---- the distiller ----------------------------------------------------------------------------

@pytest.mark.parametrize("loss", FEATURE_LOSSES)
def test_distiller_trains_adapters_and_student_but_not_teacher(loss):
    student, teacher = tiny(), tiny("resnet_s", seed=1)
    pairs = choose_layer_pairs(loss, student, teacher, None, None, X)
    distiller = FeatureDistiller(loss, pairs, student, teacher, X, train=Split(X, Y), num_classes=4)
    student.train()
    distiller.train()
    with distiller.watch(student):
        student(X)
        term = distiller.loss(Y)
    term.backward()
    assert torch.isfinite(term) and term.item() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert student.stages[0][0].conv1[0].weight.grad.abs().sum() > 0
    adapter_grads = [p.grad for p in distiller.parameters()]
    if loss == "at":
        assert adapter_grads == []  # attention maps need no adapter
    else:  # fitnets regressors; nd's connector (32 -> 64 wide embedding)
        assert adapter_grads and all(g is not None and g.abs().sum() > 0 for g in adapter_grads)
    # the student's own state holds no adapter
    assert not any("adapter" in key for key in student.state_dict())
    distiller.close()


def test_distiller_loss_is_zero_when_the_student_is_the_teacher():
    teacher = tiny("resnet_s", seed=3)
    student = tiny("resnet_s", seed=3)
    pairs = choose_layer_pairs("at", student, teacher, None, None, X)
    distiller = FeatureDistiller("at", pairs, student, teacher, X)
    student.eval()  # the teacher runs in eval mode: the same BatchNorm statistics
    with distiller.watch(student):
        student(X)
        assert distiller.loss(Y).item() == pytest.approx(0.0, abs=1e-9)


def test_adapters_join_the_optimizer_of_fit():
    from edgekd.training import fit

    student, teacher = tiny(), tiny("resnet_s", seed=1)
    pairs = choose_layer_pairs("fitnets", student, teacher, None, None, X)
    distiller = FeatureDistiller("fitnets", pairs, student, teacher, X)
    before = [p.detach().clone() for p in distiller.parameters()]
    split = Split(X, Y)

    def loss(logits, labels, index, _epoch):
        return nn.functional.cross_entropy(logits, labels) + distiller.loss(labels)

    with distiller.watch(student):
        fit(student, split, split, loss, epochs=1, lr=0.01, batch_size=8, patience=1, seed=0,
            extra_modules=[distiller])
    assert any(not torch.equal(b, p) for b, p in zip(before, distiller.parameters()))


def test_feature_kd_on_the_nncf_fake_quantized_student():
    """NNCF 3.4 keeps the float model's module names: the same layers are hooked in QAT."""
    pytest.importorskip("nncf")
    from edgekd.quantizers.nncf_int8 import prepare_int8

    student, teacher = tiny(), tiny("resnet_s", seed=1)
    pairs = choose_layer_pairs("fitnets", student, teacher, None, None, X)
    distiller = FeatureDistiller("fitnets", pairs, student, teacher, X)
    quantized = prepare_int8(student, X)
    assert [resolve_name(quantized, n) for n in pairs.student] == pairs.student
    quantized.train()
    with distiller.watch(quantized):
        quantized(X)
        term = distiller.loss(Y)
    term.backward()
    assert torch.isfinite(term)
    assert all(p.grad is not None for p in distiller.parameters())
    assert quantized.stages[0][0].conv1[0].weight.grad.abs().sum() > 0


def test_resolve_name_finds_a_prefixed_module():
    wrapper = nn.Sequential()
    wrapper.add_module("inner", tiny())
    assert resolve_name(wrapper, "stages.1") == "inner.stages.1"
    assert resolve_name(wrapper, "nope") == "nope"
