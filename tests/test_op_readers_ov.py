"""The op readers of ``edgepipe explain`` for OpenVINO (runtime model + performance counters) and llama.cpp
(GGUF tensor types), on tiny models made here: an FP32 IR of a small CNN built with openvino.opset, its INT8
version from nncf, one with a convolution left in float between quantized ones, and a small GGUF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepipe.errors import InputError

SHAPE = (1, 3, 24, 24)
COMPUTE = {"Convolution", "FullyConnected", "Pooling", "Reduce", "MatMul"}


def _cnn() -> object:
    """image -> conv c1 -> relu -> conv c2 -> relu -> conv c3 -> relu -> max pool -> mean -> matmul."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)

    def conv(x: object, cin: int, cout: int, name: str) -> object:
        w = ops.constant((rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32))
        node = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
        node.set_friendly_name(name)
        return ops.relu(node)

    x = ops.parameter(SHAPE, np.float32, name="image")
    y = conv(conv(conv(x, 3, 16, "c1"), 16, 16, "c2"), 16, 16, "c3")
    y = ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    y = ops.matmul(y, ops.constant(rng.standard_normal((16, 4)).astype(np.float32)), False, False)
    model = ov.Model([y], [x], "tiny_cnn")
    model.outputs[0].set_names({"logits"})
    return model


@pytest.fixture(scope="module")
def irs(tmp_path_factory) -> dict[str, Path]:
    """FP32, INT8 and INT8-but-c2 IRs (.xml + .bin, weights kept in f32)."""
    ov = pytest.importorskip("openvino")
    nncf = pytest.importorskip("nncf")
    out = tmp_path_factory.mktemp("irs")
    model = _cnn()
    rng = np.random.default_rng(1)
    data = nncf.Dataset([rng.standard_normal(SHAPE).astype(np.float32) for _ in range(4)])
    made = {
        "fp32": model,
        "int8": nncf.quantize(model, data, subset_size=4),
        "mixed": nncf.quantize(model, data, subset_size=4, ignored_scope=nncf.IgnoredScope(names=["c2"])),
    }
    paths = {}
    for name, m in made.items():
        paths[name] = out / f"{name}.xml"
        ov.save_model(m, str(paths[name]), compress_to_fp16=False)
    return paths


def _read(path: Path, **kwargs):
    from edgepipe.benchmarks.ops_openvino import read_ops

    feeds = {"image": np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)}
    return read_ops(path, feeds, **{"calls": 5, **kwargs})


def _shares_sum_to_one(report) -> None:
    assert sum(g.share for g in report.groups) == pytest.approx(1.0, abs=1e-3)
    assert sum(report.by_precision.values()) == pytest.approx(1.0, abs=1e-3)


def test_fp32_ir_computes_in_fp32_with_the_f32_hint(irs):
    report = _read(irs["fp32"])
    assert report.runtime == "openvino" and report.format == "openvino" and report.calls == 5
    assert report.clock == "OpenVINO performance counters" and report.ops_ms and report.ops_ms > 0
    compute = [g for g in report.groups if g.op_type in COMPUTE]
    assert {g.op_type for g in compute} >= {"Convolution", "FullyConnected"}
    assert all(g.precision == "fp32" for g in compute), compute
    assert not {"int8", "bf16"} & set(report.by_precision)
    _shares_sum_to_one(report)
    conv = next(g for g in report.groups if g.op_type == "Convolution")
    assert conv.count == 3 and set(conv.nodes) == {"c1", "c2", "c3"} and conv.kernels
    assert report.float_between_quantized == [] and report.unfused_qdq == []
    details = report.details
    assert details["inference_precision"] == "f32"
    assert isinstance(details["default_inference_precision"], str)
    assert details["layer_types"]["Convolution"] == 3 and sum(details["exec_types"].values()) > 0
    effect = details["precision_hint_effect"]
    assert effect["of"] >= 5
    # Without the hint, a CPU whose default is bf16 (AMX, AVX512-bf16) runs every compute layer in bf16.
    assert (effect["bf16_layers"] > 0) == (details["default_inference_precision"] == "bf16")


def test_int8_ir_spends_its_time_in_int8_convolutions(irs):
    report = _read(irs["int8"])
    int8 = [g for g in report.groups if g.precision == "int8"]
    assert any(g.op_type == "Convolution" and g.count == 3 for g in int8), report.groups
    assert report.by_precision["int8"] > 0.5, report.by_precision
    _shares_sum_to_one(report)
    assert report.groups == sorted(report.groups, key=lambda g: -(g.ms or 0))
    assert report.float_between_quantized == []
    # The float model input is quantized by a layer of its own (a FakeQuantize fused into a "Subgraph").
    assert [q.before for q in report.unfused_qdq] == [["Input"]], report.unfused_qdq
    assert report.details["precision_hint_effect"]["bf16_layers"] <= 1


