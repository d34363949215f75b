"""``edgepipe explain`` end to end on the tiny recipe's CNN: the answer first, read from the runtime itself,
the known traps named where they occur, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.benchmarks.explain import Explanation
from edgepipe.benchmarks.explain_traps import extensions
from edgepipe.cli import main


def _json(capsys, argv: list[str]) -> Explanation:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return Explanation.model_validate(json.loads(capsys.readouterr().out))


@pytest.fixture(scope="module")
def dynamic_cnn(exported, tmp_path_factory) -> Path:
    """The tiny CNN made INT8 by onnxruntime's dynamic quantizer, convolutions included (ConvInteger)."""
    from onnxruntime.quantization import quantize_dynamic

    out = tmp_path_factory.mktemp("dynamic") / "model.onnx"
    quantize_dynamic(str(exported[("onnx", "fp32")].model_file), str(out))
    return out


def test_explain_on_a_dynamically_quantized_cnn_names_conv_integer(dynamic_cnn, exported, capsys):
    fp32 = exported[("onnx", "fp32")].model_file
    e = _json(capsys, ["explain", str(dynamic_cnn), "--reference", str(fp32), "--calls", "5"])
    codes = [f.code for f in e.findings]
    assert "conv_integer" in codes
    conv = next(f for f in e.findings if f.code == "conv_integer")
    assert "ConvInteger" in conv.message and conv.share is not None and conv.nodes
    assert "ConvInteger" in e.answer and e.answer.startswith("INT8 is x")
    assert any(g.op_type == "ConvInteger" and g.precision == "int8" for g in e.model.groups)
    assert e.reference is not None and e.reference.by_precision.get("fp32", 0) > 0.9
    assert e.latency is not None and e.latency.reference_ms and e.latency.speedup and e.latency.ci95
    assert e.cpu.model and e.runtime == "onnxruntime"


def test_explain_an_artifact_finds_its_fp32_parent_and_prints_the_answer_first(exported, capsys):
    static = exported[("onnx", "int8")].path
    capsys.readouterr()
    assert main(["explain", str(static), "--calls", "5"]) == 0
    text = capsys.readouterr().out
    first = text.splitlines()[0]
    assert first.startswith("INT8 is x") and "against FP32 on onnxruntime" in first
    assert "FP32 reference:" in text and "QLinearConv" in text


def test_explain_openvino_reads_runtime_precisions(exported, capsys):
    e = _json(capsys, ["explain", str(exported[("openvino", "int8")].path), "--calls", "5"])
    assert e.runtime == "openvino" and e.model.clock == "OpenVINO performance counters"
    assert e.model.by_precision.get("int8", 0) > 0.5
    fp32 = _json(capsys, ["explain", str(exported[("openvino", "fp32")].path), "--calls", "5"])
    default = fp32.model.details["default_inference_precision"]
    assert ("openvino_default_bf16" in [f.code for f in fp32.findings]) == (default == "bf16")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["explain", "missing.onnx"], "missing.onnx"),
        (["explain", "{model}", "--runtime", "torch"], "--runtime"),
        (["explain", "{model}", "--reference", "nowhere.onnx"], "--reference"),
        (["explain", "{model}", "--no-xnnpack"], "--no-xnnpack"),
        (["explain", "{model}", "--calls", "0"], "--calls"),
    ],
)
def test_bad_explain_input_is_one_line(exported, cli_run, argv, needle):
    model = str(exported[("onnx", "int8")].model_file)
    code, line = cli_run([a.format(model=model) for a in argv])
    assert code == 2 and needle in line


def test_extensions_say_what_the_cpu_has():
    avx2_only = extensions({"arch": "x86_64", "flags": ["avx2", "fma"]})
    assert avx2_only[0] == ["AVX2"] and any("no VNNI" in n for n in avx2_only[1])
    amx = extensions({"arch": "x86_64", "flags": ["avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16"]})
    assert amx[0][0] == "AMX (int8, bf16)" and "AVX-512 VNNI" in amx[0]
    assert not any("no VNNI" in n for n in amx[1])
    arm = extensions({"arch": "aarch64", "flags": ["asimd", "asimddp", "i8mm"]})
    assert "Arm dot product (SDOT/UDOT)" in arm[0] and "Arm i8mm (SMMLA)" in arm[0]


def test_explain_litert_says_what_xnnpack_took(exported, capsys):
    if ("tflite", "int8") not in exported:
        pytest.skip("no TFLite converter here")
    e = _json(capsys, ["explain", str(exported[("tflite", "int8")].path)])
    assert e.runtime == "litert" and e.model.clock is None and e.latency is not None
    assert e.model.details["delegate"]["name"] == "XNNPACK" and e.reference is not None
    assert e.reference.by_precision.get("fp32") == 1.0  # its FP32 parent, fed float where the INT8 file may take int8
    off = _json(capsys, ["explain", str(exported[("tflite", "int8")].model_file), "--no-xnnpack"])
    assert len(off.model.not_delegated) == sum(g.count for g in off.model.groups)
