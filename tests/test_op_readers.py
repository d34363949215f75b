"""The op readers of ``edgepipe explain``: onnxruntime's (optimized graph and profiler) and LiteRT's (node list and
delegate partitions), on tiny models made here: a CNN quantized dynamically, statically (QDQ) and as
QOperator int8, a MatMul -> float op -> MatMul quantized as QDQ, and a TFLite file written with the schema."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepipe.errors import InputError

RNG = np.random.default_rng(0)


def _save(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weight(name: str, *shape: int) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)


def cnn_onnx(path: Path) -> Path:
    """Two 3x3 convolutions with ReLU over a 32x32 image: enough work for the convolutions to dominate."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 32])],
        [_weight("w1", 16, 3, 3, 3), _weight("w2", 32, 16, 3, 3)],
    )
    return _save(graph, path)


def sandwich_onnx(path: Path, middle: str) -> Path:
    """MatMul -> ``middle`` -> MatMul over [1, 8, 16], its nodes unnamed (as many exporters leave them)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node(middle, ["m1"], ["s"]),
        helper.make_node("MatMul", ["s", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sandwich",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])],
        [_weight("w1", 16, 16), _weight("w2", 16, 16)],
    )
    return _save(graph, path)


def quantize_qdq(source: Path, path: Path, shape: tuple[int, ...], **kwargs: Any) -> Path:
    """onnxruntime's static quantizer, calibrated on four random inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": RNG.standard_normal(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    kwargs.setdefault("quant_format", QuantFormat.QDQ)
    logging.disable(logging.WARNING)  # "Please consider pre-processing before quantization"
    try:
        quantize_static(str(source), str(path), Reader(), **kwargs)
    finally:
        logging.disable(logging.NOTSET)
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    return cnn_onnx(tmp_path_factory.mktemp("cnn") / "cnn.onnx")


CNN_FEEDS = {"x": RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)}
SANDWICH_FEEDS = {"x": RNG.standard_normal((1, 8, 16)).astype(np.float32)}


def _check_shares(report: Any) -> None:
    assert report.ops_ms > 0 and report.clock == "onnxruntime profiler" and report.calls == 5
    assert sum(report.by_precision.values()) == pytest.approx(1.0)
    assert sum(g.share for g in report.groups) == pytest.approx(1.0)
    assert sum(g.ms for g in report.groups) == pytest.approx(report.ops_ms)
    assert [g.ms for g in report.groups] == sorted((g.ms for g in report.groups), reverse=True)


def test_dynamic_quantized_cnn_runs_its_convolutions_as_conv_integer(cnn, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    from edgepipe.benchmarks.ops_onnxruntime import read_ops

    path = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(cnn), str(path), op_types_to_quantize=["Conv"])
    report = read_ops(path, CNN_FEEDS, calls=5)
    _check_shares(report)
    groups = {(g.op_type, g.precision): g for g in report.groups}
    assert groups[("ConvInteger", "int8")].count == 2
    assert groups[("ConvInteger", "int8")].kernels == ["CPUExecutionProvider"]
    assert groups[("DynamicQuantizeLinear", "convert")].count == 2
    assert report.details["source_ops"]["ConvInteger"] == 2 and report.details["graph_optimization_level"]
    assert report.format == "onnx" and report.runtime == "onnxruntime" and report.threads == 2


def test_static_qdq_cnn_is_mostly_int8_time_and_lists_its_remaining_qdq(cnn, tmp_path):
    from edgepipe.benchmarks.ops_onnxruntime import read_ops

    path = quantize_qdq(cnn, tmp_path / "static.onnx", (1, 3, 32, 32))
    report = read_ops(path, CNN_FEEDS, calls=5)
    _check_shares(report)
    assert report.groups[0].op_type == "QLinearConv" and report.groups[0].precision == "int8"
    assert report.by_precision["int8"] > 0.5
    assert "Conv" not in report.details["optimized_graph"] and report.details["source_ops"]["QuantizeLinear"] >= 1
    assert report.unfused_qdq and {p.op_type for p in report.unfused_qdq} <= {"QuantizeLinear", "DequantizeLinear"}
    assert all(p.precision == "convert" and p.ms is not None for p in report.unfused_qdq)
    assert not report.float_between_quantized
    assert "qoperator_int8_activations" not in report.details


