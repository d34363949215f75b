"""Per-quantizer blame, on a real CNN with one deliberately fragile activation.

The tiny recipe's FP32 CNN gets one tensor with a huge outlier: ``x + c - c`` after its first ReLU, where
``c`` is zero but for one element of 1e4. The model computes the same function, but a per-tensor INT8
scale for ``x + c`` leaves no levels for the small values: onnxruntime's static INT8 wrecks it. The blame
must name that tensor first, and its fix must restore the accuracy.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgepipe.blame import Blame, Suspect, sqnr_db
from edgepipe.export import onnx as onnx_backend
from edgepipe.export.onnx import OrtStaticQuant
from edgepipe.search import quantize_to_bar
from edgepipe.stage import StageContext
from edgepipe.tasks import task_class

FRAGILE = "fragile"


def _fragile(fp32: Any, folder: Path) -> Any:
    """A copy of the FP32 artifact whose model adds and removes an outlier after its first ReLU (a stand-in
    artifact: the same manifest, its own file and hash)."""
    model = onnx.load(str(fp32.model_file))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    x = relu.output[0]
    readers = [n for n in model.graph.node if x in n.input]
    channels = 64  # ample: the constant broadcasts over the batch and the spatial dims
    shapes = {v.name: v for v in model.graph.value_info}
    if x in shapes:
        channels = shapes[x].type.tensor_type.shape.dim[1].dim_value or channels
    c = np.zeros((1, channels, 1, 1), dtype=np.float32)
    c[0, 0, 0, 0] = 1e4
    model.graph.initializer.append(numpy_helper.from_array(c, "outlier"))
    for node in readers:
        for i, name in enumerate(node.input):
            if name == x:
                node.input[i] = "restored"
    at = list(model.graph.node).index(relu) + 1
    model.graph.node.insert(at, helper.make_node("Add", [x, "outlier"], [FRAGILE], name="add_outlier"))
    model.graph.node.insert(at + 1, helper.make_node("Sub", [FRAGILE, "outlier"], ["restored"], name="remove_outlier"))
    onnx.checker.check_model(model)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return SimpleNamespace(model_file=path, sha256=f"fragile-{fp32.sha256}", manifest=fp32.manifest)


def _fragile_conv_input(fp32: Any, folder: Path) -> Any:
    """A copy of the FP32 artifact whose second convolution reads its input plus one element of 1e4, its
    output corrected by that element's own convolution: the same function, but a convolution input that
    no per-tensor INT8 scale can hold (OpenVINO's NNCF quantizes convolution inputs, not a lone Add)."""
    import onnxruntime as ort

    model = onnx.load(str(fp32.model_file))
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    x, weight, y = conv.input[0], conv.input[1], conv.output[0]
    _, channels, height, width = shapes[x]
    c = np.zeros((1, channels, height, width), dtype=np.float32)
    c[0, 0, 0, 0] = 1e4
    w = next(i for i in model.graph.initializer if i.name == weight)
    alone = helper.make_graph(
        [helper.make_node("Conv", ["c", weight], ["k"], name="k")],
        "k",
        [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, list(c.shape))],
        [helper.make_tensor_value_info("k", onnx.TensorProto.FLOAT, None)],
        [w],
    )
    alone.node[0].attribute.extend(conv.attribute)
    opset = [helper.make_opsetid("", 17)]
    k = ort.InferenceSession(helper.make_model(alone, opset_imports=opset).SerializeToString()).run(None, {"c": c})[0]
    model.graph.initializer.extend([numpy_helper.from_array(c, "outlier"), numpy_helper.from_array(k, "its_conv")])
    at = list(model.graph.node).index(conv)
    conv.input[0], conv.output[0] = FRAGILE, "with_outlier"
    model.graph.node.insert(at, helper.make_node("Add", [x, "outlier"], [FRAGILE], name="add_outlier"))
    model.graph.node.insert(at + 2, helper.make_node("Sub", ["with_outlier", "its_conv"], [y], name="remove_outlier"))
    onnx.checker.check_model(model)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return SimpleNamespace(model_file=path, sha256=f"fragile-conv-{fp32.sha256}", manifest=fp32.manifest), conv.name


@pytest.fixture(scope="module")
def fragile(exported, tmp_path_factory):
    return _fragile(exported[("onnx", "fp32")], tmp_path_factory.mktemp("fragile"))


def _gated(stage_context: StageContext, **gates: Any) -> StageContext:
    gate = task_class("classification").Gates.model_validate(gates) if gates else None
    return StageContext(stage_context.task, stage_context.seed, gates=gate)


