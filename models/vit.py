"""A small Vision Transformer (ViT) for image classification (digits by default).

Non-overlapping patches embedded by one strided convolution, a learned class token and position
embedding, ``depth`` pre-LayerNorm encoder blocks and a linear head on the class token. Attention is
written out as plain MatMul / Softmax (no fused attention op), so every exporter (torch.onnx dynamo,
openvino.convert_model, litert-torch) and every INT8 quantizer sees ordinary ops. At 32x32 with
``patch_size`` 4 the sequence is 64 patches plus the class token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgepipe.errors import InputError

if TYPE_CHECKING:
    from edgepipe.models.vit_net import ViT

# The task kinds this family serves.
TASKS = ("classification",)
# Small enough for a test to build and run in a blink (16x16 images: 16 patches plus the class token).
EXAMPLE_PARAMS: dict[str, Any] = {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(4, ge=1)
    dim: int = Field(64, ge=4)
    depth: int = Field(4, ge=1, le=32)
    heads: int = Field(4, ge=1)
    mlp_ratio: int = Field(2, ge=1, le=16)  # the MLP's hidden width is mlp_ratio * dim
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_heads(self) -> Params:
        """Checked here so a bad config fails at validation, not deep in a reshape."""
        if self.dim % self.heads:
            raise ValueError(f"dim: {self.dim} is not divisible by heads ({self.heads}): each head takes dim / heads")
        return self


def build(params: Params, io: Any) -> ViT:
    """A ViT for the task's first input, (N, C, H, W), and its number of classes (the network module,
    ``vit_net``, is torch code: imported only here)."""
    if io.num_classes is None:
        raise InputError("source.family: 'vit' classifies: it needs a classification task")
    shape = io.inputs[0].shape
    height, width = (int(d) for d in shape[-2:])
    if height % params.patch_size or width % params.patch_size:
        raise InputError(
            f"source.params.patch_size: {params.patch_size} does not divide the image size {height}x{width}"
        )
    from edgepipe.models.vit_net import ViT

    return ViT(int(shape[-3]), (height, width), io.num_classes, params)
