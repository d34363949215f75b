"""The network of the ``vit`` family (see ``edgepipe.models.vit`` for its parameters).

Attention is spelled out (a Linear each for q, k and v, MatMul, Softmax, MatMul, an output Linear) rather
than nn.MultiheadAttention or scaled_dot_product_attention, so exporters and quantizers see plain ops and
torch-pruning's dependency graph can remove whole heads: the number of heads is read from the q
projection's width, so a model with pruned heads rebuilds from its saved tensors. Shapes are static per
image size except the batch, which reshapes leave as -1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgepipe.models.vit import Params


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, tokens: int, dropout: float):
        super().__init__()
        self.head_dim, self.tokens = dim // heads, tokens
        self.scale = self.head_dim**-0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def heads(self) -> int:
        return self.q.out_features // self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, d = self.tokens, self.heads, self.head_dim
        q, k, v = (p(x).reshape(-1, t, h, d).transpose(1, 2) for p in (self.q, self.k, self.v))  # (N, h, t, d)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        out = (self.dropout(attn) @ v).transpose(1, 2).reshape(-1, t, h * d)
        return self.proj(out)


class Block(nn.Module):
    """A pre-LayerNorm encoder block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, tokens: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, tokens, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int, params: Params):
        super().__init__()
        p, dim = params.patch_size, params.dim
        self.num_patches = (image_size[0] // p) * (image_size[1] // p)
        self.tokens = self.num_patches + 1  # the class token first
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.tokens, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.dropout = nn.Dropout(params.dropout)
        hidden = params.mlp_ratio * dim
        self.blocks = nn.Sequential(
            *(Block(dim, params.heads, hidden, self.tokens, params.dropout) for _ in range(params.depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def pruning_hints(self) -> dict[str, Any]:
        """What structured pruning may remove: whole attention heads and FFN width. The residual stream's
        width stays (the layers writing into it are kept whole), and so does the classifier."""
        blocks: list[Block] = list(self.blocks)  # type: ignore[arg-type]
        writers: list[nn.Module] = [self.head, self.patch_embed]
        writers += [m for b in blocks for m in (b.attn.proj, b.mlp[3])]
        heads = {p: b.attn.heads for b in blocks for p in (b.attn.q, b.attn.k, b.attn.v)}
        return {"ignored_layers": writers, "num_heads": heads}

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(input).flatten(2).transpose(1, 2)  # (N, patches, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.blocks(self.dropout(x))
        return self.head(self.norm(x[:, 0]))
