"""Built-in model families and teacher loading."""

from edgekd.models.arch import (
    PRESETS,
    arch_name,
    build_model,
    resolve_arch,
    scale_width,
)
from edgekd.models.profile import count_macs, count_params

__all__ = [
    "PRESETS",
    "arch_name",
    "build_model",
    "count_macs",
    "count_params",
    "resolve_arch",
    "scale_width",
]
