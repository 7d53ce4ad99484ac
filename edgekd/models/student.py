"""The student of a run, rebuilt from the record the run dir keeps.

Most records describe a built-in family and build from the record alone (`build_model`). A
"derived" record (edgekd/models/derived.py) is a recipe applied to the teacher module: blocks
replaced by identities, channels thinned; it builds from the same teacher, deterministically, so a
resumed run that reloads the teacher file rebuilds the same student. Every stage that turns a
record back into a module goes through `build_student`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.models.arch import build_model
from edgekd.models.derived import DERIVED_FAMILY, build_derived

if TYPE_CHECKING:
    from edgekd.run import RunContext


def is_derived(record: dict[str, Any]) -> bool:
    """Whether `record` is cut from a teacher module (and needs that module to build)."""
    return record.get("family") == DERIVED_FAMILY


def build_student(
    record: dict[str, Any] | str,
    in_channels: int,
    num_classes: int,
    teacher: nn.Module | None = None,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """The module `record` describes. A "derived" record is cut from `teacher` (traced on
    `example_input`, one sample is enough) and starts with the teacher's kept weights; any other
    record gets its builder's fresh initialisation."""
    if isinstance(record, dict) and is_derived(record):
        if teacher is None or example_input is None:
            raise UserError(
                f"the student {record.get('name', 'derived')} is cut from the teacher module, so it needs "
                "that teacher (and an example input) to be rebuilt; run with the same --teacher file"
            )
        return build_derived(record, teacher, example_input)
    return build_model(record, in_channels, num_classes)


def reinitialise_(model: nn.Module) -> nn.Module:
    """Every layer's own fresh initialisation (`reset_parameters`), in place: a derived student
    built with the teacher's weights, as a random start or for proxies that score one."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def example_input(ctx: RunContext) -> torch.Tensor:
    """The sample a derived student is traced on when cut from the run's teacher: the same in
    every stage, although only its shape matters to the cut."""
    return ctx.example


def student_from_record(ctx: RunContext, record: dict[str, Any]) -> nn.Module:
    """The module of a run's student record (search's chosen_arch, a front entry), cut from the
    run's teacher when the record is "derived"."""
    return build_student(record, ctx.data.input_shape[0], ctx.data.num_classes, ctx.teacher.model,
                         example_input(ctx))
