"""Teacher architectures by name from timm or torchvision (`--teacher-arch timm:resnet50`,
`torchvision:mobilenet_v3_large`), built with the data's class count and loaded from the user's
state dict. Both packages are an optional extra: torchvision from the package index needs its
matching (CUDA) torch build, so neither is ever required by edgekd itself."""

from __future__ import annotations

from torch import nn

from edgekd.errors import MissingDependencyError, UserError
from edgekd.io import first_line

PREFIXES = ("timm:", "torchvision:")


def is_hub_name(arch: str | None) -> bool:
    return isinstance(arch, str) and arch.startswith(PREFIXES)


def build_hub_model(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    library, _, name = arch.partition(":")
    if library == "timm":
        try:
            import timm
        except Exception as exc:  # noqa: BLE001 - timm fails on import when torchvision does
            raise MissingDependencyError("timm", "timm") from exc
        if name not in timm.list_models(name):
            raise UserError(f"timm has no model {name!r} (timm.list_models('*{name[:4]}*') lists close ones)")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    try:
        import torchvision
    except Exception as exc:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist" on a CPU torch
        raise MissingDependencyError("torchvision", "torchvision") from exc
    if in_channels != 3:
        raise UserError(f"torchvision models take 3 input channels; the data has {in_channels}: add --channels 3")
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as exc:
        raise UserError(f"torchvision has no model {name!r}: {first_line(exc)}") from exc
