"""ONNX: export with torch.onnx, quantize with onnxruntime's static (QDQ) or dynamic quantizer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifact import Artifact, StageOutput, TensorSpec
from edgepipe.formats import ONNX_ELEMENT_TYPES
from edgepipe.recipe import QuantizeConfig, TargetConfig
from edgepipe.stage import StageContext

MODEL_FILE = "model.onnx"


def read_io_spec(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX file, read with onnx (no runtime needed)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return TensorSpec(
            name=v.name, shape=dims, dtype=ONNX_ELEMENT_TYPES.get(t.elem_type, ("", f"onnx-type-{t.elem_type}"))[1]
        )

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


def _dynamic_dims(specs: list[TensorSpec]) -> dict[str, dict[int, str]]:
    """{tensor name: {axis: symbolic name}} for the dims a spec leaves symbolic (e.g. 'batch')."""
    return {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in specs}


def export(parent: Artifact, config: TargetConfig, out_dir: Path, ctx: StageContext) -> StageOutput:
    """torch -> ONNX FP32, names and dynamic dimensions taken from the parent's input/output specs,
    checked with onnx's full checker."""
    import onnx
    import torch

    # The exporter logs a warning per missing torchvision op on every export: not the user's concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    module = ctx.torch_module(parent)
    ins, outs = parent.manifest.inputs, parent.manifest.outputs
    # Batch 2: a dynamic dimension traced at size 1 gets specialised away. Contiguous copies: a strided
    # numpy view makes the dynamo exporter add an as_strided subgraph.
    example = ctx.example_inputs(2)
    args = tuple(torch.from_numpy(example[s.name]).clone() for s in ins)
    input_names, output_names = [s.name for s in ins], [s.name for s in outs]
    path = out_dir / MODEL_FILE
    if config.exporter == "dynamo":
        dims: dict[str, Any] = {}  # one Dim per symbolic name, shared by every tensor that uses it
        # Positional (one entry per input, in order): forward's parameter names need not match the specs'.
        dynamic_shapes = tuple(
            {axis: dims.setdefault(sym, torch.export.Dim(sym, min=1, max=1 << 16)) for axis, sym in axes.items()}
            for axes in (_dynamic_dims([s])[s.name] for s in ins)
        )
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=config.opset,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
            input_names=input_names,
            output_names=output_names,
        )
    else:
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=config.opset or 17,
            dynamic_axes=_dynamic_dims([*ins, *outs]),
            input_names=input_names,
            output_names=output_names,
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
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

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


def validate(target: TargetConfig) -> None:
    for i, q in enumerate(target.quantize):
        if q.method == "dynamic" and q.activation_type == "int8":
            raise ValueError(f"quantize.{i}.activation_type: onnxruntime dynamic quantization uses uint8")


def quantize(parent: Artifact, config: QuantizeConfig, out_dir: Path, ctx: StageContext) -> StageOutput:
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
    samples = 0
    if config.method == "static":
        batches = ctx.calibration_batches(batch_size=16, limit=config.calibration_samples)
        samples = sum(len(next(iter(b.values()))) for b in batches)
        quantize_static(
            str(prepared),
            str(path),
            _CalibrationReader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=qtype[activation_type],
            weight_type=qtype[config.weight_type],
            reduce_range=config.reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
        )
    else:
        quantize_dynamic(
            str(prepared),
            str(path),
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            weight_type=qtype[config.weight_type],
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
            "requested": config.model_dump(),
            "precision": config.precision,
            "method": config.method,
            "per_channel": config.per_channel,
            "activation_type": activation_type,
            "weight_type": config.weight_type,
            "reduce_range": config.reduce_range,
            "format": "QDQ" if config.method == "static" else "dynamic",
            "calibration": {"split": "calibration", "samples": samples, "method": "MinMax"},
            **params,
        },
    )
