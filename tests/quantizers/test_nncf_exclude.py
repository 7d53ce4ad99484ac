"""nncf_int8.prepare_int8(exclude=...): the named torch modules really stay float, in NNCF's model
and in the OpenVINO IR it exports to; names are checked against the model.
Also: bias correction stays off unless asked for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.errors import UserError

pytest.importorskip("nncf", reason="nncf is not installed (pip install 'edgekd[openvino]')")
from nncf.torch import get_config  # after the skip: nncf is optional

from edgekd.quantizers import nncf_int8  # noqa: E402 - after the skip: it imports nncf


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)) + x


class Net(nn.Module):
    """Stem, two blocks in a Sequential, a head: names at three depths ("layers.0.conv")."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.layers = nn.Sequential(Block(), Block())
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.layers(torch.relu(self.stem(x))).mean(dim=(2, 3)))


class SkipsItsSequential(Net):
    """Calls the blocks by index: NNCF then names their ops without the "layers/<i>" path."""

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for i in range(len(self.layers)):
            x = self.layers[i](x)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def calib():
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _weight_quantized_ops(model: nn.Module) -> set[str]:
    """Conv/linear op names that have a weight quantizer (a pre-hook on the op's port 1; an add's
    port 1 is an activation)."""
    names = set()
    for entry in get_config(model)["compression_state"]:
        for hook in entry["hook_names_in_model"]:
            kind, _, rest = hook.partition(".")
            op, _, port = rest.rpartition("__")
            if kind == "pre_hooks" and port.startswith("1") and ("conv2d" in op or "linear" in op):
                names.add(op)
    return names


def _ir_weight_types(model: nn.Module, example: torch.Tensor, tmp_path) -> dict[str, str]:
    """Element type of the constant each Convolution/MatMul's weights come from in the exported
    IR: i8 when quantized (Constant i8 -> Convert -> Multiply by the scale), f32 when float."""
    import openvino as ov

    from edgekd.backends import openvino as ov_backend

    path = ov_backend.export(model, example, tmp_path / "m.xml", metadata={})
    types = {}
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            node = op.input_value(1).get_node()
            while node.get_type_name() != "Constant":  # through the dequantization chain
                node = node.input_value(0).get_node()
            types[op.get_friendly_name()] = node.get_element_type().get_type_name()
    return types


def test_node_names_follow_the_module_path(net, calib):
    assert nncf_int8.nncf_node_names(net, calib[:1], "stem") == ["stem/conv2d/0"]
    assert nncf_int8.nncf_node_names(net, calib[:1], "layers.1.conv") == ["layers/1/conv/conv2d/0"]
    # a container holds its children's ops and its own (relu, add)
    assert nncf_int8.nncf_node_names(net, calib[:1], "layers.0") == [
        "layers/0/add/0", "layers/0/conv/conv2d/0", "layers/0/relu/0"]


def test_node_names_found_through_weights_when_the_path_is_short():
    torch.manual_seed(0)
    model = SkipsItsSequential().eval()
    # NNCF calls this op "conv/conv2d/0" (the Sequential never ran); its weight is still named in full.
    names = nncf_int8.nncf_node_names(model, torch.rand(1, 1, 8, 8), "layers.1.conv")
    assert len(names) == 1 and names[0].endswith("conv/conv2d/1")


def test_excluded_layer_stays_float_in_nncf_and_in_the_ir(net, calib, tmp_path):
    full = nncf_int8.prepare_int8(net, calib)
    assert _weight_quantized_ops(full) == {
        "stem/conv2d/0", "layers/0/conv/conv2d/0", "layers/1/conv/conv2d/0", "fc/linear/0"}

    kept = nncf_int8.prepare_int8(net, calib, exclude=["layers.1.conv"])
    assert _weight_quantized_ops(kept) == {"stem/conv2d/0", "layers/0/conv/conv2d/0", "fc/linear/0"}
    # float weights differ from the int8 grid: the excluded conv computes what the float one does
    x = calib[:4]
    with torch.no_grad():
        assert not torch.allclose(full(x), kept(x), atol=1e-6)

    # the exclusion survives save/load (the distill stage's checkpoint)
    nncf_int8.save_int8(kept, tmp_path / "kept.pt")
    loaded = nncf_int8.load_int8(Net(), tmp_path / "kept.pt")
    assert _weight_quantized_ops(loaded) == _weight_quantized_ops(kept)
    with torch.no_grad():
        assert torch.allclose(loaded(x), kept(x), atol=1e-6)

    types = _ir_weight_types(kept, calib[:1], tmp_path)
    by_module = {name.split("/")[0].removeprefix("__module."): kind for name, kind in types.items()}
    assert by_module == {"stem": "i8", "layers.0.conv": "i8", "layers.1.conv": "f32", "fc": "i8"}


def test_excluding_a_block_leaves_everything_in_it_float(net, calib):
    kept = nncf_int8.prepare_int8(net, calib, exclude=["layers.0"])
    assert _weight_quantized_ops(kept) == {"stem/conv2d/0", "layers/1/conv/conv2d/0", "fc/linear/0"}
    hooks = [h for entry in get_config(kept)["compression_state"] for h in entry["hook_names_in_model"]]
    # No activation quantizer inside the block either; its output is the next block's input, and
    # that block is quantized, so NNCF quantizes the output of its producer, the add.
    assert [h for h in hooks if "layers/0/" in h] == ["post_hooks.layers/0/add/0__0.0"]
    assert "post_hooks./relu/0__0.0" not in hooks  # the stem's output feeds only the float block


def test_unknown_module_names_close_matches(net, calib):
    with pytest.raises(UserError, match=r"'layers\.0\.cnv' \(close: layers\.0\.conv"):
        nncf_int8.prepare_int8(net, calib, exclude=["layers.0.cnv"])


# NNCF's fast bias correction is off unless asked for, so PTQ leaves the float model's biases as
# they were (benchmarks/nncf_bias_correction.py measured it costing PTQ accuracy on trained models).

def _biases(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if name.endswith("bias")}


def test_biases_are_left_alone_by_default(net, calib):
    before = _biases(net)
    after = _biases(nncf_int8.prepare_int8(net, calib))
    assert before and before.keys() <= after.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def test_bias_correction_on_request_shifts_biases(net, calib):
    before = _biases(net)
    after = _biases(nncf_int8.prepare_int8(net, calib, bias_correction=True))
    assert any(not torch.equal(after[name], value) for name, value in before.items())
