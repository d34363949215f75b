"""OpenVINO IR: convert from torch with ov.convert_model, quantize with NNCF."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifact import Artifact, StageOutput, TensorSpec
from edgepipe.recipe import QuantizeConfig, TargetConfig

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"


def read_io_spec(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from edgepipe.runtimes.openvino_runtime import _spec, read_model

    model = read_model(path)
    return (
        [_spec(p, i, "input") for i, p in enumerate(model.inputs)],
        [_spec(p, i, "output") for i, p in enumerate(model.outputs)],
    )


def _save(model: Any, out_dir: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import openvino as ov

    # save_model compresses weights to FP16 unless told not to: an "FP32" IR must stay FP32.
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
    return read_io_spec(out_dir / MODEL_FILE)


def export(module: Any, example: np.ndarray, out_dir: Path, config: TargetConfig) -> StageOutput:
    """torch -> OpenVINO IR FP32 (dynamic batch), through OpenVINO's PyTorch frontend."""
    import openvino as ov
    import torch

    x = torch.from_numpy(np.ascontiguousarray(example[:1])).clone()
    model = ov.convert_model(module, example_input=x, input=[ov.PartialShape([-1, *example.shape[1:]])])
    model.inputs[0].get_tensor().set_names({"input"})
    model.outputs[0].get_tensor().set_names({"logits"})
    inputs, outputs = _save(model, out_dir)
    return StageOutput(
        format="openvino",
        precision="fp32",
        primary=MODEL_FILE,
        extra_files=[WEIGHTS_FILE],
        inputs=inputs,
        outputs=outputs,
        model={"exporter": "openvino.convert_model"},
    )


def quantize(parent: Artifact, config: QuantizeConfig, calibration: np.ndarray, out_dir: Path) -> StageOutput:
    """OpenVINO IR FP32 -> INT8 with NNCF post-training quantization (static, per-channel weights)."""
    # Supported options are checked when the recipe is validated (TargetConfig).
    import nncf

    from edgepipe.runtimes.openvino_runtime import read_model

    nncf.set_log_level(logging.ERROR)
    samples = calibration[: config.calibration_samples] if config.calibration_samples else calibration
    items = [np.ascontiguousarray(samples[i : i + 1]) for i in range(len(samples))]
    preset = nncf.QuantizationPreset.PERFORMANCE  # NNCF's default for CPU: symmetric, fastest kernels
    model = read_model(parent.model_file)
    # Full bias correction instead of NNCF's fast one: on the quickstart CNN it kept FP32 accuracy
    # (0.9833) where the fast one lost 0.8 points, at the same cost (2 s).
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items),
        subset_size=len(items),
        preset=preset,
        target_device=nncf.TargetDevice.CPU,
        fast_bias_correction=False,
    )
    inputs, outputs = _save(quantized, out_dir)
    return StageOutput(
        format="openvino",
        precision=config.precision,
        primary=MODEL_FILE,
        extra_files=[WEIGHTS_FILE],
        inputs=inputs,
        outputs=outputs,
        quantization={
            "tool": "nncf.quantize",
            **config.model_dump(),
            "preset": preset.value,
            "bias_correction": "full",
            "calibration": {"split": "calibration", "samples": len(items)},
        },
    )
