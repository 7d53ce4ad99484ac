"""2:4 sparsity: only layers TensorRT accelerates are sparsified, the masks are valid 2:4, and the
pattern survives export to ONNX, fp32 and ModelOpt's Q/DQ INT8 (what TensorRT builds from)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.prune.sparse_2_4 import (
    eligible_layers,
    fold_masks,
    is_2_4,
    reapply_masks_,
    sparse_latency_source,
    sparsify_2_4_,
    zero_masks,
)
from edgekd.prune.sparse_onnx import check_onnx_2_4, layer_of_node

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class WideNet(nn.Module):
    """Two layers wide enough for sparse tensor cores, and three that are not."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)  # 3 input channels: not 2:4-able
        self.expand = nn.Conv2d(32, 256, 3, padding=1)  # C x kernel = 288, K = 256: eligible
        self.bn = nn.BatchNorm2d(256)
        self.wide = nn.Conv2d(256, 256, 1)  # eligible
        self.narrow = nn.Conv2d(256, 64, 1)  # K = 64: dense tactics are as fast
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn(self.expand(x)))
        x = torch.relu(self.narrow(torch.relu(self.wide(x))))
        return self.fc(x.mean(dim=(2, 3)))


def sparse_model() -> tuple[nn.Module, list[str]]:
    torch.manual_seed(0)
    model = WideNet().eval()
    chosen = [layer.name for layer in eligible_layers(model, exclude=["fc"]) if layer.eligible]
    return sparsify_2_4_(model, chosen), chosen


def test_only_layers_tensorrt_accelerates_are_eligible():
    layers = {layer.name: layer for layer in eligible_layers(WideNet(), exclude=["fc"])}
    assert [name for name, layer in layers.items() if layer.eligible] == ["expand", "wide"]
    assert "multiples of 16" in layers["stem"].reason
    assert "below 256" in layers["narrow"].reason and "#3849" in layers["narrow"].reason
    assert "on request" in layers["fc"].reason
    grouped = nn.Sequential(nn.Conv2d(256, 256, 3, groups=256))
    assert "grouped" in eligible_layers(grouped)[0].reason


def test_masks_are_2_4_on_the_chosen_layers_only_and_stay_while_training():
    model, chosen = sparse_model()
    for name in chosen:
        assert is_2_4(model.get_submodule(name).weight)
    assert not is_2_4(model.get_submodule("narrow").weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = model(torch.rand(4, 3, 8, 8)).square().mean()
    loss.backward()
    optimizer.step()
    assert all(is_2_4(model.get_submodule(name).weight) for name in chosen), "ModelOpt keeps the masks"


def test_2_4_survives_fp32_onnx_export(tmp_path):
    from edgekd.backends import onnx as onnx_backend

    model, chosen = sparse_model()
    model = fold_masks(model)
    assert type(model.wide) is nn.Conv2d
    path = onnx_backend.export(model, torch.rand(1, 3, 8, 8), tmp_path / "sparse.onnx", metadata={})
    shapes = {name: tuple(model.get_submodule(name).weight.shape) for name in chosen}
    check = check_onnx_2_4(path, shapes)
    assert check.ok, check.to_dict()
    # batch norm was folded into "expand" by the exporter: whole output channels scaled, zeros kept
    assert {w.layer for w in check.weights if w.is_2_4} == {"expand", "wide"}


def test_2_4_survives_qdq_int8_export_and_a_lost_pattern_is_caught(tmp_path):
    from edgekd.quantizers import modelopt_int8

    model, chosen = sparse_model()
    model = fold_masks(model)
    masks = zero_masks(model, chosen)
    shapes = {name: tuple(model.get_submodule(name).weight.shape) for name in chosen}
    calibration = torch.rand(8, 3, 8, 8)
    quantized = modelopt_int8.prepare_int8(model, calibration)
    path = modelopt_int8.export_onnx(quantized, calibration[:1], tmp_path / "int8.onnx")
    check = check_onnx_2_4(path, shapes)
    assert check.ok, check.to_dict()
    assert sum(w.is_2_4 for w in check.weights) == 2

    # QAT after folding would fill the zeros: the check sees it, and re-applying the masks repairs it
    with torch.no_grad():
        for name in chosen:
            dict(quantized.named_modules())[f"network.{name}"].weight.add_(0.01)
    broken = modelopt_int8.export_onnx(quantized, calibration[:1], tmp_path / "broken.onnx")
    assert sorted(check_onnx_2_4(broken, shapes).dense) == sorted(chosen)
    reapply_masks_(quantized, masks)
    repaired = modelopt_int8.export_onnx(quantized, calibration[:1], tmp_path / "repaired.onnx")
    assert check_onnx_2_4(repaired, shapes).ok


def test_2_4_latency_is_not_measured_off_a_tensorrt_host():
    from edgekd.target import load_target, why_not_measurable

    jetson = load_target("jetson-orin")
    expected = "measured" if why_not_measurable(jetson) is None else "not measured"
    assert sparse_latency_source(jetson) == expected
    with pytest.raises(UserError, match="only on TensorRT"):
        sparse_latency_source(load_target("x86-cpu"))


def test_missing_layers_and_bad_names():
    with pytest.raises(UserError, match="no convolution or linear layer"):
        sparsify_2_4_(WideNet(), ["nope"])
    assert layer_of_node("/stages/stages.2/stages.2.0/conv2/conv2.0/Conv") == "stages.2.0.conv2.0"
    assert layer_of_node("/fc/Gemm") == "fc"
    assert not is_2_4(torch.ones(8, 6))  # 6 input channels do not split into fours
