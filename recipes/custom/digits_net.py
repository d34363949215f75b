"""A user's own torch module, not from edgepipe's zoo: recipes/custom-module.yaml loads it from this file.

Any ``torch.nn.Module`` works whose forward takes the task's inputs in order (here one image batch,
N x 1 x H x W) and returns the task's outputs (here logits, N x 10).
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsNet(nn.Module):
    """Two depthwise-separable convolution blocks and a linear classifier."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()

        def separable(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(separable(width, 2 * width), separable(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(image))
        return self.head(x.mean(dim=(2, 3)))
