"""All model-format constants in one place: names, file suffixes, precisions, default runtimes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepipe.errors import InputError

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class FormatInfo:
    name: str
    suffixes: tuple[str, ...]
    runtimes: tuple[str, ...]  # runtimes able to execute it, preferred first
    description: str


FORMATS: dict[str, FormatInfo] = {
    f.name: f
    for f in (
        FormatInfo("torch", (".safetensors",), ("torch",), "PyTorch weights (safetensors) + a module spec"),
        FormatInfo("onnx", (".onnx",), ("onnxruntime",), "ONNX model"),
        FormatInfo("openvino", (".xml",), ("openvino",), "OpenVINO IR (.xml + .bin)"),
        FormatInfo("tflite", (".tflite",), ("litert",), "TFLite / LiteRT flatbuffer"),
        FormatInfo("gguf", (".gguf",), ("llama.cpp",), "GGUF (llama.cpp)"),
    )
}


def detect_format(path: str | Path) -> str:
    """Name of the format of a model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    for info in FORMATS.values():
        if suffix in info.suffixes:
            return info.name
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise InputError(f"{path}: unknown model format '{suffix}' (known: {known})")


# ONNX tensor element types: TensorProto enum -> (onnxruntime's type string, numpy dtype name).
# bfloat16 has no numpy dtype; it is named as ONNX names it.
ONNX_ELEMENT_TYPES: dict[int, tuple[str, str]] = {
    1: ("tensor(float)", "float32"),
    2: ("tensor(uint8)", "uint8"),
    3: ("tensor(int8)", "int8"),
    4: ("tensor(uint16)", "uint16"),
    5: ("tensor(int16)", "int16"),
    6: ("tensor(int32)", "int32"),
    7: ("tensor(int64)", "int64"),
    9: ("tensor(bool)", "bool"),
    10: ("tensor(float16)", "float16"),
    11: ("tensor(double)", "float64"),
    12: ("tensor(uint32)", "uint32"),
    13: ("tensor(uint64)", "uint64"),
    16: ("tensor(bfloat16)", "bfloat16"),
}
ORT_TYPE_TO_DTYPE = {ort: dtype for ort, dtype in ONNX_ELEMENT_TYPES.values()}


# GGUF: llama.cpp's quantization types a recipe may ask for (llama.h's LLAMA_FTYPE_MOSTLY_<name>).
GGUF_QUANT_TYPES = (
    "F16",
    "BF16",
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "Q2_K",
)
# The llama family's tensors under llama.cpp's names for the "llama" architecture ({i}: block index).
GGUF_LLAMA_TENSORS = {
    "tok_embeddings.weight": "token_embd.weight",
    "layers.{i}.attention_norm.weight": "blk.{i}.attn_norm.weight",
    "layers.{i}.attention.wq.weight": "blk.{i}.attn_q.weight",
    "layers.{i}.attention.wk.weight": "blk.{i}.attn_k.weight",
    "layers.{i}.attention.wv.weight": "blk.{i}.attn_v.weight",
    "layers.{i}.attention.wo.weight": "blk.{i}.attn_output.weight",
    "layers.{i}.ffn_norm.weight": "blk.{i}.ffn_norm.weight",
    "layers.{i}.feed_forward.w_gate.weight": "blk.{i}.ffn_gate.weight",
    "layers.{i}.feed_forward.w_up.weight": "blk.{i}.ffn_up.weight",
    "layers.{i}.feed_forward.w_down.weight": "blk.{i}.ffn_down.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",  # absent when tied to the embedding (GGUF's convention too)
}
