"""The device training runs on (--train-device auto|cpu|cuda[:N]) and its mixed precision.

`auto` picks CUDA when torch sees a GPU. On CUDA, autocast runs the forward pass in bf16 where the
GPU supports it (Ampere and later), else in fp16 with a gradient scaler; on the CPU training stays
fp32 (bf16 autocast is slower than fp32 on CPUs without AMX/AVX-512 BF16, like this project's).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass

import torch

from edgekd.errors import UserError

log = logging.getLogger(__name__)

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class TrainDevice:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32 throughout

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (its range underflows small gradients); bf16 does not."""
        if self.amp_dtype == torch.float16:
            return torch.amp.GradScaler(self.device.type)
        return None

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.is_cuda else "CPU"
        precision = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(self.amp_dtype, "fp32")
        return f"{self.device} ({name}, {precision})"


CPU = TrainDevice(torch.device("cpu"), None)


def check_device_name(name: str) -> None:
    """A one-line error, before any work, for a device name that cannot be right here."""
    if not DEVICE_PATTERN.match(name):
        raise UserError(f"--train-device {name!r}: use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--train-device {name}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                            "torch.cuda.is_available() is False); use --train-device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--train-device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def resolve_device(name: str = "auto", amp: bool = True) -> TrainDevice:
    """The TrainDevice for `name`; mixed precision on CUDA unless `amp` is False."""
    check_device_name(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return CPU
    device = torch.device("cuda" if name == "auto" else name)
    if not amp:
        return TrainDevice(device, None)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return TrainDevice(device, dtype)
