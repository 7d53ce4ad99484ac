"""Architecture records: presets, building, names and width scaling."""

from __future__ import annotations

import copy

import pytest
import torch

from edgekd.errors import UserError
from edgekd.models import PRESETS, arch_name, build_model, resolve_arch, scale_width
from edgekd.models.mobilenet import MobileNet
from edgekd.models.resnet import ResNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("num_classes", [10, 7])
def test_every_preset_builds_and_runs(preset, in_channels, num_classes):
    model = build_model(preset, in_channels, num_classes).eval()
    assert isinstance(model, {"resnet": ResNet, "mobilenet": MobileNet}[PRESETS[preset]["family"]])
    with torch.no_grad():
        for size in (8, 28, 32):
            out = model(torch.rand(2, in_channels, size, size))
            assert out.shape == (2, num_classes)
            assert torch.isfinite(out).all()


def test_build_from_record_and_name_are_the_same_model():
    torch.manual_seed(0)
    by_name = build_model("resnet_s", 1, 10)
    torch.manual_seed(0)
    by_record = build_model(resolve_arch("resnet_s"), 1, 10)
    assert by_name.state_dict().keys() == by_record.state_dict().keys()
    for key, value in by_name.state_dict().items():
        assert torch.equal(value, by_record.state_dict()[key])


def test_presets_grow_in_size():
    sizes = [sum(p.numel() for p in build_model(n, 1, 10).parameters())
             for n in ("resnet_xs", "resnet_s", "resnet_m", "resnet_l")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_unknown_arch_suggests_close_name():
    with pytest.raises(UserError) as info:
        resolve_arch("resnet_sx")
    message = str(info.value)
    assert "unknown architecture 'resnet_sx'" in message
    assert "did you mean" in message
    for name in PRESETS:
        assert name in message  # lists the known ones
    with pytest.raises(UserError, match="unknown architecture"):
        build_model("mobilenet", 3, 10)


def test_unknown_family_in_record():
    with pytest.raises(UserError, match="unknown architecture family 'vit'"):
        resolve_arch({"family": "vit", "widths": [8]})
    with pytest.raises(UserError, match="unknown architecture family None"):
        resolve_arch({"widths": [8]})


def test_mismatched_widths_and_depths():
    with pytest.raises(ValueError, match="same length"):
        build_model({"family": "resnet", "stem": 8, "widths": [8, 16], "depths": [1]}, 1, 10)


def test_resolve_arch_returns_a_copy():
    before = copy.deepcopy(PRESETS)
    record = resolve_arch("resnet_xs")
    assert record == {"name": "resnet_xs", **PRESETS["resnet_xs"]}
    record["stem"] = 999
    record["family"] = "other"
    del record["depths"]
    assert PRESETS == before
    given = {"family": "resnet", "stem": 8, "widths": [8], "depths": [1]}
    out = resolve_arch(given)
    out["stem"] = 16
    assert given["stem"] == 8


def test_resolve_arch_copy_is_deep():
    before = copy.deepcopy(PRESETS)
    record = resolve_arch("resnet_xs")
    try:
        record["widths"][0] = 999
        record["depths"].append(5)
        assert PRESETS == before
    finally:  # never leave a mutated preset behind for other tests
        PRESETS.clear()
        PRESETS.update(before)


def test_arch_name():
    assert arch_name(resolve_arch("resnet_m")) == "resnet_m"
    record = {"family": "resnet", "stem": 8, "widths": [8, 16, 24], "depths": [1, 2, 1]}
    assert arch_name(record) == "resnet_w8-16-24_d121"
    assert arch_name(dict(record)) == arch_name(record)  # stable
    # a scaled record loses the preset name and gets a derived one
    scaled = scale_width(resolve_arch("resnet_s"), 0.5, 8)
    assert "name" not in scaled
    assert arch_name(scaled) == "resnet_w8-16-32_d111"


def test_scale_width_identity_and_doubling():
    base = resolve_arch("resnet_s")
    same = scale_width(base, 1.0, 8)
    assert same["stem"] == base["stem"] and same["widths"] == base["widths"]
    assert same["depths"] == base["depths"] and same["family"] == "resnet"
    double = scale_width(base, 2.0, 8)
    assert double["stem"] == 32 and double["widths"] == [32, 64, 128]
    # the input record is left alone
    assert base == resolve_arch("resnet_s")


@pytest.mark.parametrize(
    "width, multiplier, multiple, expected",
    [
        (16, 0.5, 8, 8),
        (16, 0.6, 8, 16),  # 9.6 rounds up to 16
        (24, 0.5, 8, 16),  # 12 -> 16
        (64, 1.5, 8, 96),
        (64, 1.5, 32, 96),
        (64, 1.1, 16, 80),  # 70.4 -> 80
        (8, 0.25, 8, 8),  # 2 -> never below the multiple
        (8, 0.01, 16, 16),
        (256, 0.1, 32, 32),
    ],
)
def test_scale_width_rounds_up_to_multiple(width, multiplier, multiple, expected):
    record = {"family": "resnet", "stem": width, "widths": [width], "depths": [1]}
    out = scale_width(record, multiplier, multiple)
    assert out["stem"] == expected and out["widths"] == [expected]
    assert expected % multiple == 0 and expected >= multiple
    assert expected >= width * multiplier


@pytest.mark.parametrize("multiplier", [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
@pytest.mark.parametrize("multiple", [8, 16, 32])
def test_scale_width_properties_on_presets(multiplier, multiple):
    def widths(record):
        if record["family"] == "mobilenet":
            return [record["stem"], *(s["width"] for s in record["stages"]), record["head"]]
        return [record["stem"], *record["widths"]]

    for name in PRESETS:
        base = resolve_arch(name)
        out = scale_width(base, multiplier, multiple)
        for old, new in zip(widths(base), widths(out)):
            assert new % multiple == 0
            assert new >= multiple
            assert new >= old * multiplier
            assert new - old * multiplier < multiple or new == multiple  # the smallest such
        build_model(out, 1, 10)  # still buildable


def test_scale_width_exact_product_not_rounded_past():
    record = {"family": "resnet", "stem": 400, "widths": [400], "depths": [1]}
    assert scale_width(record, 1.1, 8)["widths"] == [440]
