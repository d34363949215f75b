"""Reading OpenVINO IR with openvino's reader (``read_model``: no compilation, no device): IR version,
inputs and outputs, operators, and weights by element type (int8 / int4 constants are compressed weights)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import InputError, first_line
from edgepipe.tensors import TensorSpec

# Graph plumbing, not computation.
_NOT_OPERATORS = {"Parameter", "Result", "Constant"}


def _spec(port: Any) -> TensorSpec:
    shape = port.get_partial_shape()
    dims: list[int | str] = [] if shape.rank.is_dynamic else [d.get_length() if d.is_static else -1 for d in shape]
    try:
        dtype = port.get_element_type().to_dtype().name
    except Exception:  # an element type numpy has no name for (u4, nf4, ...)
        dtype = port.get_element_type().get_type_name()
    names = port.get_names()
    return TensorSpec(name=port.get_any_name() if names else f"port{port.get_index()}", shape=dims, dtype=dtype)


def describe(path: Path) -> dict[str, Any]:
    """What an IR holds. The .bin must lie beside the .xml; the reader's own message otherwise."""

    weights_file = path.with_suffix(".bin")
    if not weights_file.is_file():
        raise InputError(f"{path}: its weights file {weights_file.name} is missing next to it")
    head = path.read_bytes()[:4096].decode(errors="replace")
    version = re.search(r"<net\b[^>]*\bversion=\"(\d+)\"", head)
    if version is None:  # read_model would try every frontend (ONNX, TensorFlow, ...) on it
        raise InputError(f"{path}: not an OpenVINO IR (no <net version=...> root element)")
    from edgepipe.runtimes.openvino_runtime import read_model

    try:
        model = read_model(path)  # the IR frontend alone
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: OpenVINO cannot read this IR: {first_line(e)}") from None
    ops = Counter(op.get_type_name() for op in model.get_ordered_ops() if op.get_type_name() not in _NOT_OPERATORS)
    weights: dict[str, dict[str, int]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            kind = op.get_element_type().get_type_name()
            entry = weights.setdefault(kind, {"count": 0, "bytes": 0})
            entry["count"] += 1
            entry["bytes"] += int(op.get_byte_size())
    integer_weights = any(k in weights for k in ("i8", "u8", "i4", "u4", "nf4"))
    return {
        "format_version": f"IR v{version.group(1)}",
        "inputs": [_spec(p) for p in model.inputs],
        "outputs": [_spec(p) for p in model.outputs],
        "operators": dict(sorted(ops.items())),
        "custom_operators": [],  # the reader refuses an operator it lacks; that is its error
        "weights": weights,
        # Compressed weights without FakeQuantize on activations: int weights, float compute.
        "hybrid": integer_weights and "FakeQuantize" not in ops,
        "details": {
            "opsets": sorted({op.get_type_info().version_id for op in model.get_ordered_ops()}),
            "fake_quantize": ops.get("FakeQuantize", 0),
        },
    }


# Operators that do the arithmetic INT8 is for, and the ones a quantized value passes through unchanged
# in form (so a convolution after FakeQuantize -> MaxPool still takes quantized input).
COMPUTE_OPS = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "Gemm"}
_PASS_THROUGH = {
    "Convert", "Multiply", "Subtract", "Reshape", "Transpose", "MaxPool", "Squeeze", "Unsqueeze", "Concat",
    "StridedSlice", "Split", "VariadicSplit",
}  # fmt: skip


def quantization_summary(model: Any) -> dict[str, Any]:
    """What NNCF really did, read back from the model: FakeQuantize nodes and their levels, which compute
    operators (convolutions, matrix products) take quantized data and which stay in float, and the
    element types of the weight constants."""
    memo: dict[str, bool] = {}

    def quantized(node: Any) -> bool:
        name = node.get_friendly_name()
        if name not in memo:
            kind = node.get_type_name()
            if kind == "FakeQuantize":
                memo[name] = True
            elif kind == "Constant":
                memo[name] = node.get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4")
            else:
                memo[name] = kind in _PASS_THROUGH and any(
                    quantized(node.input_value(i).get_node()) for i in range(node.get_input_size())
                )
        return memo[name]

    ops = list(model.get_ordered_ops())
    fq = [op for op in ops if op.get_type_name() == "FakeQuantize"]
    computed: dict[str, Counter[str]] = {"quantized": Counter(), "float": Counter()}
    in_float: list[str] = []
    for op in ops:
        if op.get_type_name() in COMPUTE_OPS:
            q = any(quantized(op.input_value(i).get_node()) for i in range(op.get_input_size()))
            computed["quantized" if q else "float"][op.get_type_name()] += 1
            in_float += [] if q else [op.get_friendly_name()]
    weights = Counter(
        op.get_output_element_type(0).get_type_name()
        for op in ops
        if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) >= 2
    )
    scales = Counter("per_channel" if n > 1 else "per_tensor" for n in _weight_scale_sizes(ops, fq))
    return {
        "fake_quantize": {"count": len(fq), "levels": dict(Counter(str(op.get_attributes()["levels"]) for op in fq))},
        "quantized_ops": dict(sorted(computed["quantized"].items())),
        "float_ops": dict(sorted(computed["float"].items())),
        "float_op_names": in_float[:50],
        "weight_element_types": dict(weights),
        "weights": {"per_channel": scales["per_channel"], "per_tensor": scales["per_tensor"]},
    }


def _weight_scale_sizes(ops: list[Any], fq: list[Any]) -> list[int]:
    """How many scales each quantized weight has: a weight compressed to int8 is Constant -> Convert
    [-> Subtract zero point] -> Multiply by its scales; one fake-quantized in float has its ranges as the
    FakeQuantize's input_low."""

    def kind(op: Any, i: int) -> str:
        return str(op.input_value(i).get_node().get_type_name())

    sizes = []
    for op in ops:
        if op.get_type_name() == "Multiply" and op.get_input_size() == 2:
            for i, j in ((0, 1), (1, 0)):
                src = op.input_value(i).get_node()
                if src.get_type_name() == "Subtract":
                    src = src.input_value(0).get_node()
                if src.get_type_name() == "Convert" and kind(src, 0) == "Constant" and kind(op, j) == "Constant":
                    sizes.append(int(np.prod(op.input_value(j).get_shape())))
    for op in fq:
        if kind(op, 0) == "Constant":
            sizes.append(int(np.prod(op.input_value(1).get_shape())))
    return sizes
