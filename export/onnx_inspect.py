"""Reading ONNX files with the onnx package (no runtime): input/output specs, and what a quantizer really
did, read back from the quantized graph rather than copied from its request."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgepipe.errors import InputError, first_line
from edgepipe.formats import ONNX_ELEMENT_TYPES
from edgepipe.tensors import TensorSpec

# Operators that compute in integers themselves (QOperator and dynamic quantization forms).
INTEGER_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QGemm",
    "QAttention",
    "MatMulInteger",
    "ConvInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def _dtype(elem_type: int) -> str:
    return ONNX_ELEMENT_TYPES.get(elem_type, ("", f"onnx-type-{elem_type}"))[1]


def read_io_spec(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX file, read with onnx (no runtime needed)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return TensorSpec(name=v.name, shape=dims, dtype=_dtype(t.elem_type))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def quantization_summary(path: Path) -> dict[str, Any]:
    """What a quantized ONNX graph holds: its form (QDQ, QOperator, dynamic), weight types and how many
    are per-channel, activation types, which operators consume quantized data and which stay float,
    and the scale and zero point of every statically quantized activation."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = list(model.graph.node)
    dequantized = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    weight_dtypes: Counter[str] = Counter()
    bias_dtypes: Counter[str] = Counter()
    per_channel = per_tensor = 0
    activation_dtypes: Counter[str] = Counter()
    activations: dict[str, dict[str, Any]] = {}
    quantized_ops: Counter[str] = Counter()
    float_ops: Counter[str] = Counter()
    for node in nodes:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim < 2:
            bias_dtypes[inits[node.input[0]].dtype.name] += 1  # int32 biases, scaled by input x weight
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            weight_dtypes[inits[node.input[0]].dtype.name] += 1
            scale = inits.get(node.input[1])
            if scale is not None and scale.size > 1:
                per_channel += 1
            else:
                per_tensor += 1
        elif node.op_type == "QuantizeLinear" and len(node.input) >= 3:
            scale, zp = inits.get(node.input[1]), inits.get(node.input[2])
            if zp is not None:
                activation_dtypes[zp.dtype.name] += 1
            if scale is not None and zp is not None and scale.size == 1:
                activations[node.input[0]] = {"scale": float(scale), "zero_point": int(zp), "dtype": zp.dtype.name}
        elif node.op_type == "DynamicQuantizeLinear":
            activation_dtypes["uint8"] += 1
        elif node.op_type in INTEGER_OPS:
            quantized_ops[node.op_type] += 1
            consts = [inits[name] for name in node.input[1:] if name in inits]
            weights = [c for c in consts if c.dtype.kind in "iu" and c.ndim >= 2]
            for w in weights:
                weight_dtypes[w.dtype.name] += 1
            if weights:  # a vector of scales or zero points beside the weight: one per output channel
                if any(c.ndim == 1 and c.size > 1 for c in consts):
                    per_channel += len(weights)
                else:
                    per_tensor += len(weights)
        elif node.op_type not in QDQ_OPS:
            (quantized_ops if any(i in dequantized for i in node.input) else float_ops)[node.op_type] += 1
    ops = Counter(n.op_type for n in nodes)
    if ops["QuantizeLinear"] or ops["DequantizeLinear"]:
        form = "QDQ"
    elif ops["DynamicQuantizeLinear"] or ops["MatMulInteger"] or ops["ConvInteger"]:
        form = "dynamic"
    elif any(op in INTEGER_OPS for op in ops):
        form = "QOperator"
    else:
        form = "float"
    return {
        "format": form,
        "weights": {"dtypes": dict(weight_dtypes), "per_channel": per_channel, "per_tensor": per_tensor},
        "bias_dtypes": dict(bias_dtypes),
        "activation_dtypes": dict(activation_dtypes),
        "quantized_ops": dict(sorted(quantized_ops.items())),
        "float_ops": dict(sorted(float_ops.items())),
        "op_counts": dict(sorted(ops.items())),
        "activations": activations,
    }


