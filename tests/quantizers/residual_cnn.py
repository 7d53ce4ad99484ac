"""A tiny real CNN with a residual add (1x8x8 input, 10 classes), trained for a moment on
scikit-learn's real handwritten digits so that its logits mean something when quantized."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn


class ResidualCNN(nn.Module):
    def __init__(self, channels: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn(self.conv(x)) + x)  # the residual add: TensorRT fuses it into conv
        return self.fc(x.mean(dim=(2, 3)))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float32 [N, 1, 8, 8] in [0, 1], and their labels."""
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(bunch.target, dtype=torch.long)


def train_steps_(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float,
                 seed: int = 0) -> float:
    """Plain cross-entropy SGD steps on random batches of 64, in place; returns the last loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,), generator=generator)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def trained_model(x: torch.Tensor, y: torch.Tensor) -> ResidualCNN:
    torch.manual_seed(0)
    model = ResidualCNN()
    train_steps_(model, x, y, steps=150, lr=2e-2)
    return model
