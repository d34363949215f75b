"""A small VGG-style CNN for image classification (digits by default).

Size it so that compression shows: the quickstart's [64, 128, 256] has ~1.1M parameters and ~150M
MACs at 32x32. A much smaller net is dominated by runtime overhead and per-file metadata, and INT8 or
pruning then show little.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from edgepipe.errors import InputError

if TYPE_CHECKING:
    from edgepipe.models.cnn_net import CNN

# The task kinds this family serves.
TASKS = ("classification",)
# Small enough for a test to build and run in a blink.
EXAMPLE_PARAMS: dict[str, Any] = {"channels": [8, 16], "convs_per_block": 1}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[int] = Field(default=[64, 128], min_length=1)
    convs_per_block: int = Field(2, ge=1, le=4)
    dropout: float = Field(0.0, ge=0, lt=1)


def build(params: Params, io: Any) -> CNN:
    """A CNN for the task's first input, (N, C, H, W), and its number of classes (the network module,
    ``cnn_net``, is torch code: imported only here)."""
    if io.num_classes is None:
        raise InputError("source.family: 'cnn' classifies: it needs a classification task")
    from edgepipe.models.cnn_net import CNN

    return CNN(int(io.inputs[0].shape[-3]), io.num_classes, params)
