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
