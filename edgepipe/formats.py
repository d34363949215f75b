"""All model-format constants in one place: names, file suffixes, precisions, default runtimes."""

from __future__ import annotations

import json
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

# Precision names used in manifests and results. Quantized GGUF types keep llama.cpp's names.
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "q8_0", "q4_0", "q4_k_m")


def resolve_model_path(path: str | Path) -> Path:
    """Return the model file for a path that is a model file or an edgepipe artifact folder."""
    p = Path(path)
    if p.is_dir():
        manifest = p / MANIFEST_NAME
        if not manifest.is_file():
            raise InputError(f"{p}: folder has no {MANIFEST_NAME}; pass the model file itself")
        try:
            primary = json.loads(manifest.read_text())["primary"]
            if (
                not isinstance(primary, str)
                or not primary
                or Path(primary).is_absolute()
                or ".." in Path(primary).parts
            ):
                raise ValueError("'primary' must name a file inside the folder")
        except KeyError:
            raise InputError(f"{manifest}: not a valid edgepipe manifest (no 'primary' model file)") from None
        except (ValueError, TypeError) as e:
            raise InputError(f"{manifest}: not a valid edgepipe manifest ({e})") from None
        p = p / primary
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    return p


def detect_format(path: str | Path) -> str:
    """Name of the format of a model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    for info in FORMATS.values():
        if suffix in info.suffixes:
            return info.name
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise InputError(f"{path}: unknown model format '{suffix}' (known: {known})")
