"""TFLite: what the quantizers make, the embedded bundle checked under TFLite Micro, and bad files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgepipe.errors import UnsupportedModel

pytest.importorskip("litert_torch")
pytest.importorskip("tflite_micro")


@pytest.fixture(scope="module")
def variants(stage_context, exported, store):
    """{method: artifact} of every TFLite quantizer, from the tiny recipe's FP32 TFLite export."""
    from edgepipe.chain import run_stage
    from edgepipe.export import tflite

    fp32 = exported[("tflite", "fp32")]
    out = {"fp32": fp32}
    for method, cls in tflite.Target.quantizers.items():
        config = cls()
        out[method] = run_stage(
            store, stage_context, f"quantize {method}", False, name=config.variant_name("tflite"), stage="quantize",
            config=config.model_dump(mode="json"), parents={"model": fp32}, tools={},
            build=lambda path, c=config: tflite.quantize({"model": fp32}, c, path, stage_context),
        )  # fmt: skip
    return out


def _first_example(tiny_task) -> np.ndarray:
    return tiny_task.splits["test"][0][:1]


def test_each_quantizer_does_what_its_manifest_says(variants):
    static = variants["static"].manifest
    assert static.quantization["full_integer"] and not static.quantization["hybrid"]
    assert static.inputs[0].dtype == "int8" and static.inputs[0].quantization["scale"][0] > 0
    assert static.outputs[0].dtype == "int8" and static.quantization["calibration"]["method"] == "minmax"
    dynamic = variants["dynamic"].manifest.quantization
    assert dynamic["hybrid"] and set(dynamic["hybrid_ops"]) >= {"CONV_2D", "FULLY_CONNECTED"}
    assert (
        variants["fp16"].manifest.precision == "fp16" and "float16" in variants["fp16"].manifest.quantization["weights"]
    )
    assert variants["weight-only"].manifest.quantization["op_counts"]["DEQUANTIZE"] >= 2
    fp32 = variants["fp32"].manifest.size_bytes
    assert variants["static"].manifest.size_bytes < 0.5 * fp32 and variants["fp16"].manifest.size_bytes < 0.7 * fp32


def test_full_integer_model_runs_on_float_data_through_its_scale(variants, tiny_task):
    """The harness quantizes float inputs and dequantizes outputs from the model's own tensor details."""
    from edgepipe.benchmarks.harness import for_session
    from edgepipe.runtimes import get_runtime

    images = tiny_task.splits["test"][0][:50]
    logits = []
    with get_runtime("litert").load(variants["static"].model_file) as q:
        for x in images:
            [feeds] = for_session(q, {"input": x[None]})
            assert feeds[q.inputs[0].name].dtype == np.int8
            logits.append(q.outputs[0].to_float(q.run(feeds)[0]))
    with get_runtime("litert").load(variants["fp32"].model_file) as f:
        reference = [f.run(for_session(f, {"input": x[None]})[0])[0] for x in images]
    got, want = np.concatenate(logits), np.concatenate(reference)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9 and np.abs(got - want).max() < 1.5


def test_bundle_of_a_full_integer_model(variants, tiny_task, tmp_path):
    from edgepipe.export.tflite_micro import make_bundle, run

    model = variants["static"].model_file
    x = np.round(_first_example(tiny_task) / variants["static"].manifest.inputs[0].quantization["scale"][0]) - 128
    golden_in = np.clip(x, -128, 127).astype(np.int8)
    info = make_bundle(model, tmp_path, [golden_in], variants["static"].manifest)
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "model_data.cc",
        "model_data.h",
        "op_resolver.h",
        "model_io.h",
        "golden.cc",
        "golden.h",
        "README.md",
    } <= names
    resolver = (tmp_path / "op_resolver.h").read_text()
    assert "MicroMutableOpResolver<kNumOps>" in resolver and f"kNumOps = {len(info['ops'])}" in resolver
    assert all(f"Add{name}()" in resolver for name in ("Conv2D", "FullyConnected", "MaxPool2D"))
    # The arena figure is TFLite Micro's own, and the model runs in exactly that much (not in 16 bytes less).
    arena = info["arena_bytes"]
    assert f"kTensorArenaSize = {arena};" in (tmp_path / "model_io.h").read_text()
    [micro] = run(model, [golden_in], 1, arena_size=arena)
    with pytest.raises(UnsupportedModel):
        run(model, [golden_in], 1, arena_size=arena - 16)
    # The golden output is TFLite Micro's, and LiteRT agrees within 1 LSB.
    golden_out = (tmp_path / "golden.cc").read_text().split("g_golden_output0[10] = {")[1].split("}")[0]
    assert [int(v) for v in golden_out.split(",")] == micro.ravel().tolist()
    from edgepipe.runtimes import get_runtime

    with get_runtime("litert").load(model) as session:
        litert = session.run({session.inputs[0].name: golden_in})[0]
    assert np.abs(litert.astype(int) - micro.astype(int)).max() <= 1


