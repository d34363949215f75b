"""A small VGG-style CNN for image classification (digits by default).

Size it so that compression shows: the quickstart's [64, 128, 256] has ~1.1M parameters and ~150M
MACs at 32x32. A much smaller net is dominated by runtime overhead and per-file metadata, and INT8 or
pruning then show little.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgepipe.errors import InputError


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[int] = Field(default=[64, 128], min_length=1)
    convs_per_block: int = Field(2, ge=1, le=4)
    dropout: float = Field(0.0, ge=0, lt=1)


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


def build(params: Params, io: Any) -> CNN:
    """A CNN for the task's first input, (N, C, H, W), and its number of classes."""
    if io.num_classes is None:
        raise InputError("model family 'cnn' classifies: it needs a classification task")
    return CNN(int(io.inputs[0].shape[-3]), io.num_classes, params)


EXAMPLE_PARAMS = {"channels": [8, 16], "convs_per_block": 1}
