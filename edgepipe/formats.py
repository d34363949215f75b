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
        FormatInfo("torch", (".safetensors",), ("torch",), "PyTorch weights (safetensors) + model factory"),
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