def test_the_c_array_compiles_back_to_the_identical_bytes(variants, tmp_path):
    compiler = next(
        (c for c in ("g++", "c++", "clang++") if subprocess.run(["which", c], capture_output=True).returncode == 0),
        None,
    )
    if compiler is None:
        pytest.skip("no C++ compiler on this machine")
    from edgepipe.export.tflite_bundle import model_array

    data = variants["static"].model_file.read_bytes()
    for name, text in model_array(data).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "main.cc").write_text(
        '#include <cstdio>\n#include <cstdint>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 2;\n"
        "  std::fwrite(g_model_data, 1, g_model_data_len, stdout);\n  return 0;\n}\n"
    )
    binary = tmp_path / "dump"
    subprocess.run(
        [compiler, "-std=c++17", "-O0", "-o", str(binary), "main.cc", "model_data.cc"], cwd=tmp_path, check=True
    )
    out = subprocess.run([str(binary)], capture_output=True, check=True).stdout
    assert out == data


@pytest.mark.parametrize("method", ["dynamic", "weight-only"])
def test_no_bundle_for_a_model_tflite_micro_does_not_run_as_litert_does(variants, tiny_task, tmp_path, method):
    from edgepipe.export.tflite_micro import make_bundle

    with pytest.raises(UnsupportedModel, match=r"hybrid|differs from LiteRT"):
        make_bundle(variants[method].model_file, tmp_path, [_first_example(tiny_task)], variants[method].manifest)
    assert not (tmp_path / "model_data.cc").exists()


def _custom_op_model(source: Path, target: Path) -> Path:
    """The model with its MEAN operator renamed to a custom operator, "MyOp", that no interpreter has."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model(str(source))
    index = next(
        i
        for i, c in enumerate(model.operatorCodes)
        if max(c.builtinCode, c.deprecatedBuiltinCode) == fb.BuiltinOperator.MEAN
    )
    code = model.operatorCodes[index]
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    code.customCode = "MyOp"
    for graph in model.subgraphs:
        for op in graph.operators:
            if op.opcodeIndex == index:
                op.builtinOptionsType, op.builtinOptions = 0, None
    fbu.write_model(model, str(target))
    return target


@pytest.mark.parametrize("case", ["empty", "truncated", "random", "onnx-bytes", "custom-op"])
def test_bad_tflite_files_are_one_line_errors(case, variants, tmp_path, cli_run):
    good = variants["fp32"].model_file
    path = tmp_path / "model.tflite"
    data = good.read_bytes()
    if case == "custom-op":
        _custom_op_model(good, path)
    else:
        contents = {
            "empty": b"",
            "truncated": data[: len(data) // 2],
            "random": np.random.default_rng(0).bytes(2000),
            "onnx-bytes": b"\x08\x07\x12\x07pytorch" + bytes(100),
        }
        path.write_bytes(contents[case])
    code, line = cli_run(["bench", str(path), "--runs", "5"])
    assert code == 2 and line.startswith(f"edgepipe: error: {path}")
    assert {"empty": "empty file", "truncated": "truncated or corrupt", "random": "not a TFLite model",
            "onnx-bytes": "not a TFLite model", "custom-op": "MyOp"}[case] in line  # fmt: skip


def test_bundle_command(variants, tmp_path, cli_run):
    code, _ = cli_run(["bundle", str(variants["static"].path), "--out", str(tmp_path / "b")])
    assert code == 0 and (tmp_path / "b" / "bundle.json").is_file()
    code, line = cli_run(["bundle", str(variants["dynamic"].path), "--out", str(tmp_path / "c")])
    assert code == 2 and "hybrid" in line and not (tmp_path / "c").exists()


def test_the_interpreter_of_tflite_runtime_serves_where_ai_edge_litert_is_missing(monkeypatch):
    """On numpy-1 boards only tflite-runtime installs: the same Interpreter API, used in its place."""
    import sys
    import types

    from edgepipe.runtimes.litert_runtime import _interpreter_module

    fake = types.ModuleType("tflite_runtime.interpreter")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    assert _interpreter_module() is fake


def test_a_model_the_converter_cannot_take_is_a_row_and_the_run_goes_on(tmp_path):
    """erfinv has no TFLite lowering (OpenVINO converts it): the TFLite row says why, OpenVINO's is checked."""
    import yaml

    from edgepipe.runner import run_recipe

    (tmp_path / "net.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
        "        return torch.special.erfinv(x.clamp(-0.5, 0.5)).flatten(1)[:, :10] * 3\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "u", "task": {"image_size": 8, "test_size": 100},
        "source": {"kind": "module", "file": "net.py", "class": "Net"},
        "targets": [{"format": "tflite"}, {"format": "openvino"}],
        "benchmark": {"threads": 1, "warmup": 1, "runs": 10, "processes": 1, "max_processes": 1, "reference": False},
    }))  # fmt: skip
    result = run_recipe(recipe, out_dir=tmp_path / "out")
    rows = {r.name: r for r in result.rows}
    assert rows["tflite-fp32"].status == "unsupported" and "aten.erfinv" in rows["tflite-fp32"].error
    assert rows["openvino-fp32"].status == "ok" and rows["openvino-fp32"].gates.passed
    assert result.unchecked is None and result.gate_failures == []


