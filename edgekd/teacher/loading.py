"""Loading a user's teacher checkpoint safely.

- a torch.export ExportedProgram (.pt2): loaded without running code; its input shape and an
  optional edgekd.json (class order, normalisation) come from the file (edgekd/teacher/exported.py);
- TorchScript: loaded as TorchScript;
- a state dict, loaded with `weights_only=True` (no code runs), of a built-in architecture or a
  timm / torchvision one named with --teacher-arch timm:NAME (edgekd/teacher/hub.py);
- a fully pickled model runs code when loaded, so it needs an explicit opt-in (--trust-pickle).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import UserError
from edgekd.io import (
    PickledObjectError,
    first_line,
    load_weights_only,
    unwrap_state_dict,
)
from edgekd.models.arch import build_model, resolve_arch
from edgekd.teacher.exported import is_exported_program, load_exported
from edgekd.teacher.hub import build_hub_model, is_hub_name

log = logging.getLogger(__name__)


def load_teacher(
    path: str | Path,
    arch: str | dict[str, Any] | None,
    in_channels: int,
    num_classes: int,
    *,
    trust_pickle: bool = False,
) -> tuple[nn.Module, str]:
    """Returns (model in eval mode, kind) where kind is "exported program", "state_dict",
    "torchscript" or "pickle"."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher checkpoint '{path}' does not exist")
    if is_exported_program(path):
        return load_exported(path)[0].eval(), "exported program"
    if _is_torchscript(path):
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
            raise UserError(f"teacher '{path}' looks like TorchScript but does not load: {first_line(exc)}") from exc
        return model.eval(), "torchscript"
    try:
        obj = load_weights_only(path, what="teacher checkpoint")
    except PickledObjectError as exc:
        if not trust_pickle:
            raise UserError(
                f"teacher '{path}' is a pickled Python object, and loading it runs code from the "
                "file; pass --trust-pickle if you trust its source, or save a state dict "
                "(torch.save(model.state_dict(), path)) or TorchScript instead"
            ) from exc
        obj = _load_pickle(path)
    if isinstance(obj, nn.Module):
        log.warning("loaded a pickled model from %s (--trust-pickle)", path)
        return obj.eval(), "pickle"
    state_dict = unwrap_state_dict(obj, path, what="teacher checkpoint")
    if arch is None:
        raise UserError(
            f"teacher '{path}' is a state dict; name its architecture with --teacher-arch "
            "(see `edgekd compress --help` for the built-in ones)"
        )
    if is_hub_name(arch):
        model, name = build_hub_model(arch, in_channels, num_classes), arch
    else:
        record = resolve_arch(arch)
        model, name = build_model(record, in_channels, num_classes), record.get("name", record)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"teacher '{path}' does not fit architecture {name!r} with {in_channels} input "
            f"channel(s) and {num_classes} classes: {_summarise_mismatch(exc)}"
        ) from exc
    return model.eval(), "state_dict"


def teacher_file_facts(path: str | Path) -> tuple[dict[str, Any], tuple[int | None, ...] | None]:
    """What a teacher file says about the teacher before the data is read: (metadata, input
    shape [C, H, W] with None where dynamic); ({}, None) for formats that record neither."""
    path = Path(path)
    if path.is_file() and is_exported_program(path):
        _, metadata, shape = load_exported(path)
        return metadata, shape
    return {}, None


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives hold the model's code under <archive>/code/; state dicts do not.
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _load_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"teacher '{path}' does not load as a pickled model: {first_line(exc)}") from exc


def _summarise_mismatch(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[1:3]) if len(lines) > 1 else lines[0]