def test_a_float_convolution_between_quantized_ones_is_named(irs):
    report = _read(irs["mixed"])
    between = {p.node: p for p in report.float_between_quantized}
    assert set(between) == {"c2"}, report.float_between_quantized
    assert between["c2"].op_type == "Convolution" and between["c2"].precision == "fp32"
    assert between["c2"].ms is not None and between["c2"].before == ["Convolution"]
    assert any(g.op_type == "Convolution" and g.precision == "int8" and g.count == 2 for g in report.groups)
    # c2's float output is quantized again for c3: a precision-changing reorder (or convert) runs for it.
    assert len(report.unfused_qdq) >= 2


def test_bf16_hint_and_no_clock(irs):
    report = _read(irs["fp32"], options={"inference_precision": "bf16"}, calls=0, threads=None)
    assert report.clock is None and report.ops_ms is None and report.calls == 0 and report.threads is None
    assert all(g.ms is None and g.share is None for g in report.groups)
    assert sum(report.by_precision.values()) == pytest.approx(1.0, abs=1e-3)  # of the layer count
    conv = next(g for g in report.groups if g.op_type == "Convolution")
    if report.details["default_inference_precision"] == "bf16":  # a CPU with bf16 arithmetic
        assert report.details["inference_precision"] == "bf16" and conv.precision == "bf16"


def test_unreadable_ir_is_an_input_error(irs, tmp_path):
    bad = tmp_path / "broken.xml"
    bad.write_text('<?xml version="1.0"?>\n<net name="x" version="11"><layers><layer id="0" type="Nope"')
    bad.with_suffix(".bin").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match=r"broken\.xml: OpenVINO cannot load this model"):
        _read(bad)
    lonely = tmp_path / "lonely.xml"
    lonely.write_bytes(irs["fp32"].read_bytes())
    with pytest.raises(InputError, match=r"lonely\.xml: its weights file lonely\.bin is missing"):
        _read(lonely)


def _gguf(path: Path) -> Path:
    """Token embedding f32, two blocks' attn_q in Q8_0, their norms f32, an output in F16."""
    gguf = pytest.importorskip("gguf")
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(16)
    w.add_tensor("token_embd.weight", rng.standard_normal((8, 32)).astype(np.float32))
    for block in range(2):
        q = quantize(rng.standard_normal((32, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(f"blk.{block}.attn_q.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(f"blk.{block}.attn_norm.weight", np.ones(32, np.float32))
    w.add_tensor("output.weight", rng.standard_normal((8, 32)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_tensors_by_role_and_type(tmp_path):
    from edgepipe.benchmarks.ops_llamacpp import read_ops, role

    report = read_ops(_gguf(tmp_path / "tiny.gguf"))
    assert report.runtime == "llama.cpp" and report.format == "gguf" and report.clock is None
    groups = {(g.op_type, g.precision): g for g in report.groups}
    assert set(groups) == {("attn_q", "q8_0"), ("attn_norm", "f32"), ("token_embd", "f32"), ("output", "f16")}
    assert groups[("attn_q", "q8_0")].count == 2
    assert groups[("attn_q", "q8_0")].nodes == ["blk.0.attn_q.weight", "blk.1.attn_q.weight"]
    assert all(g.ms is None and g.share is None for g in report.groups)
    assert report.groups[0].count == 2  # most tensors first
    # Shares of weight bytes: 2 x 32x64 Q8_0 (34 bytes per 32 weights), 8x32 + 2 x 32 f32, 8x32 f16.
    q8, f32, f16 = 2 * 64 * 34, 4 * (8 * 32 + 2 * 32), 2 * 8 * 32
    total = q8 + f32 + f16
    assert report.by_precision == pytest.approx({"q8_0": q8 / total, "f32": f32 / total, "f16": f16 / total}, abs=1e-4)
    assert report.details["tensor_types"] == {"f32": 3, "q8_0": 2, "f16": 1}
    assert report.details["bits_per_weight"] > 0
    try:
        import llama_cpp  # noqa: F401

        assert "AVX" in report.details["system_info"]
    except ImportError:
        assert report.details["system_info"] is None
    assert role("blk.11.ffn_down.weight") == "ffn_down" and role("blk.0.attn_q.bias") == "attn_q.bias"


def test_bad_gguf_is_an_input_error(tmp_path):
    pytest.importorskip("gguf")
    from edgepipe.benchmarks.ops_llamacpp import read_ops

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"bad\.gguf: not a GGUF model"):
        read_ops(bad)
