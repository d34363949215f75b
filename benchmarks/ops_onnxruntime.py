"""onnxruntime's op reader for ``edgepipe explain``: which operators of a model run in integers and which in
float on onnxruntime's CPU provider, and where the time goes.

It reads the graph onnxruntime really runs (the optimized model it writes after its fusions: QDQ groups
become QLinearConv, MatMulIntegerToFloat and the like) and times every node with onnxruntime's own
profiler. Precisions come from a forward element-type propagation over that graph, so a Transpose on
uint8 data counts as int8 and a Gather of int64 ids as bookkeeping.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgepipe.benchmarks.op_report import OpGroup, OpReport, Placement
from edgepipe.errors import InputError, first_line

WARMUP = 5  # untimed calls before the profiled ones: first calls allocate and pack weights

# ONNX TensorProto element types.
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, BOOL, FLOAT16, DOUBLE, BFLOAT16 = 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 16
QUANTIZED_TYPES = {UINT8, INT8, UINT16, INT16}  # 16-bit QDQ data is quantized integer data too
BOOKKEEPING_TYPES = {INT32, INT64, BOOL}

CONVERT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Kernels that compute in integers whatever their inputs' types (QLinear* too, by prefix).
INTEGER_OPS = {
    "ConvInteger", "MatMulInteger", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention",
    "QEmbedLayerNormalization", "DynamicQuantizeLSTM", "QOrderedMatMul", "QOrderedAttention",
}  # fmt: skip
SHAPE_OPS = {"Shape", "Size", "ConstantOfShape", "Range", "NonZero"}
# Integer kernels whose output is float (MatMulIntegerToFloat's output is not "dequantized" data).
FLOAT_OUT_OPS = {"MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention", "QEmbedLayerNormalization",
                 "DynamicQuantizeLSTM", "MatMulNBits"}  # fmt: skip
# Where a QLinear operator's output zero point sits among its inputs (default: unary X, xs, xz, ys, yz).
OUTPUT_ZERO_POINT = {"QLinearConv": 7, "QLinearMatMul": 7, "QLinearAdd": 7, "QLinearMul": 7, "QGemm": 8,
                     "QLinearConcat": 1, "QLinearWhere": 8}  # fmt: skip
# Data movement that changes no value: looked through between a float op and its Q/DQ.
LAYOUT_OPS = {"ReorderInput", "ReorderOutput", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
BOOL_OPS = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf"}


class Row(NamedTuple):
    """One executed node: its name, type, precision, time per call and execution provider."""

    node: str
    op_type: str
    precision: str
    ms: float
    provider: str


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _data_input(node: Any) -> str:
    """The input that carries a node's data (Where's condition does not)."""
    return node.input[1] if node.op_type == "Where" and len(node.input) > 1 else (node.input[0] if node.input else "")


def _output_types(node: Any, types: dict[str, int]) -> list[int]:
    """Element types of a node's outputs from its inputs' (0: unknown): the rules of the operators that
    change precision, else the type of the first typed input (which also covers com.microsoft fusions)."""
    op, n = node.op_type, len(node.output)
    first = next((types[i] for i in node.input if types.get(i)), 0)
    if op == "QuantizeLinear":
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        return [types.get(zp) or _attr(node, "output_dtype", 0) or UINT8] * n
    if op == "DynamicQuantizeLinear":
        return [UINT8, FLOAT, UINT8][:n]
    if op == "DequantizeLinear":
        return [types.get(node.input[1], FLOAT) or FLOAT] * n
    if op in ("ConvInteger", "MatMulInteger"):
        return [INT32] * n
    if op in FLOAT_OUT_OPS:
        return [next((types[i] for i in node.input if types.get(i) in (FLOAT, FLOAT16)), FLOAT)] * n
    if op.startswith("QLinear") or op == "QGemm":
        index = OUTPUT_ZERO_POINT.get(op, 4)
        zp = node.input[index] if index < len(node.input) else ""
        return [types.get(zp) or (FLOAT if op == "QGemm" and not zp else first)] * n
    if op == "Cast":
        return [int(_attr(node, "to", FLOAT))] * n
    if op in ("Shape", "Size", "NonZero", "ArgMax", "ArgMin"):
        return [INT64] * n
    if op in BOOL_OPS:
        return [BOOL] * n
    if op in ("ConstantOfShape", "Constant"):
        value = _attr(node, "value")
        return [value.data_type if value is not None else FLOAT] * n
    if op == "TopK":
        return [first, INT64][:n]
    return [types.get(_data_input(node)) or first] * n


def element_types(graph: Any) -> dict[str, int]:
    """{value name: ONNX element type} by forward propagation from the graph's inputs and initializers, in
    file order (topological in a valid file); a node whose inputs are not typed yet is retried after."""
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    types.update({t.name: t.data_type for t in graph.initializer})
    pending = list(graph.node)
    while pending:
        deferred = [n for n in pending if not _type(n, types)]
        if len(deferred) == len(pending):  # names from an outer scope, or a cycle: type what can be
            for node in deferred:
                _type(node, types, force=True)
            break
        pending = deferred
    return types


def _type(node: Any, types: dict[str, int], force: bool = False) -> bool:
    """Type the node's outputs in ``types`` once its inputs are typed (or ``force``); False: not yet."""
    if not force and any(i and i not in types for i in node.input):
        return False
    for name, kind in zip(node.output, _output_types(node, types), strict=False):
        if name:
            types[name] = kind
    return True


