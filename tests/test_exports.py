"""Every exporter and quantizer, checked against the torch reference on the format's own runtime.

One template, one parametrisation per (format, runtime): adding a format gets the suite for free.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.benchmarks.harness import EvalData, evaluate
from edgepipe.models.train import predict
from edgepipe.runtimes import get_runtime

CASES = [("onnx", "onnxruntime"), ("openvino", "openvino"), ("onnx", "openvino")]


@pytest.fixture(scope="module")
def reference(torch_module, tiny_task):
    return predict(torch_module, tiny_task.test.x)


def _run(artifact, runtime, task, reference):
    session = get_runtime(runtime).load(artifact.model_file, threads=1)
    return evaluate(session, EvalData(task.feeds(task.test), labels=task.test.y, reference=reference))


@pytest.mark.parametrize(("fmt", "runtime"), CASES)
def test_fp32_export_matches_torch(exported, tiny_task, reference, fmt, runtime):
    metrics, par = _run(exported[(fmt, "fp32")], runtime, tiny_task, reference)
    assert par is not None
    assert par["top1_agreement"] == 1.0
    assert par["max_abs_diff"] < 1e-4
    assert metrics["accuracy"] > 0.8  # the fixture model is really trained


@pytest.mark.parametrize(("fmt", "runtime"), CASES)
def test_int8_follows_torch_and_is_smaller(exported, tiny_task, reference, fmt, runtime):
    fp32, int8 = exported[(fmt, "fp32")], exported[(fmt, "int8")]
    metrics, par = _run(int8, runtime, tiny_task, reference)
    assert par is not None and par["top1_agreement"] >= 0.95
    ref_acc = float(np.mean(reference.argmax(1) == tiny_task.test.y))
    assert metrics["accuracy"] >= ref_acc - 0.03
    assert int8.manifest.size_bytes < 0.6 * fp32.manifest.size_bytes
    q = int8.manifest.quantization
    assert q is not None and q["precision"] == "int8" and q["calibration"]["samples"] == len(tiny_task.calibration)


def test_onnx_int8_is_qdq_with_activation_parameters(exported):
    q = exported[("onnx", "int8")].manifest.quantization
    assert q["format"] == "QDQ"
    assert q["op_counts"]["QuantizeLinear"] > 0 and q["op_counts"]["DequantizeLinear"] > 0
    scales = list(q["activations"].values())
    assert scales and all(s["scale"] > 0 and s["dtype"] == "uint8" for s in scales)


def test_openvino_int8_has_fake_quantize_and_fp32_weights_stay_fp32(exported):
    import openvino as ov

    core = ov.Core()
    int8_ops = {op.get_type_name() for op in core.read_model(exported[("openvino", "int8")].model_file).get_ops()}
    assert "FakeQuantize" in int8_ops
    fp32 = core.read_model(exported[("openvino", "fp32")].model_file)
    const_types = {op.get_element_type().get_type_name() for op in fp32.get_ops() if op.get_type_name() == "Constant"}
    assert "f16" not in const_types  # save_model must not compress an FP32 IR to FP16


def test_manifests_record_lineage_specs_and_tools(exported, torch_artifact):
    onnx_fp32, onnx_int8 = exported[("onnx", "fp32")], exported[("onnx", "int8")]
    assert onnx_fp32.manifest.lineage.parent_sha256 == torch_artifact.sha256
    assert onnx_int8.manifest.lineage.parent_sha256 == onnx_fp32.sha256
    assert onnx_fp32.manifest.inputs[0].name == "input"
    assert onnx_fp32.manifest.inputs[0].shape[1:] == [1, 16, 16]
    assert isinstance(onnx_fp32.manifest.inputs[0].shape[0], str)  # dynamic batch
    assert {"onnx", "onnxscript", "torch", "edgepipe", "code"} <= set(onnx_fp32.manifest.tools)
    assert {"onnx", "onnxruntime", "edgepipe", "code"} <= set(onnx_int8.manifest.tools)
    assert "torch" not in onnx_int8.manifest.tools  # a torch upgrade does not re-quantize
    assert onnx_fp32.manifest.task["name"] == "digits"
    assert [f.path for f in exported[("openvino", "fp32")].manifest.files] == ["model.bin", "model.xml"]


def test_torch_artifact_rebuilds_from_safetensors(torch_artifact, torch_module, tiny_task):
    session = get_runtime("torch").load(torch_artifact.model_file)
    out = session.run({"input": tiny_task.test.x[:8]})[0]
    np.testing.assert_array_equal(out, predict(torch_module, tiny_task.test.x[:8]))