def test_inspect_a_full_integer_and_a_hybrid_file(variants, capsys, tmp_path):
    """`inspect` reads the flatbuffer: int8 inputs with the scale and zero point the interpreter uses,
    weights by type, the hybrid flag, and a custom operator by name."""
    import json

    from edgepipe.cli import main
    from edgepipe.inspection import Inspection
    from edgepipe.runtimes import get_runtime

    def inspect(path) -> Inspection:
        capsys.readouterr()
        assert main(["inspect", str(path), "--json"]) == 0
        return Inspection.model_validate(json.loads(capsys.readouterr().out))

    static = inspect(variants["static"].model_file)
    assert static.format == "tflite" and static.format_version == "schema 3" and static.hybrid is False
    with get_runtime("litert").load(variants["static"].model_file) as session:
        expected = session.inputs[0]
    got = static.inputs[0]
    assert got.dtype == "int8" and got.quantization is not None and expected.quantization is not None
    assert got.quantization.scale == pytest.approx(expected.quantization["scale"])
    assert got.quantization.zero_point == list(expected.quantization["zero_point"])
    assert static.weights["int8"].count > 0 and "CONV_2D" in static.operators
    assert inspect(variants["dynamic"].model_file).hybrid is True
    custom = inspect(_custom_op_model(variants["fp32"].model_file, tmp_path / "custom.tflite"))
    assert custom.custom_operators == ["MyOp"] and custom.operators["MyOp"] == 1


def test_a_tensor_index_outside_the_model_is_refused_before_any_native_reader(variants, tmp_path, cli_run):
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model(str(variants["fp32"].model_file))
    model.subgraphs[0].operators[0].inputs[0] = 10**8
    fbu.write_model(model, str(tmp_path / "bad.tflite"))
    for verb in ("inspect", "bench"):
        code, line = cli_run([verb, str(tmp_path / "bad.tflite")])
        assert code == 2 and line.startswith(f"edgepipe: error: {tmp_path / 'bad.tflite'}: a truncated or corrupt"), (
            line
        )


def test_a_file_of_fixed_batch_is_measured_once_per_point_at_its_own_batch(variants):
    """TFLite files take batch 1: asked for batch 1 and 8, the benchmark measures batch 1 once, not twice
    under two names."""
    from edgepipe.benchmarks.harness import Point, benchmark

    rows = benchmark(variants["fp32"].model_file, "litert", points=[Point(1, 1), Point(1, 8)], warmup=1, runs=5)
    assert [(r.batch_size, r.status) for r in rows] == [(1, "ok")]


def test_bench_times_with_the_runtime_options_it_was_given(exported, capsys):
    """``--no-xnnpack`` reaches the fresh processes that time the file, not only the check in this one."""
    import json

    from edgepipe.cli import main

    path = exported[("tflite", "fp32")].model_file
    capsys.readouterr()
    argv = ["bench", str(path), "--no-xnnpack", "--runs", "5", "--processes", "2", "--max-processes", "2", "--json"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["latency_ms"]["processes"] == 2 and row["session"]["xnnpack"] is False