def precision(node: Any, types: dict[str, int]) -> str:
    """What one node of the optimized graph computes in (one of op_report.PRECISIONS)."""
    op = node.op_type
    if op in CONVERT_OPS:
        return "convert"
    if op in INTEGER_OPS or op.startswith("QLinear"):
        return "int8"
    if op == "MatMulNBits":
        return "int4" if _attr(node, "bits", 4) == 4 else "int8"
    if op in SHAPE_OPS:
        return "other"
    if op == "Cast":
        to, source = int(_attr(node, "to", FLOAT)), types.get(node.input[0], 0)
        if to in BOOKKEEPING_TYPES or source in BOOKKEEPING_TYPES:
            return "other"
        return "convert" if to != source else _precision_of_type(to)
    return _precision_of_type(types.get(_data_input(node)) or next((types[i] for i in node.input if types.get(i)), 0))


def _precision_of_type(kind: int) -> str:
    if kind in QUANTIZED_TYPES:
        return "int8"
    if kind in BOOKKEEPING_TYPES:
        return "other"
    return {FLOAT16: "fp16", BFLOAT16: "bf16"}.get(kind, "fp32")


def _session(opened: Path, path: Path, threads: int | None, options: dict[str, Any], folder: Path) -> Any:
    """A session on ``opened`` (``path`` or its named copy) as runtimes/onnxruntime_runtime.py opens one on
    the CPU, profiling and writing the optimized graph into ``folder``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or 0
    so.inter_op_num_threads = 1
    for key, value in options.items():
        so.add_session_config_entry(key, str(value))
    so.enable_profiling = True
    so.profile_file_prefix = str(folder / "profile")
    so.optimized_model_filepath = str(folder / "optimized.onnx")
    try:
        return ort.InferenceSession(str(opened), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise InputError(f"{path}: onnxruntime cannot load this model: {first_line(e)}") from None


def node_times(events: list[dict[str, Any]], calls: int) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """{node name: ms per call} and {node name: the event's args} over the last ``calls`` runs.

    The profiler runs from the session's creation, so it also recorded the warm-up calls. Each run is one
    "model_run" event (cat "Session"); a node's kernel events ("<node>_kernel_time", cat "Node", dur in µs)
    count when they start inside one of the last ``calls`` runs. This holds for nodes inside If/Loop bodies
    too, which may run any number of times per call (taking each node's last ``calls`` events would not)."""
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run"
    )
    windows = runs[-calls:] if calls > 0 else []
    total: dict[str, float] = defaultdict(float)
    args: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if any(start <= e["ts"] <= end for start, end in windows):
            name = e["name"][: -len("_kernel_time")]
            total[name] += e["dur"] / 1000.0
            args[name] = e.get("args", {})
    return {name: ms / max(len(windows), 1) for name, ms in total.items()}, args


def _reaches(start: list[Any], step: Any, target: str) -> bool:
    """Whether ``target`` is among the nodes ``start``, looking through layout nodes (``step``: a node's
    neighbours in the direction walked)."""
    seen: set[int] = set()
    while start:
        node = start.pop()
        if node.op_type == target:
            return True
        if node.op_type in LAYOUT_OPS and id(node) not in seen:
            seen.add(id(node))
            start += step(node)
    return False


def placements(nodes: list[Any], prec: dict[str, str], ms: dict[str, float]) -> tuple[list[Placement], list[Placement]]:
    """(float compute left between a DequantizeLinear and a QuantizeLinear, Q/DQ nodes still executed).
    Layout nodes between them do not count: x86 wraps a float Conv in NCHWc ReorderInput/ReorderOutput."""
    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)

    def up(n: Any) -> list[Any]:
        return [producer[i] for i in n.input if i in producer]

    def down(n: Any) -> list[Any]:
        return [c for o in n.output for c in consumers.get(o, [])]

    between: list[Placement] = []
    qdq: list[Placement] = []
    for n in nodes:
        place = Placement(node=n.name, op_type=n.op_type, precision=prec[n.name], ms=ms.get(n.name, 0.0),
                          before=[p.op_type for p in up(n)], after=[c.op_type for c in down(n)])  # fmt: skip
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            qdq.append(place)
        elif (
            prec[n.name] in ("fp32", "fp16", "bf16") and n.op_type not in LAYOUT_OPS
            and _reaches(up(n), up, "DequantizeLinear") and _reaches(down(n), down, "QuantizeLinear")
        ):  # fmt: skip
            between.append(place)
    return between, qdq


