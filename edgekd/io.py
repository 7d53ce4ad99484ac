"""File helpers every layer uses: atomic writes, JSON, fingerprints, the cache folder, and the
one line of an exception worth showing a user.

A leaf module: it imports nothing from edgekd but `errors`, so any module may import it without
creating an import cycle.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from edgekd.errors import UserError

# Checkpoints often wrap the state dict under one of these keys.
STATE_DICT_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a unique temporary file in the same folder, then rename over `path`: a
    reader sees the old file or the new one, never half of one, and two writers never collide."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    """JSON (indented, unknown types as str), written atomically: a kill never leaves half a file."""
    write_text(path, json.dumps(data, indent=2, default=str))


def save_torch(obj: Any, path: Path) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def fingerprint_file(path: str | Path) -> str:
    """sha256 of a file (a teacher checkpoint), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_model(model: nn.Module) -> str:
    """sha256 of a module's state_dict: every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_raw_bytes(tensor))
    return digest.hexdigest()


def fingerprint_tensor(x: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    x = x.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{x.dtype}|{tuple(x.shape)}|".encode())
    digest.update(_raw_bytes(x))
    return digest.hexdigest()


def _raw_bytes(x: torch.Tensor) -> bytes:
    # Through uint8 so every dtype (bfloat16 too, which numpy lacks) hashes the same way.
    return x.reshape(-1).view(torch.uint8).numpy().tobytes()


def cache_dir() -> Path:
    """`$EDGEKD_CACHE_DIR`, else `$XDG_CACHE_HOME/edgekd`, else `~/.cache/edgekd`."""
    if os.environ.get("EDGEKD_CACHE_DIR"):
        return Path(os.environ["EDGEKD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgekd"


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's text (or its type's name when it has none)."""
    text = str(exc)
    return next((line.strip() for line in text.splitlines() if line.strip()),
                type(exc).__name__ if isinstance(exc, BaseException) else "")


class PickledObjectError(UserError):
    """The file is a pickle of Python objects: loading it would run code from the file."""


def load_weights_only(path: Path, *, what: str) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers, no code runs.

    A missing or damaged file is a UserError naming `what` (e.g. "teacher checkpoint"); a valid
    pickle of other objects (a whole nn.Module) is a PickledObjectError, which a caller that
    allows pickles (--trust-pickle) catches."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # A valid pickle of objects other than tensors fails on an "Unsupported global"; any
        # other unpickling error (e.g. "Unsupported operand") means a damaged file.
        if "Unsupported global" in str(exc):
            raise PickledObjectError(
                f"{what} '{path}' is a pickled Python object, not a plain state dict (loading it would run code "
                f"from the file): {_load_cause(exc)}"
            ) from exc
        raise UserError(f"{what} '{path}' is corrupt or not a PyTorch file: {_load_cause(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - truncated zip, random bytes, ...
        raise UserError(f"{what} '{path}' is corrupt or not a PyTorch file: {_load_cause(exc)}") from exc


def unwrap_state_dict(obj: Any, path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint, also under a usual wrapper key ("state_dict", ...)."""
    if isinstance(obj, dict):
        for key in STATE_DICT_WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise UserError(f"{what} '{path}' holds no state dict (found {type(obj).__name__})")


def _load_cause(exc: BaseException) -> str:
    # torch.load's weights-only errors wrap the cause ("Unsupported operand 110", "Unsupported
    # global: ...") in paragraphs of advice; keep the cause.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line[line.index("Unsupported") :] for line in lines if "Unsupported" in line]
    return causes[0] if causes else (lines[0] if lines else type(exc).__name__)
