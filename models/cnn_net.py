"""The network of the ``cnn`` family (see ``edgepipe.models.cnn`` for its parameters)."""

from __future__ import annotations

import torch
from torch import nn

from edgepipe.models.cnn import Params


class CNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, params: Params):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in params.channels:
            for _ in range(params.convs_per_block):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(params.dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(input)).flatten(1)
        return self.fc(self.dropout(x))
