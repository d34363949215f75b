"""Reading OpenVINO IR with openvino's reader (``read_model``: no compilation, no device): IR version,
inputs and outputs, operators, and weights by element type (int8 / int4 constants are compressed weights)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

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
