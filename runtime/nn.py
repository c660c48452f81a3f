"""torch modules of the architectures (imported only where torch is installed)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class SeedCNN(nn.Module):
    """The seed's CNN, made correct: logits out, 320 features into fc1, ReLU after pooling."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)  # type: ignore[no-any-return]


class MLP(nn.Module):
    """Linear layers with ReLU between them; parameters `layers.{2i}.weight|bias`."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            blocks += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.layers = nn.Sequential(*blocks[:-1])  # no ReLU after the logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]
