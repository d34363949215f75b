"""Reading .tflite files with the LiteRT flatbuffer schema (no interpreter, no TensorFlow): a header check
before any native parser sees a file, and what a model holds (operators, custom operators, tensor and
weight types, whether it is "hybrid": float activations meeting int8 weights inside one operator)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgepipe.errors import InputError, first_line
from edgepipe.tensors import TensorSpec

IDENTIFIER = b"TFL3"


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as fb

    return fb


def _names(enum: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


def load_model(path: Path) -> tuple[bytes, Any]:
    """The file's bytes and its parsed flatbuffer; InputError naming the file for anything that is not a
    complete TFLite model (empty, another format, truncated, references outside the file)."""
    try:
        buf = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror})") from None
    if not buf:
        raise InputError(f"{path}: empty file, not a TFLite model")
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise InputError(f"{path}: not a TFLite model (no TFL3 identifier)")
    fb = _schema()
    try:
        model = fb.Model.GetRootAs(buf, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("it has no subgraph")
        for i in range(model.SubgraphsLength()):
            graph = model.Subgraphs(i)
            for t in range(graph.TensorsLength()):
                tensor = graph.Tensors(t)
                if not 0 <= tensor.Buffer() < max(model.BuffersLength(), 1):
                    raise ValueError(f"tensor {t} points at buffer {tensor.Buffer()} of {model.BuffersLength()}")
            count = graph.TensorsLength()
            used = [graph.Inputs(k) for k in range(graph.InputsLength())]
            used += [graph.Outputs(k) for k in range(graph.OutputsLength())]
            for o in range(graph.OperatorsLength()):
                op = graph.Operators(o)
                used += [op.Inputs(k) for k in range(op.InputsLength())]
                used += [op.Outputs(k) for k in range(op.OutputsLength())]
                if not 0 <= op.OpcodeIndex() < model.OperatorCodesLength():
                    raise ValueError(f"operator {o} has opcode {op.OpcodeIndex()} of {model.OperatorCodesLength()}")
            if bad := [t for t in used if not -1 <= t < count]:  # -1: an optional input left out
                raise ValueError(f"subgraph {i} refers to tensor {bad[0]} of {count}")
        for b in range(model.BuffersLength()):
            buffer = model.Buffers(b)
            if buffer.Offset() and buffer.Offset() + buffer.Size() > len(buf):
                raise ValueError(f"buffer {b} ends past the end of the file")
            buffer.DataLength()
        for i in range(model.OperatorCodesLength()):
            model.OperatorCodes(i).BuiltinCode()
    except Exception as e:  # flatbuffers raises IndexError/struct.error/... on a cut or damaged file
        raise InputError(f"{path}: a truncated or corrupt TFLite model ({type(e).__name__}: {first_line(e)})") from None
    return buf, model


def check_tflite(path: Path) -> None:
    load_model(path)


def operator_name(model: Any, index: int) -> str:
    """The operator's builtin name (CONV_2D, ...), or for a custom operator its custom code."""
    fb = _schema()
    code = model.OperatorCodes(index)
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _names(fb.BuiltinOperator).get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    return name


def summarize(path: Path) -> dict[str, Any]:
    """Operators (by name, custom ones listed apart), tensor types, weight types and bytes, and whether the
    model is hybrid (float activations with int8 weights inside one operator) or full-integer."""
    _, model = load_model(path)
    fb = _schema()
    types = _names(fb.TensorType)
    ops: Counter[str] = Counter()
    custom: set[str] = set()
    tensor_types: Counter[str] = Counter()
    weights: dict[str, dict[str, int]] = {}
    hybrid_ops: Counter[str] = Counter()
    builtin_names = set(_names(fb.BuiltinOperator).values())
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        constant = set()
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            kind = types.get(tensor.Type(), str(tensor.Type())).lower()
            tensor_types[kind] += 1
            size = model.Buffers(tensor.Buffer()).DataLength() or model.Buffers(tensor.Buffer()).Size()
            if size:
                constant.add(t)
                entry = weights.setdefault(kind, {"count": 0, "bytes": 0})
                entry["count"] += 1
                entry["bytes"] += int(size)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            name = operator_name(model, op.OpcodeIndex())
            ops[name] += 1
            if name not in builtin_names:
                custom.add(name)
            ins = [op.Inputs(i) for i in range(op.InputsLength()) if op.Inputs(i) >= 0]
            in_types = {(i in constant, types.get(graph.Tensors(i).Type(), "").lower()) for i in ins}
            if (False, "float32") in in_types and (True, "int8") in in_types:
                hybrid_ops[name] += 1
    float_activations = tensor_types["float32"] - weights.get("float32", {}).get("count", 0)
    return {
        "version": int(model.Version()),
        "subgraphs": int(model.SubgraphsLength()),
        "op_counts": dict(sorted(ops.items())),
        "custom_ops": sorted(custom),
        "tensor_types": dict(tensor_types),
        "weights": weights,
        "hybrid_ops": dict(hybrid_ops),
        "hybrid": bool(hybrid_ops),
        "full_integer": float_activations == 0 and not hybrid_ops,
    }


