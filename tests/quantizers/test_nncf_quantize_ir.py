"""NNCF PTQ of an exported OpenVINO IR: INT8 FakeQuantize ops in the IR, outputs close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from residual_cnn import ResidualCNN, digits

from edgekd.backends import openvino
from edgekd.quantizers import nncf_int8


@pytest.mark.usefixtures("one_torch_thread")
def test_quantize_ir_writes_an_int8_ir_that_follows_the_fp32_one(tmp_path):
    x, _ = digits()
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    fp32 = openvino.export(model, x[:1], tmp_path / "fp32.xml", metadata={})
    int8 = nncf_int8.quantize_ir(fp32, tmp_path / "int8.xml", x[:32])
    ops = {op.get_type_name() for op in openvino._core().read_model(str(int8)).get_ops()}
    assert "FakeQuantize" in ops
    reference, quantized = openvino.predict_logits(fp32, x[:200]), openvino.predict_logits(int8, x[:200])
    assert not np.array_equal(reference, quantized)
    assert np.mean(reference.argmax(1) == quantized.argmax(1)) > 0.9
