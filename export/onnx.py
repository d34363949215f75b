"""ONNX: export with torch.onnx, quantize with onnxruntime's static (QDQ) or dynamic quantizer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifact import Artifact, StageOutput, TensorSpec
from edgepipe.recipe import QuantizeConfig, TargetConfig

MODEL_FILE = "model.onnx"
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
}


def read_io_spec(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX file, read with onnx (no runtime needed)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return TensorSpec(name=v.name, shape=dims, dtype=_ONNX_DTYPES.get(t.elem_type, str(t.elem_type)))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def _strip_debug_metadata(model: Any) -> None:
    """Drop the dynamo exporter's per-node debug records (stack traces with this machine's file paths,
    FX node dumps): they are ~2% of a small model, leak local paths and make the bytes machine-dependent."""
    for node in model.graph.node:
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output, *model.graph.initializer]:
        value.ClearField("metadata_props")


def export(module: Any, example: np.ndarray, out_dir: Path, config: TargetConfig) -> StageOutput:
    """torch -> ONNX FP32 with a dynamic batch dimension, checked with onnx's full checker."""
    import onnx
    import torch

    # The exporter logs a warning per missing torchvision op on every export: not the user's concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    path = out_dir / MODEL_FILE
    # Batch 2: a dynamic dimension traced at size 1 gets specialised away. Contiguous: see FINDINGS.
    x = torch.from_numpy(np.ascontiguousarray(np.repeat(example[:1], 2, axis=0))).clone()
    if config.exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=config.opset,
            dynamic_shapes={"input": {0: batch}},
            verbose=False,
            input_names=["input"],
            output_names=["logits"],
        )
    else:
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=False,
            opset_version=config.opset or 17,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            input_names=["input"],
            output_names=["logits"],
        )
    model = onnx.load(str(path))
    _strip_debug_metadata(model)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inputs, outputs = read_io_spec(path)
    return StageOutput(
        format="onnx",
        precision="fp32",
        primary=MODEL_FILE,
        inputs=inputs,
        outputs=outputs,
        model={"exporter": config.exporter, "opset": opset},
    )


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over a numpy array, in small batches."""

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 16):
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {input_name: np.ascontiguousarray(data[i : i + batch_size])} for i in range(0, len(data), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _qdq_parameters(path: Path) -> dict[str, Any]:
    """Activation scales/zero points (scalar QuantizeLinear nodes) and node counts of a QDQ model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    activations: dict[str, dict[str, Any]] = {}
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type == "QuantizeLinear" and len(node.input) >= 3:
            scale, zp = inits.get(node.input[1]), inits.get(node.input[2])
            if scale is not None and zp is not None and scale.size == 1:
                activations[node.input[0]] = {
                    "scale": float(scale),
                    "zero_point": int(zp),
                    "dtype": zp.dtype.name,
                }
    return {"activations": activations, "op_counts": dict(sorted(ops.items()))}


def quantize(parent: Artifact, config: QuantizeConfig, calibration: np.ndarray, out_dir: Path) -> StageOutput:
    """ONNX FP32 -> INT8 with onnxruntime.quantization (static QDQ, or dynamic)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    activation_type = config.activation_type or "uint8"
    prepared = out_dir / "prepared.onnx"
    quant_pre_process(str(parent.model_file), str(prepared))
    path = out_dir / MODEL_FILE
    samples = calibration[: config.calibration_samples] if config.calibration_samples else calibration
    if config.method == "static":
        input_name = parent.manifest.inputs[0].name
        quantize_static(
            str(prepared),
            str(path),
            _CalibrationReader(input_name, samples),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=qtype[activation_type],
            weight_type=qtype[config.weight_type],
            calibrate_method=CalibrationMethod.MinMax,
        )
    else:
        quantize_dynamic(
            str(prepared), str(path), per_channel=config.per_channel, weight_type=qtype[config.weight_type]
        )
    prepared.unlink()
    inputs, outputs = read_io_spec(path)
    params = _qdq_parameters(path)
    return StageOutput(
        format="onnx",
        precision=config.precision,
        primary=MODEL_FILE,
        inputs=inputs,
        outputs=outputs,
        quantization={
            "tool": "onnxruntime.quantization",
            **config.model_dump(),
            "activation_type": activation_type,
            "format": "QDQ" if config.method == "static" else "dynamic",
            "calibration": {
                "split": "calibration",
                "samples": len(samples) if config.method == "static" else 0,
                "method": "MinMax",
            },
            **params,
        },
    )
