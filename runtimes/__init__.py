"""Runtimes behind one protocol, imported lazily: a missing backend is 'unavailable', never an
ImportError at start-up. The table below is the one place that lists them.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgepipe.errors import InputError
from edgepipe.formats import FORMATS
from edgepipe.runtimes.base import Generation, LanguageModelSession, LoadedModel, Runtime, Session

# name -> "module:class".
RUNTIMES: dict[str, str] = {
    "torch": "edgepipe.runtimes.torch_runtime:TorchRuntime",
    "onnxruntime": "edgepipe.runtimes.onnxruntime_runtime:OnnxRuntime",
    "openvino": "edgepipe.runtimes.openvino_runtime:OpenVINORuntime",
    "litert": "edgepipe.runtimes.litert_runtime:LiteRTRuntime",
    "llama.cpp": "edgepipe.runtimes.llamacpp_runtime:LlamaCppRuntime",
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
    "describe_runtimes",
    "get_runtime",
    "runtime_class",
]


def describe_runtimes() -> list[dict[str, Any]]:
    """Every registered runtime: the formats it runs, whether it is installed here, its version and
    devices, or why it is unavailable (what ``edgepipe runtimes`` prints)."""
    report: list[dict[str, Any]] = []
    for name in RUNTIMES:
        rt = get_runtime(name)
        reason = rt.unavailable_reason()
        report.append(
            {
                "runtime": name,
                "formats": list(rt.formats),
                "available": reason is None,
                "version": rt.version(),
                "devices": rt.devices() if reason is None else [],
                "reason": reason,
            }
        )
    return report
