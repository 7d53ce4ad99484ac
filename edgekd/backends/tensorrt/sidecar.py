"""An engine's metadata: a plan file has no metadata field, so edgekd keeps it in a JSON file
beside the engine (`<name>.engine.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from edgekd.backends import require_file


def sidecar_path(engine: Path) -> Path:
    return Path(f"{engine}.json")


def write_metadata(engine: Path, record: dict) -> None:
    sidecar_path(engine).write_text(json.dumps(record, indent=2, sort_keys=True))


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata recorded beside the engine at export ({} if there is none)."""
    sidecar = sidecar_path(require_file(Path(path)))
    if not sidecar.is_file():
        return {}
    return {key: str(value) for key, value in json.loads(sidecar.read_text()).items()}
