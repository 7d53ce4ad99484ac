"""Where training runs: --train-device auto|cpu|cuda[:N], mixed precision on CUDA, the model handed
back on the CPU. The CUDA paths run where torch sees a GPU and are skipped with the reason here."""

from __future__ import annotations

import pytest
import torch

from edgekd.data import Split
from edgekd.errors import UserError
from edgekd.models import build_model
from edgekd.training import fit, resolve_device
from edgekd.training.device import check_device_name

NO_CUDA = "no CUDA GPU here (torch.cuda.is_available() is False): the CUDA path runs on a GPU machine"


def test_auto_is_the_cpu_without_cuda_and_cuda_with_it():
    device = resolve_device("auto")
    assert device.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = resolve_device("cpu")
    assert cpu.device.type == "cpu" and cpu.amp_dtype is None and cpu.grad_scaler() is None


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_names_are_one_line_errors(name):
    with pytest.raises(UserError, match="use auto, cpu, cuda or cuda:N"):
        check_device_name(name)


def tiny_split(n: int = 64) -> Split:
    torch.manual_seed(0)
    return Split(torch.rand(n, 1, 8, 8), torch.randint(0, 3, (n,)))


def test_fit_hands_the_model_back_on_the_cpu_and_counts_images_per_second():
    model = build_model("resnet_xs", 1, 3)
    result = fit(model, tiny_split(), tiny_split(16), lambda logits, labels, *_: torch.nn.functional.cross_entropy(
        logits, labels), epochs=1, lr=1e-3, batch_size=16, patience=1, seed=0, device=resolve_device("cpu"))
    assert next(model.parameters()).device.type == "cpu" and result.images_per_s > 0


def test_max_steps_per_epoch_caps_each_epoch():
    seen = []

    def loss(logits, labels, index, _epoch):
        seen.append(len(index))
        return torch.nn.functional.cross_entropy(logits, labels)

    fit(build_model("resnet_xs", 1, 3), tiny_split(), tiny_split(16), loss, epochs=2, lr=1e-3, batch_size=8,
        patience=2, seed=0, max_steps_per_epoch=3)
    assert seen == [8] * 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_training_on_cuda_with_autocast_returns_a_cpu_model():
    device = resolve_device("cuda")
    assert device.amp_dtype in (torch.bfloat16, torch.float16)
    model = build_model("resnet_xs", 1, 3)
    fit(model, tiny_split(), tiny_split(16), lambda logits, labels, *_: torch.nn.functional.cross_entropy(
        logits.float(), labels), epochs=1, lr=1e-3, batch_size=16, patience=1, seed=0, device=device)
    assert next(model.parameters()).device.type == "cpu"
