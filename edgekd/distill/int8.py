"""INT8 with the target's own quantizer, shared by distillation and the prune stage (which
quantizes the pruned student the same way): the calibration images, the device QAT trains on, and
the PTQ that QAT starts from (with the optional per-layer sensitivity sweep)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from edgekd.data.calibration import load_calibration
from edgekd.io import first_line, write_json
from edgekd.quantizers import get_quantizer
from edgekd.results import DistillResult
from edgekd.run import RunContext
from edgekd.training import TrainDevice
from edgekd.training.device import CPU

log = logging.getLogger(__name__)


def qat_device_for(model: torch.nn.Module, device: TrainDevice, quantizer: str, example: torch.Tensor) -> TrainDevice:
    """The training device when the quantizer's fake-quantized model trains there (one forward and
    backward step tried on a copy), else the CPU, with a message that says why."""
    if not device.is_cuda:
        return device
    try:
        trial = copy.deepcopy(model).to(device.device).train()
        with device.autocast():
            trial(example.to(device.device)).float().sum().backward()
        return device
    except Exception as exc:  # noqa: BLE001 - any failure means: not on this device
        log.warning("distill: the %s quantizer's QAT does not run on %s (%s); QAT falls back to the CPU", quantizer,
                    device.device, first_line(exc))
        return CPU
    finally:
        torch.cuda.empty_cache()


def calibration_inputs(ctx: RunContext) -> torch.Tensor:
    """The images INT8 calibrates on: distill.calibration's manifest, else the first
    distill.calibration_samples training images."""
    settings, data = ctx.recipe.distill, ctx.data
    if settings.calibration:
        return load_calibration(settings.calibration, data.input_shape,
                                crop_fraction=data.calibration_crop(ctx.recipe.data.crop_fraction))
    return data.train.head(settings.calibration_samples)


def quantize_student(ctx: RunContext, student: torch.nn.Module, calibration: torch.Tensor,
                     result: DistillResult) -> torch.nn.Module:
    """The target quantizer's PTQ of the student; with a sensitivity threshold, the layers whose
    INT8 costs more than it stay float (report: distill/sensitivity.json). Under torchrun rank 0
    alone runs the sweep (it writes files and times latency); the other ranks quantize with the
    layers it kept in float (DDP then gives them rank 0's calibrated ranges)."""
    settings = ctx.recipe.distill
    quantizer = get_quantizer(ctx.target.quantizer)
    if settings.sensitivity_threshold_pt is None:
        return quantizer.prepare_int8(student, calibration)
    from edgekd.quantizers.sensitivity import ptq_with_sensitivity

    swept: dict[str, torch.nn.Module] = {}

    def sweep() -> dict[str, Any]:
        swept["model"], report = ptq_with_sensitivity(
            student, calibration, ctx.data.val, target=ctx.target, threshold_pt=settings.sensitivity_threshold_pt,
            layers=settings.sensitivity_layers, workdir=ctx.stage_dir("distill") / "sensitivity")
        write_json(ctx.stage_dir("distill") / "sensitivity.json", report)
        return report

    report = ctx.world.on_main(sweep, share=True)
    model = (swept["model"] if "model" in swept
             else quantizer.prepare_int8(student, calibration, exclude=report["excluded"]))
    result.int8_excluded = report["excluded"]
    result.sensitivity = {"threshold_pt": settings.sensitivity_threshold_pt, "excluded": report["excluded"],
                          "latency": report.get("latency")}
    return model
