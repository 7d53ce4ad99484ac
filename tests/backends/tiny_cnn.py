"""The tiny real CNN the backend tests convert, run and time (1x8x8 input, 10 classes)."""

from __future__ import annotations

import torch


class TinyCNN(torch.nn.Module):
    # A subclass, not a bare nn.Sequential: NNCF's tracing breaks on a top-level Sequential.
    def __init__(self, channels: tuple[int, int] = (4, 8)):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, channels[0], 3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.fc = torch.nn.Linear(channels[1], 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))
