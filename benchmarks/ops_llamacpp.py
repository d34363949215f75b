"""llama.cpp, tensor by tensor: which weights of a GGUF model are stored (and so multiplied) in which ggml
type, for ``edgepipe explain``.

llama-cpp-python has no per-operator clock, so the report has no times: ggml computes each matrix product
in the type of its weight tensor (dequantizing blocks on the fly, or with its quantized dot products), and
the types of the weights say where INT4/INT8/float arithmetic happens. The tensors are read with gguf-py
(``export.gguf_inspect``: no model is loaded); llama.cpp itself is asked only which CPU features ggml was
built with and uses (AVX2, AVX512, AMX, ...).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.benchmarks.op_report import OpGroup, OpReport
from edgepipe.export.gguf_inspect import read, summarize

# "blk.12.attn_q.weight" -> "attn_q"; "token_embd.weight" -> "token_embd"; "blk.0.attn_q.bias" -> "attn_q.bias"
_BLOCK = re.compile(r"^blk\.\d+\.")


def read_ops(
    path: Path,
    feeds: dict[str, np.ndarray] | None = None,
    threads: int | None = 2,
    calls: int = 0,
    options: dict[str, Any] | None = None,
) -> OpReport:
    """The tensors of a GGUF file grouped by role (``attn_q``, ``ffn_down``, ``token_embd``, ...) and ggml
    type, most tensors first. ``by_precision`` is the share of the **weight bytes** per ggml type (there is
    no operator time to share). ``feeds``, ``calls`` and ``options`` are the other readers' arguments and
    unused here: nothing runs. InputError for a file that is not a sound GGUF model."""
    path = Path(path)
    summary = summarize(path)  # checks the header and every tensor's extent first
    tensors = read(path).tensors
    return OpReport(
        path=str(path),
        format="gguf",
        runtime="llama.cpp",
        threads=threads,
        clock=None,
        calls=0,
        ops_ms=None,
        groups=_groups(tensors),
        by_precision=_by_bytes(summary["tensor_type_bytes"]),
        details={
            "system_info": system_info(),
            "bits_per_weight": summary["bits_per_weight"],
            "tensor_types": {k.lower(): v for k, v in summary["tensor_types"].items()},
        },
    )


def role(name: str) -> str:
    """What a tensor is in the model, from its GGUF name: the block number and ".weight" dropped."""
    name = _BLOCK.sub("", name)
    return name.removesuffix(".weight")


def _groups(tensors: Any) -> list[OpGroup]:
    """One group per (role, ggml type): its tensors (up to 8 names), most tensors first, then most bytes."""
    by: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for tensor in tensors:
        by[(role(tensor.name), tensor.tensor_type.name.lower())].append(tensor)
    weight = {key: sum(int(t.n_bytes) for t in members) for key, members in by.items()}
    ordered = sorted(by, key=lambda key: (-len(by[key]), -weight[key], key))
    return [
        OpGroup(op_type=r, precision=kind, count=len(by[(r, kind)]), nodes=[t.name for t in by[(r, kind)][:8]])
        for r, kind in ordered
    ]


def _by_bytes(type_bytes: dict[str, int]) -> dict[str, float]:
    """Share of the weight bytes per ggml type, lowercased ("q4_k", "q8_0", "f32"), largest first."""
    total = sum(type_bytes.values())
    if not total:
        return {}
    return {k.lower(): round(v / total, 4) for k, v in sorted(type_bytes.items(), key=lambda kv: -kv[1])}


def system_info() -> str | None:
    """ggml's build and CPU features as llama.cpp prints them ("CPU : SSE3 = 1 | AVX2 = 1 | ..."); None
    when llama_cpp cannot be imported."""
    try:
        import llama_cpp
    except Exception:  # not installed, or its shared library does not load on this machine
        return None
    info = llama_cpp.llama_print_system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return text.strip().rstrip("|").strip()
