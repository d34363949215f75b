"""The CLI's error contract: every bad input is ONE line on stderr that names the file or field, a
documented exit code (2 = bad input, 3 = runtime/device unavailable; see ``edgepipe.errors``) and no
traceback. Most cases call ``edgepipe.cli.main`` in-process; a few run the real entry point in a
subprocess, where native libraries can also write to stderr.

Recipe cases fail at validation, before any training: ``build_task`` is replaced by a function that
raises, so a recipe that wrongly validates makes its test fail fast instead of training a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import one_process
from edgepipe.cli import main

CliResult = tuple[int, str, str]  # exit code, stdout, stderr

# --------------------------------------------------------------------------------------------------
# Shared fixtures: a real tiny ONNX model (MatMul + Relu, dynamic batch, opset 17) and its OpenVINO IR.
# --------------------------------------------------------------------------------------------------


def build_tiny_onnx(path: Path) -> Path:
    """Write a valid ONNX model: output = relu(input @ W), input [batch, 8] float32, output [batch, 4]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["mm"]), helper.make_node("Relu", ["mm"], ["output"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli_models")


@pytest.fixture(scope="session")
def tiny_onnx(models_dir) -> Path:
    """A valid model shared by the tests: read it, never modify it (copy into ``tmp_path`` first)."""
    return build_tiny_onnx(models_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_ir(models_dir, tiny_onnx) -> Path:
    """The same model as OpenVINO IR (tiny.xml + tiny.bin)."""
    ov = pytest.importorskip("openvino")
    xml = models_dir / "tiny.xml"
    ov.save_model(ov.convert_model(str(tiny_onnx)), str(xml), compress_to_fp16=False)
    assert xml.with_suffix(".bin").is_file()
    return xml


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("EDGEPIPE_DEBUG", raising=False)  # it turns internal errors into tracebacks


@pytest.fixture
def cli(capsys) -> Callable[[list[str]], CliResult]:
    """Run ``edgepipe.cli.main(argv)`` in-process; argparse errors exit through SystemExit."""

    def run(argv: list[str]) -> CliResult:
        capsys.readouterr()  # drop anything printed by fixtures
        try:
            code = main(one_process(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> str:
    """The contract: exit ``code``, exactly one line on stderr, no traceback, each needle in the line."""
    got_code, _, err = result
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("edgepipe: error: "), line
    assert got_code == code, f"exit code {got_code}, expected {code}: {line}"
    for needle in needles:
        assert needle in line, f"{needle!r} not in: {line}"
    return line


def run_console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh interpreter (what deployment scripts see)."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEPIPE_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------------------------------
# edgepipe run: recipe validation errors (all before any training)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly (exit 1, internal error) if a recipe gets past validation to the data stage."""
    import edgepipe.runner

    def boom(*_args, **_kwargs):
        raise AssertionError("the recipe passed validation: the pipeline reached build_task")

    monkeypatch.setattr(edgepipe.runner, "build_task", boom)


# id -> (recipe text, strings the error line must contain besides the recipe path)
BAD_RECIPES = {
    "invalid-yaml": ("name: x\ntargets: [{format: onnx}\n", ["invalid YAML", "line 3"]),
    "unknown-top-level-field": ("name: x\ncolour: red\n", ["colour: unknown field"]),
    "unknown-nested-field": ("name: x\nbenchmark:\n  treads: 2\n", ["benchmark.treads: unknown field"]),
    "wrong-type": ("name: x\nbenchmark:\n  threads: two\n", ["benchmark.threads:", "'two'"]),
    "unknown-target-format": ("name: x\ntargets: [{format: foo}]\n", ["targets.0.format:", "'foo'"]),
    "format-not-a-target": (
        "name: x\ntargets: [{format: torch}]\n",
        ["targets.0.format:", "torch", "not an export target"],
    ),
    "format-for-another-task": (
        "name: x\ntargets: [{format: gguf}]\n",
        ["targets.0.format:", "gguf holds language-modeling models, not classification"],
    ),
    "unknown-model-family": (
        "name: x\nsource: {kind: train, family: resnet9000}\n",
        ["source.family:", "'resnet9000'"],
    ),
    "bad-model-param": (
        "name: x\nsource:\n  kind: train\n  params: {channels: [a]}\n",
        ["source.params.channels", "'a'"],
    ),
    "unknown-model-param": (
        "name: x\nsource:\n  kind: train\n  params: {chanels: [8]}\n",
        ["source.params.chanels: unknown field"],
    ),
    "old-model-section": ("name: x\nmodel: {family: cnn}\n", ["model/train: these sections became"]),
    "unknown-stage": ("name: x\nstages: [{stage: prune-everything}]\n", ["stages.0.stage: unknown stage"]),
    "unknown-task-kind": ("name: x\ntask: {kind: detection}\n", ["task.kind: unknown task kind 'detection'"]),
    "tool-option-of-another-tool": (
        "name: x\ntargets:\n  - format: openvino\n    quantize: [{calibrate_method: entropy}]\n",
        ["targets.0.quantize.0.calibrate_method: unknown field"],
    ),
    "list-not-mapping": ("- name: x\n- seed: 1\n", ["must be a YAML mapping", "list"]),
    "empty-file": ("", ["must be a YAML mapping"]),
    "missing-name": ("seed: 1\n", ["name: Field required"]),
    "openvino-dynamic-quantize": (
        "name: x\ntargets:\n  - format: openvino\n    quantize: [{method: dynamic}]\n",
        ["targets.0", "quantize.0.method", "unknown openvino quantize method 'dynamic'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES), ids=list(BAD_RECIPES))
def test_run_bad_recipe(case, cli, tmp_path, no_training):
    text, needles = BAD_RECIPES[case]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "out"
    result = cli(["run", str(recipe), "--out", str(out)])
    assert_one_line_error(result, 2, f"{recipe}: ", *needles)
    assert not out.exists(), "a bad recipe must fail before the run folder is created"


def test_run_openvino_dynamic_quantize_names_the_full_field_path(cli, tmp_path, no_training):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BAD_RECIPES["openvino-dynamic-quantize"][0])
    result = cli(["run", str(recipe), "--out", str(tmp_path / "out")])
    line = assert_one_line_error(result, 2, str(recipe))
    assert f"{recipe}: targets.0.quantize.0.method: " in line
    assert "Value error" not in line


def test_run_missing_recipe_file(cli, tmp_path, no_training):
    recipe = tmp_path / "nope.yaml"
    assert_one_line_error(cli(["run", str(recipe)]), 2, str(recipe), "no such recipe file")


def test_run_recipe_is_a_folder(cli, tmp_path, no_training):
    folder = tmp_path / "recipe.yaml"
    folder.mkdir()
    assert_one_line_error(cli(["run", str(folder)]), 2, str(folder), "cannot read recipe")


def test_run_recipe_not_utf8(cli, tmp_path, no_training):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\xff\xfe\x00name: x\n")
    assert_one_line_error(cli(["run", str(recipe)]), 2, str(recipe), "cannot read recipe")


# --------------------------------------------------------------------------------------------------
# edgepipe bench: bad model files
# --------------------------------------------------------------------------------------------------


def test_bench_missing_file(cli, tmp_path):
    model = tmp_path / "missing.onnx"
    assert_one_line_error(cli(["bench", str(model)]), 2, str(model), "no such file")


def test_bench_truncated_onnx(cli, tmp_path, tiny_onnx):
    data = tiny_onnx.read_bytes()
    model = tmp_path / "truncated.onnx"
    model.write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli(["bench", str(model)]), 2, str(model), "cannot load this model")


def test_bench_random_bytes_onnx(cli, tmp_path):
    model = tmp_path / "random.onnx"
    model.write_bytes(np.random.default_rng(0).bytes(512))
    assert_one_line_error(cli(["bench", str(model)]), 2, str(model), "cannot load this model")


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_bench_corrupt_onnx_on_openvino(cli, tmp_path, tiny_onnx, kind):
    pytest.importorskip("openvino")
    data = tiny_onnx.read_bytes()
    model = tmp_path / f"{kind}.onnx"
    model.write_bytes(data[: len(data) // 2] if kind == "truncated" else np.random.default_rng(1).bytes(512))
    result = cli(["bench", str(model), "--runtime", "openvino"])
    assert_one_line_error(result, 2, str(model), "OpenVINO cannot load this model")


def test_bench_corrupt_openvino_xml(cli, tmp_path):
    pytest.importorskip("openvino")
    xml = tmp_path / "garbage.xml"
    xml.write_text("this is not an OpenVINO IR <<<\n")
    xml.with_suffix(".bin").write_bytes(b"\0" * 64)
    assert_one_line_error(cli(["bench", str(xml)]), 2, str(xml), "OpenVINO cannot load this model")


def test_bench_openvino_xml_without_bin(cli, tmp_path, tiny_ir):
    xml = tmp_path / "nobin.xml"
    xml.write_bytes(tiny_ir.read_bytes())  # no nobin.bin beside it
    assert_one_line_error(cli(["bench", str(xml)]), 2, str(xml), "nobin.bin is missing")


@pytest.mark.parametrize("case", ["garbage-xml", "missing-bin"])
def test_bench_openvino_errors_give_the_reason(cli, tmp_path, tiny_ir, case):
    xml = tmp_path / "model.xml"
    if case == "garbage-xml":
        xml.write_text("this is not an OpenVINO IR <<<\n")
        xml.with_suffix(".bin").write_bytes(b"\0" * 64)
    else:
        xml.write_bytes(tiny_ir.read_bytes())
    line = assert_one_line_error(cli(["bench", str(xml)]), 2, str(xml))
    assert "Exception from src/" not in line
    if case == "missing-bin":
        assert ".bin" in line.replace(str(xml), "")


def test_bench_unknown_suffix(cli, tmp_path):
    model = tmp_path / "model.foo"
    model.write_bytes(b"not a model")
    assert_one_line_error(cli(["bench", str(model)]), 2, str(model), "unknown model format '.foo'")


def test_bench_folder_without_manifest(cli, tmp_path):
    assert_one_line_error(cli(["bench", str(tmp_path)]), 2, str(tmp_path), "manifest.json")


@pytest.mark.parametrize(
    ("manifest", "needle"),
    [
        pytest.param("{bad json", "not a valid edgepipe manifest", id="invalid-json"),
        pytest.param('{"format": "onnx"}', "not a valid edgepipe manifest", id="no-primary"),
        pytest.param('["model.onnx"]', "not a valid edgepipe manifest", id="list"),
        pytest.param('{"primary": "model.onnx"}', "not a valid edgepipe manifest", id="primary-only"),
        pytest.param(
            '{"primary": 5}',
            "not a valid edgepipe manifest",
            id="primary-not-a-string",
        ),
    ],
)
def test_bench_artifact_folder_bad_manifest(cli, tmp_path, manifest, needle):
    (tmp_path / "manifest.json").write_text(manifest)
    assert_one_line_error(cli(["bench", str(tmp_path)]), 2, str(tmp_path), needle)


# --------------------------------------------------------------------------------------------------
# edgepipe bench: runtimes and devices
# --------------------------------------------------------------------------------------------------


def test_bench_format_does_not_match_runtime(cli, tiny_onnx):
    result = cli(["bench", str(tiny_onnx), "--runtime", "torch"])
    assert_one_line_error(result, 2, str(tiny_onnx), "runtime 'torch'")


def test_bench_unknown_runtime(cli, tiny_onnx):
    result = cli(["bench", str(tiny_onnx), "--runtime", "tensorrtx"])
    assert_one_line_error(result, 2, "unknown runtime 'tensorrtx'", "onnxruntime")


@pytest.mark.parametrize(
    ("module", "model", "extra"),
    [
        pytest.param("openvino", "ir", [], id="openvino-ir"),
        pytest.param("openvino", "onnx", ["--runtime", "openvino"], id="openvino-onnx"),
        pytest.param("onnxruntime", "onnx", [], id="onnxruntime"),
    ],
)
def test_bench_runtime_not_installed(cli, monkeypatch, request, module, model, extra):
    path = request.getfixturevalue("tiny_ir" if model == "ir" else "tiny_onnx")
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` now raises ImportError
    result = cli(["bench", str(path), *extra])
    assert_one_line_error(result, 3, f"runtime '{module}' is not installed", f"pip install {module}")


@pytest.mark.parametrize(("runtime", "device"), [("onnxruntime", "cuda"), ("openvino", "gpu")])
def test_bench_device_unavailable(cli, tiny_onnx, runtime, device):
    if runtime == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("this machine has CUDA for onnxruntime")
    else:
        ov = pytest.importorskip("openvino")
        if any(d.upper().startswith("GPU") for d in ov.Core().available_devices):
            pytest.skip("this machine has an OpenVINO GPU device")
    result = cli(["bench", str(tiny_onnx), "--runtime", runtime, "--device", device])
    assert_one_line_error(result, 3, f"device '{device}'", f"runtime '{runtime}'")


# --------------------------------------------------------------------------------------------------
# Argument errors (argparse): exit 2, one line naming the option
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        pytest.param(["--threads", "0"], ["argument --threads", "thread count"], id="threads-0"),
        pytest.param(["--threads", "100000"], ["argument --threads", "thread count"], id="threads-huge"),
        pytest.param(["--threads", "abc"], ["argument --threads", "'abc'"], id="threads-abc"),
        pytest.param(["--batch-size", "0"], ["argument --batch-size"], id="batch-size-0"),
        pytest.param(["--runs", "-3"], ["argument --runs"], id="runs-negative"),
        pytest.param(["--warmup", "many"], ["argument --warmup"], id="warmup-not-int"),
        pytest.param(["--max-seconds", "abc"], ["argument --max-seconds"], id="max-seconds-abc"),
        pytest.param(["--treads", "2"], ["unrecognized arguments: --treads"], id="unknown-option"),
    ],
)
def test_bench_bad_arguments(cli, tiny_onnx, args, needles):
    assert_one_line_error(cli(["bench", str(tiny_onnx), *args]), 2, *needles)


@pytest.mark.parametrize(
    ("args", "option"),
    [(["--warmup", "-1"], "--warmup"), (["--max-seconds", "-1"], "--max-seconds")],
    ids=["warmup-negative", "max-seconds-negative"],
)
def test_bench_out_of_range_arguments(cli, tiny_onnx, args, option):
    result = cli(["bench", str(tiny_onnx), "--runs", "5", "--threads", "1", *args])
    assert_one_line_error(result, 2, f"argument {option}")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param([], "required: command", id="no-command"),
        pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="unknown-command"),
        pytest.param(["bench"], "required: model", id="bench-no-model"),
        pytest.param(["run"], "required: recipe", id="run-no-recipe"),
    ],
)
def test_usage_errors(cli, argv, needle):
    assert_one_line_error(cli(argv), 2, needle)


# --------------------------------------------------------------------------------------------------
# Positive checks: the same command lines work on a valid model
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "runtime", "fmt"),
    [
        pytest.param("onnx", "onnxruntime", "onnx", id="onnx-onnxruntime"),
        pytest.param("onnx", "openvino", "onnx", id="onnx-openvino"),
        pytest.param("ir", None, "openvino", id="ir-default-runtime"),
    ],
)
def test_bench_valid_model_json(cli, request, model, runtime, fmt):
    if runtime == "openvino" or model == "ir":
        pytest.importorskip("openvino")
    path = request.getfixturevalue("tiny_ir" if model == "ir" else "tiny_onnx")
    argv = ["bench", str(path), "--json", "--runs", "20", "--processes", "3", "--max-processes", "3"]
    argv += ["--runtime", runtime] if runtime else []
    code, out, err = cli(argv)
    assert code == 0, err
    assert "Traceback" not in err
    row = json.loads(out)
    assert row["status"] == "ok"
    assert row["runtime"] == (runtime or "openvino")
    assert row["artifact"]["format"] == fmt
    assert row["artifact"]["path"] == str(path)
    lat = row["latency_ms"]  # 20 runs in each of 3 fresh processes
    assert lat["processes"] == 3 and lat["n"] == 60 and lat["ci_basis"] == "processes"
    assert row["cold_start_ms"] > row["load_ms"] and row["peak_rss_mb"] > 0
    assert row["batch_size"] == 1
    [spec] = row["inputs"]
    assert (spec["name"], spec["dtype"], spec["shape"][1]) == ("input", "float32", 8)
    assert isinstance(spec["shape"][0], str)  # dynamic batch: 'batch' (onnxruntime) or '?' (OpenVINO)
    assert row["latency_ms"]["median"] > 0
    assert row["name"] == path.stem
    assert row["environment"]["cpu"]["model"]


def test_bench_valid_model_table(cli, tiny_onnx):
    code, out, err = cli(["bench", str(tiny_onnx), "--runs", "10", "--warmup", "1", "--threads", "1"])
    assert code == 0, err
    assert "onnxruntime" in out
    assert "95% interval of the median" in out


# --------------------------------------------------------------------------------------------------
# End to end through the real entry point (fresh interpreter; native stderr included)
# --------------------------------------------------------------------------------------------------


def _assert_console_one_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert_one_line_error((proc.returncode, proc.stdout, proc.stderr), code, *needles)
    assert proc.stdout == ""


def test_console_run_bad_recipe(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: x\nbenchmark:\n  treads: 2\n")
    proc = run_console("run", str(recipe), "--out", str(tmp_path / "out"), cwd=tmp_path)
    _assert_console_one_line(proc, 2, str(recipe), "benchmark.treads: unknown field")
    assert not (tmp_path / "out").exists()


def test_console_bench_truncated_onnx(tmp_path, tiny_onnx):
    data = tiny_onnx.read_bytes()
    model = tmp_path / "truncated.onnx"
    model.write_bytes(data[: len(data) // 2])
    proc = run_console("bench", str(model), cwd=tmp_path)
    _assert_console_one_line(proc, 2, str(model), "cannot load this model")


def test_console_bench_bad_argument(tmp_path, tiny_onnx):
    proc = run_console("bench", str(tiny_onnx), "--threads", "abc", cwd=tmp_path)
    _assert_console_one_line(proc, 2, "argument --threads", "'abc'")


def test_console_bench_unavailable_device(tmp_path, tiny_onnx):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA for onnxruntime")
    proc = run_console("bench", str(tiny_onnx), "--device", "cuda", cwd=tmp_path)
    _assert_console_one_line(proc, 3, "device 'cuda'")


def test_console_bench_corrupt_openvino_xml(tmp_path):
    pytest.importorskip("openvino")
    xml = tmp_path / "garbage.xml"
    xml.write_text("this is not an OpenVINO IR <<<\n")
    xml.with_suffix(".bin").write_bytes(b"\0" * 64)
    proc = run_console("bench", str(xml), cwd=tmp_path)
    _assert_console_one_line(proc, 2, str(xml))


def test_bench_model_that_fails_on_generated_inputs(cli, tmp_path):
    """Dynamic H/W have no safe default: named, never 1x1 in silence; a 3x3 convolution without padding
    cannot run on the 2x2 given, and the runtime's reason comes with what was fed."""
    from onnx import TensorProto, helper, numpy_helper, save

    weight = numpy_helper.from_array(np.ones((1, 1, 3, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", "w_dim"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight],
    )
    path = tmp_path / "conv.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert_one_line_error(cli(["bench", str(path), "--runs", "5"]), 2, str(path), "dimension 2 ('h') is dynamic")
    line = assert_one_line_error(
        cli(["bench", str(path), "--shape", "x=1,1,2,2", "--runs", "5"]), 2, str(path), "synthetic (seed 0)"
    )
    assert "[1, 1, 2, 2]" in line and "as given" in line  # the user sees what was fed


# --------------------------------------------------------------------------------------------------
# edgepipe run: models a user brings (a Hugging Face folder, a module file) that are not right
# --------------------------------------------------------------------------------------------------

MODULE = "import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x.flatten(1)[:, :10]\n"


def _bring_your_own(tmp_path: Path, source: str, task: str) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: x\ntask: {task}\nsource: {source}\ntargets: [{{format: onnx}}]\n")
    (tmp_path / "net.py").write_text(MODULE)
    return recipe


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        ("{kind: module, file: net.py, class: Missing}", ["net.py: no class named 'Missing' (source.class)"]),
        ("{kind: module, file: nowhere.py, class: Net}", ["source.file:", "nowhere.py: no such file"]),
        ("{kind: module, file: net.py, class: Net, weights: net.py}", ["net.py: not a valid safetensors file"]),
        ("{kind: huggingface, path: .}", ["not a Hugging Face model folder (no config.json)"]),
        ("{kind: huggingface, path: package:not_installed_anywhere/model}", ["package 'not_installed_anywhere'"]),
    ],
    ids=["no-such-class", "no-such-file", "weights-not-safetensors", "folder-not-a-model", "package-missing"],
)
def test_run_bad_model_source(cli, tmp_path, source, needles):
    task = "{kind: embedding}" if "huggingface" in source else "{kind: classification, image_size: 8}"
    recipe = _bring_your_own(tmp_path, source, task)
    result = cli(["run", str(recipe), "--out", str(tmp_path / "out")])
    assert_one_line_error(result, 2, *needles)
    assert not list((tmp_path / "out" / "artifacts").glob("*")), "nothing half-built is left"


@pytest.mark.slow
def test_run_sequence_longer_than_the_model_takes(cli, tmp_path, minilm_folder):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: x\ntask: {{kind: embedding, sequence_lengths: [16, 600]}}\n"
        f"source: {{kind: huggingface, path: {minilm_folder}}}\ntargets: [{{format: onnx}}]\n"
    )
    result = cli(["run", str(recipe), "--out", str(tmp_path / "out")])
    assert_one_line_error(result, 2, "task.sequence_lengths: 600 is longer than the model's maximum 512")
    assert not list((tmp_path / "out" / "artifacts").glob("onnx-*")), "it fails before any export"


def test_recipes_validate_without_torch_and_a_missing_torch_is_unavailable(cli, tmp_path, monkeypatch, no_training):
    """Validation imports no torch: a bad field (a family's params too) is still exit 2; a valid recipe that
    needs torch is exit 3."""
    for name in [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "edgepipe.models."))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntargets: [{format: onnx, quantize: [{method: static, preset: mixed}]}]\n")
    assert_one_line_error(cli(["run", str(bad)]), 2, "targets.0.quantize.0.preset: unknown field")
    params = tmp_path / "params.yaml"
    params.write_text(
        "name: x\nsource: {kind: train, family: llama, params: {heads: 3}}\ntask: {kind: language-modeling}\n"
    )
    assert_one_line_error(cli(["run", str(params)]), 2, "source.params: dim (128) must be divisible by heads (3)")
    good = tmp_path / "good.yaml"
    good.write_text("name: x\ntargets: [{format: onnx}]\n")
    result = cli(["run", str(good), "--out", str(tmp_path / "out")])
    assert_one_line_error(result, 3, "source 'train' needs the package 'torch'", "pip install")


def test_bench_sequence_longer_than_the_artifact_takes(cli, tmp_path, tiny_onnx):
    """The manifest's maximum length is checked before the runtime sees the input (its message would be
    a broadcast error deep inside a kernel)."""
    from edgepipe.store import ArtifactStore, StageOutput
    from edgepipe.tensors import TensorSpec

    def build(out: Path) -> StageOutput:
        (out / "model.onnx").write_bytes(tiny_onnx.read_bytes())
        spec = [TensorSpec(name="input", shape=["batch", 8], dtype="float32")]
        return StageOutput("onnx", "fp32", "model.onnx", spec, spec, preprocessing={"max_length": 8})

    art, _ = ArtifactStore(tmp_path).build(name="m", stage="test", config={}, parents={}, tools={}, build=build)
    line = assert_one_line_error(cli(["bench", str(art.path), "--seq-len", "16"]), 2, "model.onnx")
    assert "sequence length 16 is longer than the model's maximum 8" in line
