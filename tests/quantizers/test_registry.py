"""Every target's `quantizer:` names a quantizer module with the same contract."""

from __future__ import annotations

import inspect

import pytest

from edgekd.errors import UserError
from edgekd.quantizers import get_quantizer
from edgekd.target import known_targets, load_target


@pytest.mark.parametrize("target", known_targets())
def test_each_target_quantizer_has_the_contract(target):
    quantizer_name = load_target(target).quantizer
    if quantizer_name == "nncf":
        pytest.importorskip("nncf", reason="nncf is not installed (pip install 'edgekd[openvino]')")
    if quantizer_name == "modelopt":
        pytest.importorskip("modelopt", reason="nvidia-modelopt is not installed (pip install 'edgekd[tensorrt]')")
    if quantizer_name == "coreml":
        pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'edgekd[coreml]')")
    module = get_quantizer(quantizer_name)
    for function in ("prepare_int8", "save_int8", "load_int8", "version"):
        assert callable(getattr(module, function)), f"{quantizer_name}.{function}"
    assert module.version()
    if quantizer_name in ("modelopt", "coreml"):
        parameters = inspect.signature(module.prepare_int8).parameters
        assert parameters["batch_size"].default == 64 and parameters["exclude"].default == ()


def test_tensorrt_and_coreml_targets_use_their_own_quantizers():
    assert load_target("jetson-orin").quantizer == "modelopt"
    assert load_target("apple-m").quantizer == "coreml"


def test_unknown_quantizer_lists_known_ones():
    with pytest.raises(UserError, match="known: coreml, modelopt, nncf"):
        get_quantizer("tensorrt")
