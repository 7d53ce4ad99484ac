"""edgekd: distil a big model into a small one that meets a latency budget on an edge device.

The Python API is `edgekd.compress(teacher, data, target=..., budget_ms=..., ...)` (edgekd/api.py);
the command line `edgekd compress` is a thin layer over the same run. `import edgekd` pulls in
nothing heavy; backends (OpenVINO, NNCF, ...) are imported on first use by the stage that needs them.
"""

from edgekd.version import __version__

__all__ = ["CompressResult", "UserError", "__version__", "compress"]


def __getattr__(name: str):
    """`edgekd.compress` and friends import torch-heavy modules on first use, so that
    `import edgekd` (and `edgekd --help`) stay fast."""
    if name in ("compress", "CompressResult"):
        from edgekd import api

        return getattr(api, name)
    if name == "UserError":
        from edgekd.errors import UserError

        return UserError
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
