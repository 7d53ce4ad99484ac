"""CoreML backend: conversion, compression, metadata and spec checks run on Linux for real;
prediction needs Core ML, i.e. macOS, and is skipped elsewhere (where it must fail cleanly)."""

import platform

import numpy as np
import pytest
import torch
from tiny_cnn import TinyCNN

from edgekd.backends import get_backend
from edgekd.errors import UserError

pytest.importorskip(
    "coremltools", reason="coremltools is not installed (pip install 'edgekd[coreml]')"
)
from edgekd.backends import coreml as cmb  # noqa: E402 - after the skip: it imports coremltools

METADATA = {"teacher": "resnet_l", "arch": "tiny", "note": 'odd "chars" & <more>'}
ON_MACOS = platform.system() == "Darwin"
macos_only = pytest.mark.skipif(not ON_MACOS, reason="CoreML prediction is only supported on macOS")



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # conv2 has 16*32*3*3 = 4608 weights, above coremltools' 2048-element compression
    # threshold, so int8/palettized really compress something.
    return TinyCNN(channels=(16, 32)).eval()


@pytest.fixture(scope="module")
def packages(model, tmp_path_factory):
    """One .mlpackage per precision, converted once for the whole module."""
    out = tmp_path_factory.mktemp("coreml")
    example = torch.rand(1, 1, 8, 8)
    return {
        precision: cmb.export(
            model,
            example,
            out / f"student_{precision}.mlpackage",
            metadata=METADATA,
            precision=precision,
        )
        for precision in cmb.PRECISIONS
    }


def test_get_backend():
    assert get_backend("coreml").NAME == "coreml"
    assert cmb.version() and "fp16" in cmb.precision_note()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "palettized"])
def test_export_writes_a_valid_package(packages, precision):
    path = packages[precision]
    assert path.is_dir() and (path / "Manifest.json").is_file()
    assert cmb.size_mb(path) > 0
    assert cmb.validate(path, input_shape=(1, 1, 8, 8), num_classes=10)["input_shape"] == (
        1,
        1,
        8,
        8,
    )


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_metadata_round_trips(packages, precision):
    assert cmb.read_metadata(packages[precision]) == METADATA


def test_op_inventory_shows_what_the_model_became(packages):
    fp32 = cmb.op_inventory(packages["fp32"])
    assert fp32["conv"] == 2 and fp32["linear"] == 1 and fp32["relu"] == 2
    assert not any(op.startswith("constexpr_") for op in fp32)

    int8 = cmb.op_inventory(packages["int8"])
    palettized = cmb.op_inventory(packages["palettized"])
    # iOS16 target: affine dequantize for linear quantization, LUT for palettization
    # (from iOS18 the former becomes constexpr_blockwise_shift_scale).
    assert int8.get("constexpr_affine_dequantize", 0) >= 1
    assert palettized.get("constexpr_lut_to_dense", 0) >= 1
    assert int8["conv"] == palettized["conv"] == 2


def test_compression_shrinks_the_package(packages):
    sizes = {precision: cmb.size_mb(path) for precision, path in packages.items()}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    assert sizes["palettized"] < sizes["fp16"]


def test_export_keeps_model_mode_and_rejects_bad_options(tmp_path):
    training_model = TinyCNN().train()
    x = torch.rand(1, 1, 8, 8)
    cmb.export(training_model, x, tmp_path / "m.mlpackage", metadata={}, precision="fp32")
    assert training_model.training
    with pytest.raises(UserError, match="precision must be one of"):
        cmb.export(training_model, x, tmp_path / "m.mlpackage", metadata={}, precision="int4")
    with pytest.raises(UserError, match="unknown CoreML compute units"):
        cmb.export(training_model, x, tmp_path / "m.mlpackage", metadata={}, compute_units="GPU")
    with pytest.raises(UserError, match="unknown CoreML deployment target"):
        cmb.export(
            training_model, x, tmp_path / "m.mlpackage", metadata={}, deployment_target="iOS99"
        )


def test_validate_rejects_a_wrong_interface(packages):
    with pytest.raises(UserError, match="input shape"):
        cmb.validate(packages["fp16"], input_shape=(1, 3, 8, 8))
    with pytest.raises(UserError, match="classes"):
        cmb.validate(packages["fp16"], num_classes=7)


def test_missing_package_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        cmb.read_metadata(tmp_path / "nope.mlpackage")


class RaisingForward(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("this model cannot run")


def test_trace_failure_is_user_error(tmp_path):
    with pytest.raises(UserError, match="CoreML cannot trace this model: this model cannot run"):
        cmb.export(
            RaisingForward(), torch.rand(1, 1, 8, 8), tmp_path / "bad.mlpackage", metadata={}
        )


@pytest.mark.skipif(ON_MACOS, reason="checks the message given where Core ML is absent")
def test_prediction_off_macos_is_user_error(packages):
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    with pytest.raises(UserError, match="CoreML prediction needs macOS"):
        cmb.predict_logits(packages["fp16"], x)
    with pytest.raises(UserError, match="only supported on macOS"):
        cmb.benchmark(packages["fp16"], warmup=1, runs=2)
    with pytest.raises(UserError, match="CoreML prediction needs macOS"):
        cmb.accuracy(packages["fp16"], x, np.zeros(2))


@macos_only
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "palettized"])
def test_logits_match_torch(model, packages, precision):
    torch.manual_seed(1)
    samples = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        expected = model(samples).numpy()
    actual = cmb.predict_logits(packages[precision], samples, compute_units="CPU_ONLY")
    assert actual.shape == (16, 10)
    agreement = np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))
    assert agreement >= (1.0 if precision == "fp32" else 0.9)


@macos_only
def test_benchmark_on_macos(packages):
    stats = cmb.benchmark(packages["fp16"], warmup=2, runs=10)
    assert stats.runs == 10 and 0 < stats.min_ms <= stats.p50_ms <= stats.p99_ms
