"""Exporters (torch -> format) and post-training quantizers (format -> quantized format).

Quantization belongs to each format's own tool: onnxruntime's quantizer for ONNX, NNCF for OpenVINO
(planned: the LiteRT quantizer for TFLite, llama.cpp's quantizer for GGUF). Each format module
registers its two verbs here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.errors import InputError

if TYPE_CHECKING:
    import torch

    from edgepipe.artifact import Artifact, StageOutput
    from edgepipe.recipe import QuantizeConfig, TargetConfig

ExportFn = Callable[["torch.nn.Module", np.ndarray, Path, "TargetConfig"], "StageOutput"]
QuantizeFn = Callable[["Artifact", "QuantizeConfig", np.ndarray, Path], "StageOutput"]

# format -> module defining export(module, example, out_dir, config) and quantize(parent, config, calib, out_dir)
FORMAT_MODULES: dict[str, str] = {
    "onnx": "edgepipe.export.onnx",
    "openvino": "edgepipe.export.openvino",
}

# Packages whose versions key each format's cache (a new exporter version re-runs the stage).
FORMAT_TOOLS: dict[str, tuple[str, ...]] = {
    "onnx": ("torch", "onnx", "onnxscript", "onnxruntime"),
    "openvino": ("torch", "openvino", "nncf"),
}


def _module(format: str) -> Any:
    if format not in FORMAT_MODULES:
        raise InputError(f"no exporter for format '{format}' (exportable: {', '.join(FORMAT_MODULES)})")
    return importlib.import_module(FORMAT_MODULES[format])


def get_exporter(format: str) -> ExportFn:
    fn: ExportFn = _module(format).export
    return fn


def get_quantizer(format: str) -> QuantizeFn:
    fn: QuantizeFn = _module(format).quantize
    return fn
