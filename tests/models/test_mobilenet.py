"""The MobileNet family: shapes, residuals, SE, records, names, width scaling, export."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.models import (
    PRESETS,
    arch_name,
    build_model,
    count_params,
    resolve_arch,
    scale_width,
)
from edgekd.models.mobilenet import (
    InvertedResidual,
    MobileNet,
    SqueezeExcite,
    se_channels,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MOBILENET_PRESETS = sorted(n for n, r in PRESETS.items() if r["family"] == "mobilenet")


def _stage(width, depth=1, stride=1, kernel=3, expand=1, se=False):
    return {"width": width, "depth": depth, "stride": stride, "kernel": kernel, "expand": expand,
            "se": se}


def _record(stages, stem=8, head=32, stem_stride=1):
    return {"family": "mobilenet", "stem": stem, "stem_stride": stem_stride, "head": head,
            "stages": stages}


def test_presets_exist_and_are_mobilenets():
    assert {"mobilenet_xs", "mobilenet_s", "mobilenet_224"} <= set(MOBILENET_PRESETS)
    for name in MOBILENET_PRESETS:
        assert isinstance(build_model(name, 3, 10), MobileNet)
    assert 3 <= len(PRESETS["mobilenet_s"]["stages"]) <= 4
    assert PRESETS["mobilenet_224"]["stem_stride"] == 2
    assert 5 <= len(PRESETS["mobilenet_224"]["stages"]) <= 6


@pytest.mark.parametrize("name", ["mobilenet_xs", "mobilenet_s"])
@pytest.mark.parametrize("size", [8, 32])
def test_forward_shapes(name, size):
    model = build_model(name, 3, 10).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_224_preset_reaches_7x7():
    model = build_model("mobilenet_224", 3, 1000).eval()
    seen = {}
    model.head.register_forward_hook(lambda _m, inputs, _out: seen.update(shape=inputs[0].shape))
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)
    last_width = PRESETS["mobilenet_224"]["stages"][-1]["width"]
    assert seen["shape"] == (1, last_width, 7, 7)


def test_residual_exactly_when_stride_1_and_same_channels():
    record = _record([_stage(8, depth=2), _stage(16, depth=2, stride=2), _stage(24, expand=4)])
    model = build_model(record, 3, 10)
    blocks = [b for b in model.modules() if isinstance(b, InvertedResidual)]
    # stem 8 -> 8 (s1, residual), 8 -> 8 (residual), 8 -> 16 (s2), 16 -> 16 (residual), 16 -> 24
    assert [b.use_residual for b in blocks] == [True, True, False, True, False]

    # Behaviour, not only the flag: with the projection's batch norm zeroed the branch adds
    # nothing, so a residual block returns its input and any other block returns zeros.
    for block, in_ch, stride, out_ch in [(blocks[0], 8, 1, 8), (blocks[2], 8, 2, 16),
                                         (blocks[4], 16, 1, 24)]:
        block.eval()
        nn.init.zeros_(block.project[1].weight)
        nn.init.zeros_(block.project[1].bias)
        x = torch.rand(1, in_ch, 8, 8)
        with torch.no_grad():
            out = block(x)
        assert out.shape == (1, out_ch, 8 // stride, 8 // stride)
        if block.use_residual:
            assert torch.equal(out, x)
        else:
            assert torch.count_nonzero(out) == 0


def test_expand_1_has_no_expansion_conv():
    assert isinstance(InvertedResidual(8, 8, 1, 3, 1, False).expand, nn.Identity)
    expanded = InvertedResidual(8, 8, 1, 3, 6, False)
    assert expanded.expand[0].out_channels == 48 and expanded.depthwise[0].groups == 48


def test_squeeze_excitation_changes_params_and_width():
    plain = _record([_stage(16, expand=4)])
    with_se = _record([_stage(16, expand=4, se=True)])
    hidden = 8 * 4
    squeeze = se_channels(hidden)
    assert squeeze == 8
    extra = (hidden * squeeze + squeeze) + (squeeze * hidden + hidden)
    assert count_params(build_model(with_se, 3, 10)) == count_params(build_model(plain, 3, 10)) + extra
    assert [se_channels(c) for c in (8, 32, 36, 40, 96, 100, 144)] == [8, 8, 16, 16, 24, 32, 40]
    se = SqueezeExcite(16).eval()
    x = torch.rand(1, 16, 4, 4)
    with torch.no_grad():
        gated = se(x)
    assert gated.shape == x.shape and (gated <= x).all() and (gated >= 0).all()


@pytest.mark.parametrize(
    "stage, message",
    [
        ({"width": 8, "depth": 1, "stride": 1, "kernel": 3, "expand": 1}, "missing keys"),
        ({**_stage(8), "dilation": 2}, "unknown keys"),
        (_stage(8, kernel=4), "kernel must be odd"),
        (_stage(8, stride=3), "stride must be 1 or 2"),
        (_stage(8, expand=0), "expand must be"),
        (_stage(8, depth=0), "depth must be"),
    ],
)
def test_bad_stages_fail_with_the_reason(stage, message):
    with pytest.raises(ValueError, match=message):
        build_model(_record([stage]), 3, 10)


def test_origin_and_name_tags_are_ignored():
    record = _record([_stage(8)])
    torch.manual_seed(0)
    plain = build_model(record, 3, 10)
    torch.manual_seed(0)
    tagged = build_model({**record, "origin": "teacher-derived", "name": "x"}, 3, 10)
    assert plain.state_dict().keys() == tagged.state_dict().keys()
    resnet = {"family": "resnet", "stem": 8, "widths": [8], "depths": [1], "origin": "teacher-derived"}
    assert count_params(build_model(resnet, 3, 10)) > 0
    assert resolve_arch(resnet)["origin"] == "teacher-derived"


def test_arch_name_is_readable_and_unique():
    base = _record([_stage(16), _stage(24, depth=2, stride=2, expand=6),
                    _stage(40, depth=2, stride=2, kernel=5, expand=6, se=True)])
    assert arch_name(base) == "mobilenet_stem8s1_w16-24-40_d122_s122_k335_e166_se001_h32"
    assert arch_name(resolve_arch("mobilenet_s")) == "mobilenet_s"
    variants = [base]
    for path, value in [("stem", 16), ("stem_stride", 2), ("head", 64)]:
        variants.append({**copy.deepcopy(base), path: value})
    for key, value in [("width", 48), ("depth", 3), ("stride", 1), ("kernel", 7), ("expand", 4),
                       ("se", False)]:
        changed = copy.deepcopy(base)
        changed["stages"][2][key] = value
        variants.append(changed)
    # Two-digit values must not run into their neighbours: d(1,12) is not d(11,2).
    variants.append(_record([_stage(8, depth=1), _stage(8, depth=12)]))
    variants.append(_record([_stage(8, depth=11), _stage(8, depth=2)]))
    names = [arch_name(v) for v in variants]
    assert len(set(names)) == len(names)
    assert arch_name(copy.deepcopy(base)) == arch_name(base)  # stable


@pytest.mark.parametrize("multiplier, multiple", [(0.5, 8), (0.75, 8), (1.0, 16), (1.3, 32)])
def test_scale_width_rounds_stem_stages_and_head(multiplier, multiple):
    base = resolve_arch("mobilenet_s")
    before = copy.deepcopy(base)
    out = scale_width(base, multiplier, multiple)
    assert base == before  # input untouched, nested stages included
    assert "name" not in out
    olds = [base["stem"], *(s["width"] for s in base["stages"]), base["head"]]
    news = [out["stem"], *(s["width"] for s in out["stages"]), out["head"]]
    for old, new in zip(olds, news):
        assert new % multiple == 0 and new >= old * multiplier
        assert new - old * multiplier < multiple or new == multiple
    # only widths change
    for old, new in zip(base["stages"], out["stages"]):
        assert {k: v for k, v in old.items() if k != "width"} == {
            k: v for k, v in new.items() if k != "width"}
    assert out["stem_stride"] == base["stem_stride"]
    build_model(out, 3, 10)


def test_exports_to_openvino_and_matches_torch(tmp_path):
    pytest.importorskip("openvino")
    from edgekd.backends import openvino as ovb

    record = _record([_stage(8, depth=2), _stage(16, stride=2, kernel=5, expand=4, se=True)])
    model = build_model(record, 3, 10).eval()
    path = ovb.export(model, torch.rand(1, 3, 8, 8), tmp_path / "m.xml", metadata={})
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(ovb.predict_logits(path, x), expected, atol=1e-4)
