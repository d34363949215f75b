"""What one model file runs as, operator by operator, on one runtime: the JSON contract the runtimes'
readers (``benchmarks.ops_<runtime>``) fill and ``edgepipe explain`` (``benchmarks.explain``) reads.

Each reader asks the runtime itself: onnxruntime's optimized graph and its profiler, OpenVINO's runtime
model and its performance counters, the LiteRT interpreter's delegate nodes, llama.cpp's tensor types.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# What an operator computes in. "convert": quantize/dequantize and reorders between precisions;
# "other": shape arithmetic and integer bookkeeping (Shape, Gather of int64 ids, ...).
PRECISIONS = ("int8", "int4", "bf16", "fp16", "fp32", "convert", "other")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpGroup(_Strict):
    """The operators of one type that run at one precision on this runtime."""

    op_type: str  # the runtime's own name: "QLinearConv", "ConvInteger", "Convolution", "FULLY_CONNECTED"
    precision: str  # one of PRECISIONS, or a GGUF type name ("q4_k", "q8_0") for llama.cpp tensors
    count: int
    ms: float | None = None  # time per inference summed over these operators (None: no per-operator clock)
    share: float | None = None  # of the summed operator time
    kernels: list[str] = []  # implementations the runtime chose: "brgconv_avx512_amx_I8", "CPUExecutionProvider"
    nodes: list[str] = Field([], description="up to 8 node names")


class Placement(_Strict):
    """A float operator between quantized ones, a Q/DQ pair left unfused, an operator off the delegate."""

    node: str
    op_type: str
    precision: str
    ms: float | None = None
    before: list[str] = []  # producers' op types
    after: list[str] = []  # consumers' op types


class OpReport(_Strict):
    """One model file on one runtime, as that runtime runs it."""

    path: str
    format: str
    runtime: str
    threads: int | None
    clock: str | None  # where the per-operator times come from ("onnxruntime profiler", ...); None: none
    calls: int  # profiled inferences the times are averaged over
    ops_ms: float | None  # the operators' summed time per inference
    groups: list[OpGroup]  # most time first (most operators first without a clock)
    by_precision: dict[str, float]  # share of operator time per precision (of operator count without a clock)
    float_between_quantized: list[Placement] = []  # float compute fed by a dequantize and feeding a quantize
    unfused_qdq: list[Placement] = []  # quantize/dequantize nodes the runtime still executes
    not_delegated: list[Placement] = []  # operators the runtime's accelerator delegate did not take
    details: dict[str, Any] = {}  # the runtime's own: optimized-graph operator counts, delegate partitions, ...
