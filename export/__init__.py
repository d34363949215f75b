"""Exporters (torch -> format) and post-training quantizers (format -> quantized format), one module per
format, listed in ``BACKENDS``.

Quantization belongs to each format's own tool: onnxruntime's quantizer for ONNX, NNCF for OpenVINO,
ai-edge-quantizer for TFLite, llama.cpp's quantizer for GGUF. A format module defines:

- ``Target``: a ``TargetConfig`` subclass with the format's export options and, in ``quantizers``,
  one config class per quantize ``method`` (each validated by its own fields);
- ``export(parents, target, out_dir, ctx) -> StageOutput``: from a torch artifact (``parents["model"]``);
- ``quantize(parents, config, out_dir, ctx) -> StageOutput``: from the format's FP32 artifact.

Importing a format module imports no torch and no runtime: recipes validate without them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edgepipe.configs import TargetConfig
from edgepipe.errors import InputError


@dataclass(frozen=True)
class FormatBackend:
    module: str
    # Distributions whose versions key each verb's cache: a new exporter version re-exports.
    export_tools: tuple[str, ...]
    quantize_tools: tuple[str, ...]
    # Modules whose code keys the cache too (edits re-run the stage even without a version bump).
    code: tuple[str, ...]
    # Distributions that key the steps after an artifact (an embedded bundle), where the format has any.
    post_tools: tuple[str, ...] = ()


# Code that changes what any export or quantization writes: the store and manifests, the stage plumbing, the
# chain that builds each step's config, specs, tasks and text; the search that scores a quantized model on
# its format's runtime (each format lists its runtime's module below).
_COMMON_CODE = (
    "edgepipe.store", "edgepipe.artifact", "edgepipe.files", "edgepipe.stage", "edgepipe.chain", "edgepipe.tensors",
    "edgepipe.tasks", "edgepipe.text", "edgepipe.search", "edgepipe.benchmarks.harness", "edgepipe.runtimes.base",
)  # fmt: skip

BACKENDS: dict[str, FormatBackend] = {
    "onnx": FormatBackend(
        module="edgepipe.export.onnx",
        export_tools=("torch", "onnx", "onnxscript"),
        quantize_tools=("onnx", "onnxruntime"),
        code=(
            *_COMMON_CODE,
            "edgepipe.export.onnx",
            "edgepipe.export.onnx_inspect",
            "edgepipe.runtimes.onnxruntime_runtime",
        ),
    ),
    "openvino": FormatBackend(
        module="edgepipe.export.openvino",
        export_tools=("torch", "openvino"),
        quantize_tools=("openvino", "nncf"),
        code=(
            *_COMMON_CODE,
            "edgepipe.export.openvino",
            "edgepipe.export.openvino_inspect",
            "edgepipe.runtimes.openvino_runtime",
        ),
    ),
    "tflite": FormatBackend(
        module="edgepipe.export.tflite",
        export_tools=("torch", "litert-torch", "ai-edge-litert"),
        quantize_tools=("ai-edge-quantizer", "ai-edge-litert"),
        code=(
            *_COMMON_CODE,
            "edgepipe.export.tflite",
            "edgepipe.export.tflite_inspect",
            "edgepipe.export.tflite_micro",
            "edgepipe.export.tflite_bundle",
            "edgepipe.runtimes.litert_runtime",
        ),
        post_tools=("tflite-micro", "ai-edge-litert"),
    ),
    "gguf": FormatBackend(
        module="edgepipe.export.gguf",
        export_tools=("torch", "gguf"),
        quantize_tools=("llama-cpp-python", "gguf"),
        code=(
            *_COMMON_CODE,
            "edgepipe.export.gguf",
            "edgepipe.export.gguf_inspect",
            "edgepipe.runtimes.llamacpp_runtime",
        ),
    ),
}


def backend(format: str) -> tuple[FormatBackend, Any]:
    """The backend entry and its imported module (format modules import their libraries lazily)."""
    if format not in BACKENDS:
        raise InputError(f"no exporter for format '{format}' (exportable: {', '.join(BACKENDS)})")
    entry = BACKENDS[format]
    return entry, importlib.import_module(entry.module)


def target_class(format: str) -> type[TargetConfig]:
    found: type[TargetConfig] = backend(format)[1].Target
    return found