def test_session_options_reach_onnxruntime(cnn, tmp_path):
    """With QDQ fusion turned off the convolutions stay float between their Q/DQ pairs."""
    from edgepipe.benchmarks.ops_onnxruntime import read_ops

    path = quantize_qdq(cnn, tmp_path / "static.onnx", (1, 3, 32, 32))
    report = read_ops(path, CNN_FEEDS, calls=5, options={"session.disable_quant_qdq": "1"})
    assert "QLinearConv" not in report.details["optimized_graph"]
    between = {p.op_type for p in report.float_between_quantized}
    assert "Conv" in between or "FusedConv" in between


def test_qoperator_int8_activations_are_named(cnn, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType

    from edgepipe.benchmarks.ops_onnxruntime import read_ops

    path = quantize_qdq(
        cnn, tmp_path / "qop.onnx", (1, 3, 32, 32), quant_format=QuantFormat.QOperator, activation_type=QuantType.QInt8
    )
    report = read_ops(path, CNN_FEEDS, calls=5)
    assert len(report.details["qoperator_int8_activations"]) == 2
    assert ("QLinearConv", "int8") in {(g.op_type, g.precision) for g in report.groups}


def test_a_float_op_left_between_qdq_pairs_is_found(tmp_path):
    """onnxruntime has no integer Tanh: DequantizeLinear -> Tanh -> QuantizeLinear stays in the graph it runs."""
    from edgepipe.benchmarks.ops_onnxruntime import read_ops

    source = sandwich_onnx(tmp_path / "tanh.onnx", "Tanh")
    path = quantize_qdq(source, tmp_path / "tanh-qdq.onnx", (1, 8, 16), op_types_to_quantize=["MatMul"])
    report = read_ops(path, SANDWICH_FEEDS, calls=5)
    _check_shares(report)
    [between] = report.float_between_quantized
    assert between.op_type == "Tanh" and between.precision == "fp32" and between.ms is not None
    assert between.before == ["DequantizeLinear"] and between.after == ["QuantizeLinear"]
    assert between.node  # an unnamed node has a name in the report
    assert {g.op_type for g in report.groups if g.precision == "int8"} == {"QLinearMatMul"}
    assert all(g.ms is not None and g.ms > 0 for g in report.groups if g.op_type == "QLinearMatMul")


def test_a_softmax_between_qdq_pairs_runs_as_qlinear_softmax(tmp_path):
    """x86 onnxruntime fuses DequantizeLinear -> Softmax -> QuantizeLinear: not a float op left between."""
    from edgepipe.benchmarks.ops_onnxruntime import read_ops

    source = sandwich_onnx(tmp_path / "softmax.onnx", "Softmax")
    path = quantize_qdq(source, tmp_path / "softmax-qdq.onnx", (1, 8, 16), op_types_to_quantize=["MatMul"])
    report = read_ops(path, SANDWICH_FEEDS, calls=5)
    groups = {(g.op_type, g.precision) for g in report.groups}
    if ("QLinearSoftmax", "int8") in groups:
        assert not report.float_between_quantized
    else:  # an onnxruntime without the fusion: then it is exactly the case the report names
        assert [p.op_type for p in report.float_between_quantized] == ["Softmax"]


def test_an_if_body_is_counted_once_in_its_node(tmp_path):
    """The If node's time holds its branch's Add: the Add is not a group of its own (no time counted twice)."""
    from edgepipe.benchmarks.ops_onnxruntime import read_ops
    from edgepipe.benchmarks.sample_models import multi_onnx

    path = multi_onnx(tmp_path / "multi.onnx")
    a = np.ones((2, 4), np.float32)
    report = read_ops(path, {"a": a, "b": a, "sr": np.array(16000, np.int64)}, calls=5)
    _check_shares(report)
    assert {g.op_type for g in report.groups} == {"Greater", "If", "Mul"}
    assert {g.op_type: g.precision for g in report.groups}["Mul"] == "fp32"


def test_element_types_follow_quantized_data():
    """Data movement on uint8 is int8; shape arithmetic is other; an unknown com.microsoft op does not crash."""
    from onnx import TensorProto, helper

    from edgepipe.benchmarks.ops_onnxruntime import element_types, precision

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q"),
        helper.make_node("Transpose", ["q"], ["t"], name="t"),
        helper.make_node("Shape", ["t"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "i"], ["dim"], name="gather"),
        helper.make_node("SomeFusion", ["t"], ["f"], name="fusion", domain="com.microsoft"),
        helper.make_node("DequantizeLinear", ["f", "s"], ["d"], name="dq"),
        helper.make_node("Cast", ["d"], ["h"], name="cast", to=TensorProto.FLOAT16),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3, 2])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("i", TensorProto.INT64, [], [0])],
    )
    types = element_types(graph)
    got = {n.name: precision(n, types) for n in graph.node}
    assert got == {
        "q": "convert", "t": "int8", "shape": "other", "gather": "other", "fusion": "int8", "dq": "convert",
        "cast": "convert", "relu": "fp16",
    }  # fmt: skip


