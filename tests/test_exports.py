"""Every exporter and quantizer, checked against the torch reference on the format's own runtime.

One template, one parametrisation per (format, runtime): adding a format gets the suite for free.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.benchmarks.harness import Evaluation, evaluate
from edgepipe.export import BACKENDS, target_class
from edgepipe.models.train import predict
from edgepipe.runtimes import RUNTIMES, get_runtime, runtime_class
from edgepipe.tasks import Preprocessor

# Every format that holds classifiers (GGUF holds language models: tests/test_gguf.py) on every runtime
# that runs it.
CLASSIFIER_FORMATS = [f for f in BACKENDS if target_class(f).tasks is None or "classification" in target_class(f).tasks]
CASES = [(fmt, rt) for fmt in CLASSIFIER_FORMATS for rt in RUNTIMES if fmt in runtime_class(rt).formats]


def test_every_format_runs_somewhere():
    assert {fmt for fmt, _ in CASES} == set(CLASSIFIER_FORMATS)
    assert all(any(fmt in runtime_class(rt).formats for rt in RUNTIMES) for fmt in BACKENDS)


@pytest.fixture(scope="module")
def eval_data(tiny_task, torch_artifact):
    return tiny_task.eval_set(Preprocessor(torch_artifact.manifest.inputs))


@pytest.fixture(scope="module")
def reference(torch_module, eval_data):
    return predict(torch_module, eval_data.batches, ["input"])


def _run(artifact, runtime, task, data, reference):
    with get_runtime(runtime).load(artifact.model_file, threads=1) as session:
        metrics, parity, _, nonfinite = evaluate(session, Evaluation(type(task), data, reference))
    assert nonfinite == 0
    return metrics, parity


@pytest.mark.parametrize(("fmt", "runtime"), CASES)
def test_fp32_export_matches_torch(exported, tiny_task, eval_data, reference, fmt, runtime):
    metrics, par = _run(exported[(fmt, "fp32")], runtime, tiny_task, eval_data, reference)
    assert par is not None
    assert par["top1_agreement"] == 1.0
    assert par["max_abs_diff"] < 1e-4
    assert metrics["accuracy"] > 0.8  # the fixture model is really trained


@pytest.mark.parametrize(("fmt", "runtime"), CASES)
def test_int8_follows_torch_and_is_smaller(exported, tiny_task, eval_data, reference, fmt, runtime):
    fp32, int8 = exported[(fmt, "fp32")], exported[(fmt, "int8")]
    metrics, par = _run(int8, runtime, tiny_task, eval_data, reference)
    assert par is not None and par["top1_agreement"] >= 0.95
    labels = np.concatenate(eval_data.targets)
    ref_acc = float(np.mean(np.concatenate(reference).argmax(1) == labels))
    assert metrics["accuracy"] >= ref_acc - 0.03
    assert int8.manifest.size_bytes < 0.6 * fp32.manifest.size_bytes
    q = int8.manifest.quantization
    assert q is not None and int8.manifest.precision == "int8"
    assert q["calibration"]["samples"] == tiny_task.split_sizes()["calibration"]


def test_onnx_int8_manifest_says_what_the_quantizer_did(exported):
    q = exported[("onnx", "int8")].manifest.quantization
    assert q["format"] == "QDQ" and q["requested"]["method"] == "static"
    assert q["op_counts"]["QuantizeLinear"] > 0 and q["op_counts"]["DequantizeLinear"] > 0
    # read back from the graph: int8 weights, per channel, uint8 activations, convolutions quantized
    assert q["weights"]["dtypes"] == {"int8": q["weights"]["per_channel"] + q["weights"]["per_tensor"]}
    assert q["weights"]["per_channel"] > 0
    assert set(q["activation_dtypes"]) == {"uint8"}
    assert q["quantized_ops"]["Conv"] >= 2 and "Conv" not in q["float_ops"]
    scales = list(q["activations"].values())
    assert scales and all(s["scale"] > 0 and s["dtype"] == "uint8" for s in scales)


def test_openvino_int8_has_fake_quantize_and_fp32_weights_stay_fp32(exported):
    import openvino as ov

    q = exported[("openvino", "int8")].manifest.quantization
    assert q["fake_quantize"]["count"] > 0 and q["quantized_ops"].get("Convolution", 0) >= 2
    core = ov.Core()
    int8_ops = {op.get_type_name() for op in core.read_model(exported[("openvino", "int8")].model_file).get_ops()}
    assert "FakeQuantize" in int8_ops
    fp32 = core.read_model(exported[("openvino", "fp32")].model_file)
    const_types = {op.get_element_type().get_type_name() for op in fp32.get_ops() if op.get_type_name() == "Constant"}
    assert "f16" not in const_types  # save_model must not compress an FP32 IR to FP16


def test_manifests_record_lineage_specs_and_tools(exported, torch_artifact):
    onnx_fp32, onnx_int8 = exported[("onnx", "fp32")], exported[("onnx", "int8")]
    assert onnx_fp32.manifest.lineage.parent_sha256 == torch_artifact.sha256
    assert [(p.role, p.sha256) for p in onnx_fp32.manifest.lineage.parents] == [("model", torch_artifact.sha256)]
    assert onnx_int8.manifest.lineage.parent_sha256 == onnx_fp32.sha256
    assert onnx_fp32.manifest.inputs[0].name == "input"
    assert onnx_fp32.manifest.inputs[0].shape[1:] == [1, 16, 16]
    assert isinstance(onnx_fp32.manifest.inputs[0].shape[0], str)  # dynamic batch
    assert {"onnx", "onnxscript", "torch", "edgepipe", "code"} <= set(onnx_fp32.manifest.tools)
    assert {"onnx", "onnxruntime", "edgepipe", "code"} <= set(onnx_int8.manifest.tools)
    assert "torch" not in onnx_int8.manifest.tools  # a torch upgrade does not re-quantize
    assert onnx_fp32.manifest.task["kind"] == "classification"
    assert [f.path for f in exported[("openvino", "fp32")].manifest.files] == ["model.bin", "model.xml"]


def test_torch_artifact_rebuilds_from_safetensors(torch_artifact, torch_module, eval_data):
    session = get_runtime("torch").load(torch_artifact.model_file)
    batch = eval_data.batches[0]
    out = session.run(batch)[0]
    np.testing.assert_array_equal(out, predict(torch_module, [batch], ["input"])[0])
    assert torch_artifact.manifest.model["builder"] == "zoo" and torch_artifact.manifest.model["family"] == "cnn"