def index_ranges(path: Path) -> dict[str, list[int]]:
    """{input name: [0, rows - 1]} for integer inputs that index an embedding table directly (a Gather on
    an initializer): token ids must stay inside the vocabulary."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tables = {i.name: list(i.dims) for i in model.graph.initializer}
    integer = {v.name for v in model.graph.input if _dtype(v.type.tensor_type.elem_type) in ("int64", "int32")}
    ranges: dict[str, list[int]] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in integer and node.input[0] in tables:
            rows = tables[node.input[0]][0] if tables[node.input[0]] else 0
            if rows > 0:
                ranges[node.input[1]] = [0, rows - 1]
    return ranges


# Domains whose operators every ONNX runtime knows; anything else is named as a custom operator.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def _nodes(graph: Any) -> Iterator[Any]:
    """Every node, including those inside control-flow subgraphs (If branches, Loop and Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _nodes(sub)


def _initializer_bytes(init: Any) -> int:
    import numpy as np

    if init.HasField("raw_data") and init.raw_data:
        return len(init.raw_data)
    for entry in init.external_data:
        if entry.key == "length":
            return int(entry.value)
    itemsize = np.dtype(_dtype(init.data_type)).itemsize if _dtype(init.data_type) in np.sctypeDict else 1
    return int(np.prod(init.dims, dtype=np.int64)) * itemsize


def describe(path: Path) -> dict[str, Any]:
    """What an ONNX file holds, read with onnx alone (no session, no external weights loaded): opsets,
    inputs and outputs, operators counted through subgraphs, custom ones by domain, weights by type."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # a protobuf that does not parse
        raise InputError(f"{path}: not a readable ONNX model ({type(e).__name__}: {first_line(e)})") from None
    if not model.ir_version or not (model.graph.node or model.graph.output):
        # Protobuf parses an empty file, and many a random one, as an empty message.
        raise InputError(f"{path}: not an ONNX model (no IR version or no graph)")
    try:
        inputs, outputs = read_io_spec(path)
    except (ValueError, UnicodeDecodeError) as e:  # pydantic's ValidationError is a ValueError: names not text
        raise InputError(f"{path}: a corrupt ONNX model (its inputs or outputs do not read: {first_line(e)})") from None
    nodes = list(_nodes(model.graph))
    ops = Counter(n.op_type if n.domain in STANDARD_DOMAINS else f"{n.domain}.{n.op_type}" for n in nodes)
    custom = sorted({f"{n.domain}.{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS})
    weights: dict[str, dict[str, int]] = {}
    for init in model.graph.initializer:
        entry = weights.setdefault(_dtype(init.data_type), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += _initializer_bytes(init)
    inits = {i.name: i for i in model.graph.initializer if not i.external_data}

    def affine(scale_name: str, zp_name: str | None) -> dict[str, Any] | None:
        if scale_name not in inits:
            return None
        scale = numpy_helper.to_array(inits[scale_name]).ravel()
        zp = numpy_helper.to_array(inits[zp_name]).ravel() if zp_name in inits else [0] * scale.size
        return {"scale": [float(s) for s in scale], "zero_point": [int(z) for z in zp], "axis": None}

    for node in model.graph.node:  # integer model inputs and outputs with their scale and zero point
        zp = node.input[2] if len(node.input) > 2 else None
        for spec in inputs if node.op_type == "DequantizeLinear" else []:
            if spec.name == node.input[0]:
                spec.quantization = affine(node.input[1], zp)
        for spec in outputs if node.op_type == "QuantizeLinear" else []:
            if spec.name == node.output[0]:
                spec.quantization = affine(node.input[1], zp)
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    return {
        "format_version": f"opset {opsets.get('ai.onnx', '?')}, IR {model.ir_version}",
        "inputs": inputs,
        "outputs": outputs,
        "operators": dict(sorted(ops.items())),
        "custom_operators": custom,
        "weights": weights,
        # Dynamic quantization: int8 weights, float activations quantized at run time.
        "hybrid": bool({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"} & set(ops))
        or any(op.endswith("DynamicQuantizeMatMul") for op in ops),
        "details": {
            "ir_version": int(model.ir_version),
            "opsets": opsets,
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "control_flow": sorted({n.op_type for n in nodes if n.op_type in ("If", "Loop", "Scan")}),
            "external_data": any(i.external_data for i in model.graph.initializer),
        },
    }
