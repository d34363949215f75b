"""A Llama-architecture decoder-only language model (RMSNorm, RoPE, grouped-query attention, SwiGLU).

The module layout is chosen so that every parameter maps one-to-one to a GGUF tensor name of llama.cpp's
``llama`` architecture (``tok_embeddings`` -> ``token_embd``, ``layers.{i}.attention.wq`` ->
``blk.{i}.attn_q``, ``layers.{i}.feed_forward.w_gate`` -> ``blk.{i}.ffn_gate``, ``norm`` -> ``output_norm``,
...), and so that the graph exports to ONNX (both torch exporters) and OpenVINO with a dynamic batch and
sequence length: real-valued ops only, no KV cache, the causal mask built from the runtime length.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgepipe.errors import InputError

if TYPE_CHECKING:
    from edgepipe.models.llama_net import LlamaLM

# The task kinds this family serves.
TASKS = ("language-modeling",)
# Small enough for a test to build, train briefly and export in seconds.
EXAMPLE_PARAMS: dict[str, Any] = {"dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "max_length": 64}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(128, ge=16)
    layers: int = Field(2, ge=1, le=64)
    heads: int = Field(4, ge=1)
    # Grouped-query attention: query heads share key/value heads in groups; None = one per query head.
    kv_heads: int | None = Field(None, ge=1)
    # SwiGLU width; None = Llama's rule (2/3 of 4*dim, rounded up to a multiple of 32).
    hidden_dim: int | None = Field(None, ge=1)
    norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    tie_embeddings: bool = True
    max_length: int = Field(256, ge=8)  # the context length: RoPE tables are precomputed for it

    @model_validator(mode="after")
    def _check_shapes(self) -> Params:
        """Cross-field rules, checked here so a bad config fails at validation, not deep in a matmul."""
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim = dim / heads ({self.head_dim}) must be even: RoPE rotates pairs")
        if self.heads % self.n_kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.n_kv_heads})")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def ffn_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        return 32 * math.ceil(8 * self.dim / 3 / 32)


def build(params: Params, io: Any) -> LlamaLM:
    """A decoder for the task's vocabulary (``io.vocab_size``); its context length is ``params.max_length``
    (the network module, ``llama_net``, is torch code: imported only here)."""
    if io.vocab_size is None:
        raise InputError("source.family: 'llama' is a language model: it needs a language-modeling task")
    from edgepipe.models.llama_net import LlamaLM

    return LlamaLM(params, int(io.vocab_size))
