"""Model files made the way other tools make them (onnx.helper, not edgepipe's exporters), for the tests and
for ``files_goals``: a convolution over an image of dynamic height and width (like a text detector), and
a model with several inputs and outputs, an int64 scalar and an If subgraph (like a voice-activity model's
sample-rate switch), optionally with a custom operator no runtime has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _save(model: Any, path: Path) -> Path:
    import onnx

    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_onnx(path: Path, channels: int = 4) -> Path:
    """A convolution over an image of dynamic batch, height and width (like a text detector)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((channels, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["conv"]), helper.make_node("Relu", ["conv"], ["features"])],
        "conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", channels, None, None])],
        [w],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def multi_onnx(path: Path, custom: bool = False) -> Path:
    """Inputs a, b [batch, 4] and an int64 scalar sr; an If on sr > 8000 picks a + b or a - b (like a
    voice-activity model's sample rate); outputs the pick and a * b. ``custom``: one more node of an
    operator no runtime has."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    then = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["then_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, ["batch", 4])],
    )
    other = helper.make_graph(
        [helper.make_node("Sub", ["a", "b"], ["else_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, ["batch", 4])],
    )
    limit = numpy_helper.from_array(np.array(8000, dtype=np.int64), "limit")
    nodes = [
        helper.make_node("Greater", ["sr", "limit"], ["high"]),
        helper.make_node("If", ["high"], ["picked"], then_branch=then, else_branch=other),
        helper.make_node("Mul", ["a", "b"], ["product"]),
    ]
    if custom:
        nodes.append(helper.make_node("MyOp", ["product"], ["odd"], domain="my.domain"))
    outputs = [
        helper.make_tensor_value_info("picked", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 4]),
    ]
    if custom:
        outputs.append(helper.make_tensor_value_info("odd", TensorProto.FLOAT, ["batch", 4]))
    graph = helper.make_graph(
        nodes,
        "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        outputs,
        [limit],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("my.domain", 1)] if custom else [])
    model = helper.make_model(graph, opset_imports=opsets)
    if custom:  # the checker does not know the domain
        model.ir_version = 9
        onnx.save(model, str(path))
        return path
    return _save(model, path)