def test_the_fragile_activation_is_blamed_first_and_its_fix_restores_the_accuracy(fragile, stage_context, tmp_path):
    ctx = _gated(stage_context, quantized_max_accuracy_drop=0.02, quantized_min_top1_agreement=0.9)
    shipped = quantize_to_bar(onnx_backend.quantize, {"model": fragile}, OrtStaticQuant(), tmp_path, ctx)
    search = shipped.quantization["search"]
    first = search["attempts"][0]
    assert first["failures"], "the outlier must wreck the default INT8 model"
    blame = first["blame"]
    assert blame["ranked"][0]["tensor"] == FRAGILE
    assert blame["ranked"][0]["output_gain_db"] > 10  # leaving that one quantizer out restores the output
    assert "add_outlier" in blame["ranked"][0]["nodes"]
    assert blame["tool"] == "onnxruntime.quantization.qdq_loss_debug" and blame["split"] == "calibration"
    # The fix the blame proposed was applied and re-measured, and it meets the bar.
    assert search["met_bar"] and search["chosen"] > 0
    fix = search["attempts"][search["chosen"]]
    assert "Add" not in fix["changes"].get("op_types", ["Add"]) or "add_outlier" in fix["changes"]["exclude_nodes"]
    before, after = first["metrics"]["accuracy"], fix["metrics"]["accuracy"]
    assert after - before > 0.2 and after >= search["reference_metrics"]["accuracy"] - 0.02


def test_sqnr_and_ranking():
    x = np.linspace(-1, 1, 101)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x + 0.01) == pytest.approx(10 * np.log10(np.sum(x**2) / (101 * 1e-4)))
    assert sqnr_db(np.zeros(3), np.ones(3)) == float("-inf")
    assert np.isnan(sqnr_db(np.array([np.inf]), np.array([0.0])))
    b = Blame(
        [
            Suspect("quiet", ["q"], float("inf"), None),  # adds no noise: never a suspect
            Suspect("local", ["l"], 5.0, None),
            Suspect("small", ["s1", "s2"], 30.0, 0.5),
            Suspect("big", ["b", "s2"], 20.0, 12.0),
        ],
        "tool",
        3.0,
        8,
        1.0,
    )
    assert [s.tensor for s in b.suspects] == ["big", "small", "local"]
    assert b.kept_in_float(2) == ["b", "s2", "s1"]
    assert b.costly() == 1  # 0.5 dB is less than a quarter of 12
    spread = Blame([Suspect(f"t{i}", [f"n{i}"], 20.0, g) for i, g in enumerate([1.6, 1.0, 0.5, 0.3])], "t", 1, 8, 1)
    assert spread.costly() == 3 and spread.kept_in_float(spread.costly()) == ["n0", "n1", "n2"]
    record = b.record()
    assert record["ranked"][0]["output_gain_db"] == 12.0 and record["quantizers"] == 3


def test_openvino_blames_the_fakequantize_on_the_fragile_convolution_input_and_ignoring_it_restores_accuracy(
    exported, stage_context, tmp_path
):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from edgepipe.export import openvino as openvino_backend
    from edgepipe.export.openvino import NncfQuant

    onnx_parent, conv = _fragile_conv_input(exported[("onnx", "fp32")], tmp_path)
    (tmp_path / "ir").mkdir()
    ov.save_model(
        ov.convert_model(str(onnx_parent.model_file)), str(tmp_path / "ir" / "model.xml"), compress_to_fp16=False
    )
    manifest = onnx_parent.manifest.model_copy(update={"format": "openvino"})
    parent = SimpleNamespace(
        model_file=tmp_path / "ir" / "model.xml", sha256=f"ir-{onnx_parent.sha256}", manifest=manifest
    )
    ctx = _gated(stage_context, quantized_max_accuracy_drop=0.02, quantized_min_top1_agreement=0.9)
    (tmp_path / "q").mkdir()
    shipped = quantize_to_bar(openvino_backend.quantize, {"model": parent}, NncfQuant(), tmp_path / "q", ctx)
    search = shipped.quantization["search"]
    first = search["attempts"][0]
    assert first["failures"], "the outlier must wreck NNCF's default INT8 model"
    worst = first["blame"]["ranked"][0]
    # OpenVINO names the converted convolution after the ONNX node ("node_Conv_42/WithoutBiases").
    assert worst["output_gain_db"] > 10 and any(n.startswith(conv) for n in worst["nodes"])
    assert search["met_bar"]
    fix = search["attempts"][search["chosen"]]
    assert any(n.startswith(conv) for n in fix["changes"]["ignored_scope"]["names"])
    assert fix["metrics"]["accuracy"] - first["metrics"]["accuracy"] > 0.2