def _groups(rows: list[Row]) -> tuple[list[OpGroup], dict[str, float], float]:
    """Rows merged by (op_type, precision), most time first; the share of time per precision; the sum."""
    total = sum(r.ms for r in rows)
    merged: dict[tuple[str, str], list[Row]] = defaultdict(list)
    by_precision: dict[str, float] = defaultdict(float)
    for r in rows:
        merged[(r.op_type, r.precision)].append(r)
        by_precision[r.precision] += r.ms / total if total else 0.0
    groups = [
        OpGroup(op_type=op, precision=prec, count=len(members), ms=sum(m.ms for m in members),
                share=sum(m.ms for m in members) / total if total else 0.0,
                kernels=sorted({m.provider for m in members if m.provider}), nodes=[m.node for m in members[:8]])
        for (op, prec), members in merged.items()
    ]  # fmt: skip
    groups.sort(key=lambda g: (-(g.ms or 0.0), -g.count, g.op_type))
    return groups, dict(sorted(by_precision.items(), key=lambda kv: -kv[1])), total


def _qoperator_int8(source: Any) -> list[str]:
    """QLinear nodes of the file as given whose activations are int8 (x86 runs those on a slow path)."""
    types = element_types(source.graph)
    names = []
    for n in source.graph.node:
        index = 1 if n.op_type == "QLinearConcat" else 2
        if n.op_type.startswith("QLinear") and len(n.input) > index and types.get(n.input[index]) == INT8:
            names.append(n.name)
    return names


def _named(path: Path, folder: Path) -> tuple[Path, Any]:
    """(the file to open, its graph as given). The profiler names an unnamed node "<op>_<its index>" while
    the optimized model keeps it unnamed, so a file with unnamed nodes is opened as a copy in ``folder``
    whose nodes all have names, "<op>#<i>" (names change nothing in what runs, and that pattern meets no
    name the profiler makes up for the unnamed nodes of If/Loop bodies). (path, None): onnx cannot read it,
    and onnxruntime will say what is wrong with it."""
    import onnx

    try:
        source = onnx.load(str(path), load_external_data=False)
    except Exception:
        return path, None
    if all(n.name for n in source.graph.node):
        return path, source
    model = onnx.load(str(path))
    used = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = next(name for k in range(i, i + len(used) + 1) if (name := f"{node.op_type}#{k}") not in used)
            used.add(node.name)
    copy = folder / "named.onnx"
    onnx.save(model, str(copy), save_as_external_data=True, location="named.onnx.data", size_threshold=1 << 20)
    return copy, source


def read_ops(
    path: Path,
    feeds: dict[str, np.ndarray],
    threads: int | None = 2,
    calls: int = 20,
    options: dict[str, Any] | None = None,
) -> OpReport:
    """Every operator of ``path`` as onnxruntime's CPU provider runs it: precision, time per call (profiled
    over ``calls`` calls after WARMUP untimed ones), the float operators left between Q/DQ pairs and
    the Q/DQ nodes no fusion took."""
    import onnx

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edgepipe-ops-") as tmp:
        opened, source = _named(path, Path(tmp))
        session = _session(opened, path, threads, dict(options or {}), Path(tmp))
        try:
            for _ in range(WARMUP + calls):
                session.run(None, feeds)
        except Exception as e:
            session.end_profiling()  # into the folder, while it exists
            raise InputError(f"{path}: onnxruntime cannot run this model on these inputs: {first_line(e)}") from None
        profile = Path(session.end_profiling())
        events = json.loads(profile.read_text())
        profile.unlink()
        optimized = onnx.load(str(Path(tmp) / "optimized.onnx"))
    times, args = node_times(events, calls)
    nodes = list(optimized.graph.node)
    types = element_types(optimized.graph)
    prec = {n.name: precision(n, types) for n in nodes}
    # An If/Loop node's time holds its body's: the body's own nodes (profiled too) are not added again.
    rows = [Row(n.name, n.op_type, prec[n.name], times.get(n.name, 0.0), args.get(n.name, {}).get("provider", ""))
            for n in nodes]  # fmt: skip
    groups, by_precision, total = _groups(rows)
    between, qdq = placements(nodes, prec, times)
    details: dict[str, Any] = {
        "optimized_graph": dict(Counter(n.op_type for n in nodes).most_common()),
        "providers": list(session.get_providers()),
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "source_ops": dict(Counter(n.op_type for n in source.graph.node).most_common()) if source is not None else {},
    }
    if source is not None and (slow := _qoperator_int8(source)):
        details["qoperator_int8_activations"] = slow
    return OpReport(path=str(path), format="onnx", runtime="onnxruntime", threads=threads, clock="onnxruntime profiler",
                    calls=calls, ops_ms=total, groups=groups, by_precision=by_precision,
                    float_between_quantized=between, unfused_qdq=qdq, details=details)  # fmt: skip
