"""The network of the ``llama`` family (see ``edgepipe.models.llama`` for its parameters): RMSNorm, RoPE
on adjacent pairs, grouped-query attention, SwiGLU, written with real-valued ops only so that it exports
to ONNX (both torch exporters) and OpenVINO with a dynamic batch and sequence length.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.models.llama import Params


class RMSNorm(nn.Module):
    """Written out rather than ``nn.RMSNorm``: the plain ops export to every opset and to OpenVINO."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, max_length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (max_length, head_dim // 2): angle of position p for pair i is p * theta^(-2i/d)."""
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ADJACENT pairs (x[2i], x[2i+1]) of the last axis, as Meta's original LLaMA code does.

    This is the convention llama.cpp's ``llama`` architecture uses natively (rope type NORM), so a GGUF
    export writes wq/wk as they are, with no Q/K row permutation (that permutation exists only to convert
    Hugging Face checkpoints, which rotate the two HALVES of the head instead). Real-valued ops only:
    complex tensors do not export to ONNX or TFLite. x: (batch, heads, seq, head_dim); cos/sin: (seq, head_dim/2).
    """
    pairs = x.unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, p: Params):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = p.heads, p.n_kv_heads, p.head_dim
        self.wq = nn.Linear(p.dim, p.heads * p.head_dim, bias=False)
        self.wk = nn.Linear(p.dim, p.n_kv_heads * p.head_dim, bias=False)
        self.wv = nn.Linear(p.dim, p.n_kv_heads * p.head_dim, bias=False)
        self.wo = nn.Linear(p.heads * p.head_dim, p.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.wq(x).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)
        k = self.wk(x).unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.wv(x).unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.heads != self.kv_heads:
            # Query head h reads key/value head h // group, the mapping of llama.cpp and Hugging Face.
            # Expand + reshape rather than repeat_interleave: it exports without Tile/Mod subgraphs.
            b, _, s, d = k.shape
            group = self.heads // self.kv_heads
            k = k[:, :, None].expand(b, self.kv_heads, group, s, d).reshape(b, self.heads, s, d)
            v = v[:, :, None].expand(b, self.kv_heads, group, s, d).reshape(b, self.heads, s, d)
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(self.head_dim)) + mask
        out = torch.softmax(scores, dim=-1) @ v
        return self.wo(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """SwiGLU: w_down(silu(w_gate x) * w_up x)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden_dim, bias=False)
        self.w_up = nn.Linear(dim, hidden_dim, bias=False)
        self.w_down = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, p: Params):
        super().__init__()
        self.attention_norm = RMSNorm(p.dim, p.norm_eps)
        self.attention = Attention(p)
        self.ffn_norm = RMSNorm(p.dim, p.norm_eps)
        self.feed_forward = FeedForward(p.dim, p.ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class LlamaLM(nn.Module):
    """input_ids (batch, seq) int64 -> logits (batch, seq, vocab) float32, causal over the whole sequence.

    With ``tie_embeddings`` there is no ``output`` module: the logits reuse ``tok_embeddings.weight``
    through ``F.linear``. A second module holding the same Parameter would put one tensor under two
    names in the state dict, which safetensors refuses to save; this way the state dict has each tensor
    once and GGUF's convention (no ``output.weight`` means tied) falls out naturally.
    """

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, params: Params, vocab_size: int):
        super().__init__()
        self.params, self.vocab_size, self.max_length = params, vocab_size, params.max_length
        self.tok_embeddings = nn.Embedding(vocab_size, params.dim)
        self.layers = nn.ModuleList(Block(params) for _ in range(params.layers))
        self.norm = RMSNorm(params.dim, params.norm_eps)
        self.output = None if params.tie_embeddings else nn.Linear(params.dim, vocab_size, bias=False)
        cos, sin = rope_tables(params.head_dim, params.max_length, params.rope_theta)
        # Not persistent: derived from params, so they stay out of checkpoints (and out of GGUF).
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) for every linear and embedding weight, ones for the norms (GPT-2/Llama practice):
        deterministic under ``torch.manual_seed`` and small enough that training starts near uniform logits."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def pruning_hints(self) -> dict[str, Any]:
        """What structured pruning may remove: the SwiGLU width (gate and up rows, down columns). The
        attention projections stay whole (grouped-query heads and RoPE's pairs within each head), and so
        do the layers writing the residual stream and the output."""
        blocks: list[Block] = list(self.layers)  # type: ignore[arg-type]
        keep: list[nn.Module] = [self.output] if self.output is not None else []
        for b in blocks:
            a = b.attention
            keep += [a.wq, a.wk, a.wv, a.wo, b.feed_forward.w_down]
        return {"ignored_layers": keep}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing() and seq > self.max_length:
            raise ValueError(f"sequence length {seq} exceeds the model's max_length {self.max_length}")
        cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        # Built from the runtime length so exported graphs keep the sequence axis dynamic.
        pos = torch.arange(seq, device=input_ids.device)
        mask = torch.zeros(seq, seq, device=input_ids.device).masked_fill(pos[None, :] > pos[:, None], float("-inf"))
        h = self.tok_embeddings(input_ids)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        h = self.norm(h)
        return F.linear(h, self.tok_embeddings.weight) if self.output is None else self.output(h)
