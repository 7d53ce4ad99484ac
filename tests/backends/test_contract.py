"""Every backend module meets the Backend contract (edgekd/backends/__init__.py): the names exist,
and each function takes the contract's parameters, so the stages can call any backend alike."""

from __future__ import annotations

import importlib.util
import inspect

import pytest

from edgekd.backends import KNOWN_BACKENDS, Backend, get_backend

RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime", "coreml": "coremltools", "tensorrt": None}


def contract_functions() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(Backend).items()
            if inspect.isfunction(member) and not name.startswith("_")}


@pytest.mark.parametrize("name", KNOWN_BACKENDS)
def test_backend_meets_the_contract(name):
    runtime = RUNTIMES[name]
    if runtime is not None and importlib.util.find_spec(runtime) is None:
        pytest.skip(f"{runtime} is not installed here (pip install 'edgekd[{name}]')")
    backend = get_backend(name)  # tensorrt imports without TensorRT: only building and timing need it
    assert isinstance(backend, Backend)
    assert backend.NAME == name and backend.SUFFIX.startswith(".") and backend.PRECISIONS
    for function, wanted in contract_functions().items():
        have = inspect.signature(getattr(backend, function))
        wanted_names = [p for p in wanted.parameters if p != "self"]
        missing = [p for p in wanted_names if p not in have.parameters]
        assert not missing, f"{name}.{function} lacks {missing}"


def test_the_contract_lists_what_the_stages_call():
    assert {"runtime_missing", "baseline_precision", "write_artifact", "write_for_timing", "check_artifact",
            "finish_export", "timed_path", "accuracy_stand_in", "device_conditions", "predictor"} <= set(contract_functions())


@pytest.mark.parametrize("name, expected", [("openvino", "fp32"), ("coreml", "fp16"), ("tensorrt", "fp16")])
def test_baseline_precision_is_the_backends_choice(name, expected):
    if RUNTIMES[name] and importlib.util.find_spec(RUNTIMES[name]) is None:
        pytest.skip(f"{RUNTIMES[name]} is not installed here")
    assert get_backend(name).baseline_precision(["fp32", "fp16", "int8"]) == expected