def _tensor_spec(model: Any, graph: Any, index: int, types: dict[int, str]) -> TensorSpec:
    """A subgraph input or output: its shape signature (-1 where dynamic), type and quantization."""
    tensor = graph.Tensors(index)
    name = tensor.Name().decode() if isinstance(tensor.Name(), bytes) else str(tensor.Name())
    signature = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
    shape: list[int | str] = [int(d) for d in (signature if not isinstance(signature, int) else [])]
    dtype = TFLITE_DTYPES.get(types.get(tensor.Type(), ""), types.get(tensor.Type(), "?").lower())
    quantization = None
    q = tensor.Quantization()
    if q is not None and q.ScaleLength():
        scales = [float(s) for s in q.ScaleAsNumpy()]
        zero_points = [int(z) for z in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else [0] * len(scales)
        axis = int(q.QuantizedDimension()) if len(scales) > 1 else None
        quantization = {"scale": scales, "zero_point": zero_points, "axis": axis}
    return TensorSpec(name=name, shape=shape, dtype=dtype, quantization=quantization)


def _verify(path: Path, buf: bytes) -> None:
    """LiteRT's own flatbuffer verifier (run when an interpreter is built; nothing is allocated or run):
    it checks every offset, where the Python reader follows only those it reads. A model whose operators
    the interpreter lacks still verifies: only a verifier failure is an error here."""
    from edgepipe.capture import captured_output
    from edgepipe.runtimes.litert_runtime import _interpreter_module

    try:
        mod = _interpreter_module()
    except ImportError:  # no interpreter here: the schema's reading stands alone
        return
    with captured_output():
        try:
            mod.Interpreter(model_content=buf)
        except Exception as e:
            if "flatbuffer" in str(e).lower():
                raise InputError(f"{path}: a corrupt TFLite model ({first_line(e)})") from None


def describe(path: Path) -> dict[str, Any]:
    """What a .tflite file holds, read from its flatbuffer (no interpreter): the first subgraph's inputs
    and outputs with their quantization, operators with custom ones by name, weights by type."""
    buf, model = load_model(path)
    _verify(path, buf)
    summary = summarize(path)
    types = _names(_schema().TensorType)
    graph = model.Subgraphs(0)
    signatures = []
    for i in range(model.SignatureDefsLength()):
        key = model.SignatureDefs(i).SignatureKey()
        signatures.append(key.decode() if isinstance(key, bytes) else str(key))
    return {
        "format_version": f"schema {summary['version']}",
        "inputs": [_tensor_spec(model, graph, graph.Inputs(i), types) for i in range(graph.InputsLength())],
        "outputs": [_tensor_spec(model, graph, graph.Outputs(i), types) for i in range(graph.OutputsLength())],
        "operators": summary["op_counts"],
        "custom_operators": summary["custom_ops"],
        "weights": {TFLITE_DTYPES.get(k.upper(), k): v for k, v in summary["weights"].items()},
        "hybrid": summary["hybrid"],
        "details": {
            "subgraphs": summary["subgraphs"],
            "signatures": signatures,
            "full_integer": summary["full_integer"],
            "hybrid_ops": summary["hybrid_ops"],
        },
    }


# TFLite tensor type names as numpy dtype names.
TFLITE_DTYPES = {
    "FLOAT32": "float32", "FLOAT16": "float16", "FLOAT64": "float64", "INT8": "int8", "UINT8": "uint8",
    "INT16": "int16", "UINT16": "uint16", "INT32": "int32", "UINT32": "uint32", "INT64": "int64",
    "BOOL": "bool", "INT4": "int4", "STRING": "string",
}  # fmt: skip