def test_a_corrupt_onnx_file_is_an_input_error_naming_it(tmp_path):
    from edgepipe.benchmarks.ops_onnxruntime import read_ops

    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)
    with pytest.raises(InputError, match=re.escape(f"{path}: onnxruntime cannot load this model: ")):
        read_ops(path, {"x": np.zeros((1, 4), np.float32)}, calls=1)


# --------------------------------------------------------------------------------------------------
# LiteRT
# --------------------------------------------------------------------------------------------------

# (name, shape, dtype, constant data or None, (scale, zero point) or None)
TENSORS = [
    ("x", [1, 8], "float32", None, None),  # 0
    ("c", [8], "float32", np.linspace(1, 2, 8), None),  # 1
    ("added", [1, 8], "float32", None, None),  # 2
    ("axis", [], "int32", np.array(1), None),  # 3
    ("summed", [1, 8], "float32", None, None),  # 4
    ("q", [1, 8], "int8", None, (0.1, 0)),  # 5
    ("qc", [8], "int8", np.arange(8), (0.1, 0)),  # 6
    ("qsum", [1, 8], "int8", None, (0.2, 0)),  # 7
    ("dq", [1, 8], "float32", None, None),  # 8
    ("tanh", [1, 8], "float32", None, None),  # 9
    ("q2", [1, 8], "int8", None, (1 / 128, 0)),  # 10
    ("dq2", [1, 8], "float32", None, None),  # 11
    ("w", [4, 8], "int8", np.arange(32).reshape(4, 8) - 16, (0.05, 0)),  # 12
    ("y", [1, 4], "float32", None, None),  # 13
]
# x + c -> CUMSUM (no XNNPACK kernel) -> QUANTIZE -> int8 ADD -> DEQUANTIZE -> TANH -> QUANTIZE -> DEQUANTIZE
# -> a hybrid FULLY_CONNECTED (float input, int8 weights)
OPS = [
    ("ADD", [0, 1], [2]),
    ("CUMSUM", [2, 3], [4]),
    ("QUANTIZE", [4], [5]),
    ("ADD", [5, 6], [7]),
    ("DEQUANTIZE", [7], [8]),
    ("TANH", [8], [9]),
    ("QUANTIZE", [9], [10]),
    ("DEQUANTIZE", [10], [11]),
    ("FULLY_CONNECTED", [11, 12, -1], [13]),
]


