"""LiteRT's op reader for ``edgepipe explain``: which operators of a .tflite file compute in integers and which
in float, and which of them the XNNPACK delegate took.

The LiteRT Python interpreter has no per-operator profiler, so the report has no times: groups are sorted
by operator count, and ``by_precision`` is a share of the count. Everything comes from the interpreter
itself (its node list and tensor types), as loaded by ``runtimes/litert_runtime.py``.

How delegation shows (checked on ai-edge-litert 2.3): the interpreter's node list keeps every operator of
the model (indices 0..m-1) and, once XNNPACK is applied, appends one "DELEGATE" node per partition it took.
A DELEGATE node's inputs are the tensors its partition reads from outside (the graph input, weights,
other partitions' outputs), its outputs those the rest of the graph or the caller reads. The execution
plan (which nodes really run) is not exposed, so a partition's operators are rebuilt here: walking back
from the DELEGATE node's outputs through their producers, stopping at its inputs, finds exactly the
operators between them. With ``{"xnnpack": False}`` there are no DELEGATE nodes at all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.benchmarks.op_report import OpGroup, OpReport, Placement
from edgepipe.errors import InputError, first_line

DELEGATE = "DELEGATE"  # the node name of a delegate kernel (builtin code kTfLiteBuiltinDelegate)
CONVERT_OPS = {"QUANTIZE", "DEQUANTIZE"}
SHAPE_OPS = {"SHAPE", "RANK"}
QUANTIZED = {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)}
FLOATS = {np.dtype(np.float32): "fp32", np.dtype(np.float16): "fp16"}


def _interpreter(path: Path, feeds: dict[str, np.ndarray], threads: int | None, options: dict[str, Any]) -> Any:
    """(the interpreter runtimes/litert_runtime.py opens for ``path``, with its checks, options and errors;
    whether XNNPACK is on). One call on ``feeds`` when given: a file that loads but cannot run them fails
    here, and a dynamic shape is resized to theirs before the node list is read."""
    from edgepipe.runtimes.litert_runtime import LiteRTRuntime, LiteRTSession

    session = LiteRTRuntime().load(path, threads=threads, options=options)
    assert isinstance(session, LiteRTSession)
    if feeds:
        try:
            session.check_feeds(feeds)
            session.run(feeds)
        except InputError:
            raise
        except Exception as e:  # the interpreter's RuntimeError naming the operator that failed
            raise InputError(f"{path}: the LiteRT interpreter cannot run this model: {first_line(e)}") from None
    # The session's interpreter (private to it): the node list must be the one of the interpreter that ran.
    return session._it, bool(session.info.get("xnnpack", True))


def _tensors(interpreter: Any) -> tuple[dict[int, str], dict[int, np.dtype]]:
    """{tensor index: name}, {tensor index: dtype} of the first subgraph."""
    details = interpreter.get_tensor_details()
    return {d["index"]: d["name"] for d in details}, {d["index"]: np.dtype(d["dtype"]) for d in details}


def _ids(array: Any) -> list[int]:
    return [int(i) for i in array if int(i) >= 0]  # -1: an optional input left out


def precision(op: dict[str, Any], dtypes: dict[int, np.dtype], constants: set[int]) -> tuple[str, str]:
    """(precision, note) of one operator: the type of its main input (the first float or quantized one), int8
    for a float input with int8 constant weights; note is "hybrid", "int16" or ""."""
    name = op["op_name"]
    ins = [dtypes[i] for i in _ids(op["inputs"]) if i in dtypes] or list(map(np.dtype, op["operand_types"]))
    outs = [dtypes[i] for i in _ids(op["outputs"]) if i in dtypes] or list(map(np.dtype, op["result_types"]))
    if name in CONVERT_OPS:
        return "convert", ""
    if name == "CAST":
        numeric = all(d in QUANTIZED or d in FLOATS for d in ins + outs)
        return ("convert", "") if numeric else ("other", "")
    main = next((d for d in ins if d in QUANTIZED or d in FLOATS), None)
    if name in SHAPE_OPS or main is None:
        return "other", ""
    if main in FLOATS:
        weights = [dtypes.get(i) for i in _ids(op["inputs"])[1:] if i in constants]
        if any(d in QUANTIZED for d in weights):
            return "int8", "hybrid"
        return FLOATS[main], ""
    return "int8", "int16" if main == np.dtype(np.int16) else ""


def partitions(ops: list[dict[str, Any]], delegates: list[dict[str, Any]]) -> list[set[int]]:
    """The operators (by index) each DELEGATE node took: those on the paths from its inputs to its outputs."""
    producer = {t: op["index"] for op in ops for t in _ids(op["outputs"])}
    by_index = {op["index"]: op for op in ops}
    taken: list[set[int]] = []
    for node in delegates:
        boundary, found = set(_ids(node["inputs"])), set()
        stack = [producer[t] for t in _ids(node["outputs"]) if t in producer]
        while stack:
            index = stack.pop()
            if index in found:
                continue
            found.add(index)
            stack += [producer[t] for t in _ids(by_index[index]["inputs"]) if t not in boundary and t in producer]
        taken.append(found)
    return taken


def _label(op: dict[str, Any], names: dict[int, str]) -> str:
    """An operator's name: its first output tensor's (TFLite operators have none of their own)."""
    outputs = _ids(op["outputs"])
    return (names.get(outputs[0], "") if outputs else "") or f"{op['op_name']}_{op['index']}"


def _placements(ops: list[dict[str, Any]], labels: dict[int, str], prec: dict[int, str]) -> dict[int, Placement]:
    """A Placement for every operator, its producers and consumers by operator type."""
    producer = {t: op for op in ops for t in _ids(op["outputs"])}
    consumers: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for op in ops:
        for t in _ids(op["inputs"]):
            consumers[t].append(op)
    return {
        op["index"]: Placement(
            node=labels[op["index"]],
            op_type=op["op_name"],
            precision=prec[op["index"]],
            before=[producer[t]["op_name"] for t in _ids(op["inputs"]) if t in producer],
            after=[c["op_name"] for t in _ids(op["outputs"]) for c in consumers.get(t, [])],
        )
        for op in ops
    }


def _between(ops: list[dict[str, Any]], prec: dict[int, str], qdq: set[int]) -> list[int]:
    """Float operators fed by a DEQUANTIZE of activations and feeding a QUANTIZE (``qdq``: those on activations)."""
    dequantized = {t for op in ops if op["index"] in qdq and op["op_name"] == "DEQUANTIZE" for t in _ids(op["outputs"])}
    quantizing = {t for op in ops if op["index"] in qdq and op["op_name"] == "QUANTIZE" for t in _ids(op["inputs"])}
    return [
        op["index"] for op in ops
        if prec[op["index"]] in ("fp32", "fp16") and dequantized & set(_ids(op["inputs"]))
        and quantizing & set(_ids(op["outputs"]))
    ]  # fmt: skip


def _groups(ops: list[dict[str, Any]], places: dict[int, Placement], kernel: dict[int, str]) -> list[OpGroup]:
    """Operators merged by (op_type, precision), most operators first; kernels: "XNNPACK" or "builtin"."""
    merged: dict[tuple[str, str], list[int]] = defaultdict(list)
    for op in ops:
        merged[(op["op_name"], places[op["index"]].precision)].append(op["index"])
    groups = [
        OpGroup(op_type=op_type, precision=prec, count=len(members), kernels=sorted({kernel[i] for i in members}),
                nodes=[places[i].node for i in members[:8]])
        for (op_type, prec), members in merged.items()
    ]  # fmt: skip
    return sorted(groups, key=lambda g: (-g.count, g.op_type, g.precision))


def read_ops(
    path: Path,
    feeds: dict[str, np.ndarray],
    threads: int | None = 2,
    calls: int = 20,
    options: dict[str, Any] | None = None,
) -> OpReport:
    """Every operator of the first subgraph of ``path`` as the LiteRT interpreter runs it: its precision,
    whether XNNPACK took it, float operators left between a DEQUANTIZE and a QUANTIZE, and the
    QUANTIZE/DEQUANTIZE operators on activations. No clock: ``calls`` is not used (0 calls timed)."""
    path = Path(path)
    interpreter, xnnpack = _interpreter(path, feeds, threads, dict(options or {}))
    nodes = interpreter._get_ops_details()
    ops = [n for n in nodes if n["op_name"] != DELEGATE]
    delegates = [n for n in nodes if n["op_name"] == DELEGATE]
    names, dtypes = _tensors(interpreter)
    produced = {t for op in ops for t in _ids(op["outputs"])}
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    constants = {t for op in ops for t in _ids(op["inputs"]) if t not in produced and t not in inputs}
    notes: dict[int, str] = {}
    prec: dict[int, str] = {}
    for op in ops:
        prec[op["index"]], notes[op["index"]] = precision(op, dtypes, constants)
    labels = {op["index"]: _label(op, names) for op in ops}
    places = _placements(ops, labels, prec)
    taken = partitions(ops, delegates)
    delegated = set().union(*taken) if taken else set()
    kernel = {op["index"]: "XNNPACK" if op["index"] in delegated else "builtin" for op in ops}
    by_op = {op["index"]: op for op in ops}
    counts = Counter(prec.values())
    # On activations: a DEQUANTIZE of constant weights runs once, when the interpreter prepares the model.
    qdq = {i for i, op in by_op.items() if op["op_name"] in CONVERT_OPS and not set(_ids(op["inputs"])) <= constants}
    details: dict[str, Any] = {
        "ops": dict(Counter(op["op_name"] for op in ops).most_common()),
        "delegate": {"name": "XNNPACK", "partitions": len(delegates), "delegated_ops": len(delegated),
                     "total_ops": len(ops)} if xnnpack else None,
        "subgraphs": int(interpreter.num_subgraphs()),  # only the first is read (one per signature in edgepipe's)
    }  # fmt: skip
    for note, key in (("hybrid", "hybrid_ops"), ("int16", "int16_activations")):
        if found := sorted({by_op[i]["op_name"] for i, n in notes.items() if n == note}):
            details[key] = found
    return OpReport(
        path=str(path),
        format="tflite",
        runtime="litert",
        threads=threads,
        clock=None,
        calls=0,
        ops_ms=None,
        groups=_groups(ops, places, kernel),
        by_precision={p: c / max(len(ops), 1) for p, c in counts.most_common()},
        float_between_quantized=[places[i] for i in _between(ops, prec, qdq)],
        unfused_qdq=[places[i] for i in sorted(qdq)],
        not_delegated=[places[op["index"]] for op in ops if op["index"] not in delegated],
        details=details,
    )  # fmt: skip
