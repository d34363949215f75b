"""Runtimes behind one protocol, imported lazily: a missing backend is 'unavailable', never an
ImportError at start-up. The table below is the one place that lists them.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgepipe.errors import InputError
from edgepipe.formats import FORMATS
from edgepipe.runtimes.base import Generation, LanguageModelSession, LoadedModel, Runtime, Session

# name -> "module:class". Planned: "litert" (tflite), "llama.cpp" (gguf), "tflite-micro".
RUNTIMES: dict[str, str] = {
    "torch": "edgepipe.runtimes.torch_runtime:TorchRuntime",
    "onnxruntime": "edgepipe.runtimes.onnxruntime_runtime:OnnxRuntime",
    "openvino": "edgepipe.runtimes.openvino_runtime:OpenVINORuntime",
}


def runtime_class(name: str) -> type[Runtime[Any]]:
    """The class registered for a runtime name (importing it never imports the backend itself)."""
    if name not in RUNTIMES:
        raise InputError(f"unknown runtime '{name}' (known: {', '.join(RUNTIMES)})")
    module, _, cls = RUNTIMES[name].partition(":")
    found: type[Runtime[Any]] = getattr(importlib.import_module(module), cls)
    return found


def get_runtime(name: str) -> Runtime[Any]:
    """The runtime object for a name (it may still be unavailable: see ``unavailable_reason``)."""
    return runtime_class(name)()


def default_runtime(format: str) -> str:
    for name in FORMATS[format].runtimes:
        if name in RUNTIMES:
            return name
    raise InputError(f"no runtime for format '{format}' in this version of edgepipe")


__all__ = [
    "RUNTIMES",
    "Generation",
    "LanguageModelSession",
    "LoadedModel",
    "Runtime",
    "Session",
    "default_runtime",
    "get_runtime",
    "runtime_class",
]