def tflite_file(path: Path) -> Path:
    """TENSORS and OPS as a .tflite file, written with the LiteRT flatbuffer schema."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    types = {"float32": fb.TensorType.FLOAT32, "int8": fb.TensorType.INT8, "int32": fb.TensorType.INT32}
    model = fb.ModelT()
    model.version, model.buffers = 3, [fb.BufferT()]  # buffer 0 is the empty sentinel
    tensors = []
    for name, shape, dtype, data, quantization in TENSORS:
        t, buffer = fb.TensorT(), fb.BufferT()
        t.name, t.shape, t.type, t.buffer = name, shape, types[dtype], len(model.buffers)
        if data is not None:
            buffer.data = list(np.asarray(data, dtype=dtype).tobytes())
        if quantization:
            t.quantization = fb.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [quantization[0]], [quantization[1]]
        model.buffers.append(buffer)
        tensors.append(t)
    codes: list[int] = []
    operators = []
    for name, inputs, outputs in OPS:
        code = getattr(fb.BuiltinOperator, name)
        if code not in codes:
            codes.append(code)
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes.index(code), inputs, outputs
        operators.append(op)
    model.operatorCodes = []
    for code in codes:
        opcode = fb.OperatorCodeT()
        opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), 1
        model.operatorCodes.append(opcode)
    graph = fb.SubGraphT()
    graph.name, graph.tensors, graph.inputs, graph.outputs, graph.operators = "main", tensors, [0], [13], operators
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


@pytest.fixture(scope="module")
def tflite(tmp_path_factory) -> Path:
    pytest.importorskip("ai_edge_litert")
    return tflite_file(tmp_path_factory.mktemp("tflite") / "model.tflite")


TFLITE_FEEDS = {"x": np.ones((1, 8), np.float32)}


def test_litert_ops_and_their_precisions(tflite):
    from edgepipe.benchmarks.ops_litert import read_ops

    report = read_ops(tflite, TFLITE_FEEDS)
    assert report.clock is None and report.ops_ms is None and report.calls == 0
    assert all(g.ms is None and g.share is None for g in report.groups)
    groups = {(g.op_type, g.precision): g.count for g in report.groups}
    assert groups == {
        ("ADD", "fp32"): 1, ("CUMSUM", "fp32"): 1, ("QUANTIZE", "convert"): 2, ("ADD", "int8"): 1,
        ("DEQUANTIZE", "convert"): 2, ("TANH", "fp32"): 1, ("FULLY_CONNECTED", "int8"): 1,
    }  # fmt: skip
    assert report.groups[0].count == 2  # most operators first
    assert report.by_precision == pytest.approx({"fp32": 3 / 9, "convert": 4 / 9, "int8": 2 / 9})
    assert report.details["hybrid_ops"] == ["FULLY_CONNECTED"]
    assert [(p.op_type, p.before, p.after) for p in report.float_between_quantized] == [
        ("TANH", ["DEQUANTIZE"], ["QUANTIZE"])
    ]
    assert sorted(p.op_type for p in report.unfused_qdq) == ["DEQUANTIZE", "DEQUANTIZE", "QUANTIZE", "QUANTIZE"]
    assert report.groups[0].nodes and all(n for g in report.groups for n in g.nodes)


def test_litert_delegate_partitions(tflite):
    """XNNPACK takes everything but CUMSUM (two partitions); without it no operator is delegated."""
    from edgepipe.benchmarks.ops_litert import read_ops

    on = read_ops(tflite, TFLITE_FEEDS)
    off = read_ops(tflite, TFLITE_FEEDS, options={"xnnpack": False})
    assert off.details["delegate"] is None and len(off.not_delegated) == 9
    assert {k for g in off.groups for k in g.kernels} == {"builtin"}
    delegate = on.details["delegate"]
    assert delegate["name"] == "XNNPACK" and delegate["total_ops"] == 9 and delegate["partitions"] >= 2
    assert "CUMSUM" in {p.op_type for p in on.not_delegated}
    assert len(on.not_delegated) == 9 - delegate["delegated_ops"] < len(off.not_delegated)
    assert {g.op_type: g.kernels for g in on.groups}["CUMSUM"] == ["builtin"]


def test_litert_errors_name_the_file(tflite, tmp_path):
    from edgepipe.benchmarks.ops_litert import read_ops

    path = tmp_path / "broken.tflite"
    path.write_bytes(tflite.read_bytes()[:100])
    with pytest.raises(InputError, match=re.escape(f"{path}: ")):
        read_ops(path, TFLITE_FEEDS)
    with pytest.raises(InputError, match="no option"):
        read_ops(tflite, TFLITE_FEEDS, options={"gpu": True})
