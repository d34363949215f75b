"""Exporters (torch -> format) and post-training quantizers (format -> quantized format), one module per
format, listed in ``BACKENDS``.

Quantization belongs to each format's own tool: onnxruntime's quantizer for ONNX, NNCF for OpenVINO
(next: the LiteRT quantizer for TFLite, llama.cpp's quantizer for GGUF). A format module defines:

- ``export(parent, config, out_dir, ctx) -> StageOutput``: from a torch artifact;
- ``quantize(parent, config, out_dir, ctx) -> StageOutput``: from the format's FP32 artifact;
- ``validate(target)``: raise ValueError for options the format's tools cannot honour (runs when the
  recipe is loaded, so mistakes surface before any training).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edgepipe.errors import InputError


@dataclass(frozen=True)
class FormatBackend:
    module: str
    # Distributions whose versions key each verb's cache: a new exporter version re-exports.
    export_tools: tuple[str, ...]
    quantize_tools: tuple[str, ...]
    # Modules whose source keys the cache too (edits re-run the stage even without a version bump).
    code: tuple[str, ...]


BACKENDS: dict[str, FormatBackend] = {
    "onnx": FormatBackend(
        module="edgepipe.export.onnx",
        export_tools=("torch", "onnx", "onnxscript"),
        quantize_tools=("onnx", "onnxruntime"),
        code=("edgepipe.export.onnx",),
    ),
    "openvino": FormatBackend(
        module="edgepipe.export.openvino",
        export_tools=("torch", "openvino"),
        quantize_tools=("openvino", "nncf"),
        code=("edgepipe.export.openvino", "edgepipe.runtimes.openvino_runtime"),
    ),
}


def backend(format: str) -> tuple[FormatBackend, Any]:
    """The backend entry and its imported module (format modules import their libraries lazily)."""
    if format not in BACKENDS:
        raise InputError(f"no exporter for format '{format}' (exportable: {', '.join(BACKENDS)})")
    entry = BACKENDS[format]
    return entry, importlib.import_module(entry.module)
