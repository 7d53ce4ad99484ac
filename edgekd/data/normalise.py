"""The teacher's input normalisation, applied by the data pipeline so that every model (teacher,
students, calibration, the deployed artifact) sees exactly what the teacher was trained on:
channel order, then (x * scale - mean) / std per channel, on images decoded to [0, 1].

The exported artifacts take these normalised inputs; their metadata records the formula
(`describe`), so an application can apply it before inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgekd.config import DataConfig
from edgekd.errors import UserError


@dataclass(frozen=True)
class Normalisation:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0  # 255: the teacher took 0..255 pixel values
    bgr: bool = False  # the teacher took channels in BGR order

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) or (C, H, W) in [0, 1] -> the teacher's inputs."""
        channel_dim = x.ndim - 3
        if self.bgr:
            x = x.flip(channel_dim)
        shape = [1] * x.ndim
        shape[channel_dim] = -1
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * self.scale - mean) / std

    def describe(self) -> str:
        order = "BGR" if self.bgr else "RGB"
        scale = "x * 255" if self.scale == 255 else "x"
        return (f"float32 NCHW, {order} channels, ({scale} - mean) / std with mean {list(self.mean)} and std "
                f"{list(self.std)}, x in [0, 1]")


NO_NORMALISATION_TEXT = "float32 NCHW in [0, 1], no normalisation"


def normalisation_for(settings: DataConfig, channels: int) -> Normalisation | None:
    """The recipe's normalisation for images of `channels` channels (a one-value mean/std applies
    to every channel); None when the recipe gives none and the scale and order are the defaults."""
    values = settings.normalisation()
    if values is None:
        if settings.input_scale == 1.0 and settings.channel_order == "rgb":
            return None
        values = ([0.0], [1.0])
    mean, std = values
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    if len(mean) != channels:
        raise UserError(f"data.mean/data.std give {len(mean)} values, but the images have {channels} channel(s); "
                        f"give {channels} (or one for all), or convert the images with --channels {len(mean)}")
    if settings.channel_order == "bgr" and channels != 3:
        raise UserError("data.channel_order 'bgr' needs 3-channel images")
    return Normalisation(tuple(mean), tuple(std), settings.input_scale, settings.channel_order == "bgr")
