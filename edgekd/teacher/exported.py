"""Teachers saved with `torch.export.save` (.pt2): an ExportedProgram, loaded without running code
from the file (a JSON graph and raw weights), whose input shape is recorded in the file.

An optional `edgekd.json` extra file (`torch.export.save(ep, path, extra_files={"edgekd.json": ...})`)
may record what the teacher expects: {"classes": [...], "mean": [...], "std": [...]}.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.io import first_line

log = logging.getLogger(__name__)

METADATA_FILE = "edgekd.json"


def is_exported_program(path: Path) -> bool:
    """A .pt2 archive (its zip holds an `archive_format` record and the serialized model)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return any(name.endswith("archive_format") for name in names) or path.suffix == ".pt2"


def load_exported(path: Path) -> tuple[nn.Module, dict[str, Any], tuple[int | None, ...] | None]:
    """(module, the file's edgekd.json metadata or {}, its input shape [C, H, W] with None for a
    dynamic dimension). A program exported for a fixed batch size runs one image at a time."""
    extra = {METADATA_FILE: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign archive fails in many ways
        raise UserError(f"teacher '{path}' looks like a torch.export .pt2 archive but does not load: "
                        f"{first_line(exc)}") from exc
    metadata = _metadata(extra[METADATA_FILE], path)
    shape = input_shape(program)
    batch = shape[0] if shape is not None and isinstance(shape[0], int) else None
    if batch is not None:
        log.warning("teacher %s was exported for batches of exactly %d; edgekd runs it in chunks of that size "
                    "(slow): export it with a dynamic batch, dynamic_shapes={'x': {0: torch.export.Dim('batch')}}",
                    path, batch)
    return ExportedTeacher(program.module(), batch), metadata, None if shape is None else tuple(shape[1:])


def input_shape(program) -> list[int | None] | None:
    """The first user input's shape, a symbolic (dynamic) dimension as None."""
    names = list(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and names and node.name == names[0]:
            value = node.meta.get("val")
            if value is None:
                return None
            return [dim if isinstance(dim, int) else None for dim in value.shape]
    return None


class ExportedTeacher(nn.Module):
    """An exported program as a teacher module. Its graph is fixed in inference mode (an exported
    module refuses train()/eval()), so switching this wrapper's mode leaves the program alone; a
    program exported for one batch size runs any batch in chunks of that size (the last padded)."""

    def __init__(self, program: nn.Module, batch: int | None = None):
        super().__init__()
        self.program, self.batch = program, batch

    def train(self, mode: bool = True) -> ExportedTeacher:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            return self.program(x)
        outputs = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            padded = torch.cat([chunk, chunk[-1:].expand(self.batch - len(chunk), *chunk.shape[1:])])
            outputs.append(self.program(padded)[: len(chunk)])
        return torch.cat(outputs)


def _metadata(text: str, path: Path) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"teacher '{path}': its {METADATA_FILE} is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"teacher '{path}': its {METADATA_FILE} must hold a JSON object")
    return data
