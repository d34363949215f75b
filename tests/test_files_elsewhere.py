"""Files made elsewhere: models built here with onnx.helper (not edgepipe's exports) with dynamic spatial
dimensions, several inputs and outputs, an int64 scalar, an If subgraph and a custom operator; their
OpenVINO IR; `inspect` against its schema, `bench --shape / --input / --save-outputs / --runtime a,b`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import one_process
from edgepipe.benchmarks.sample_models import conv_onnx, multi_onnx
from edgepipe.inspection import Inspection


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("elsewhere")
    conv, multi, custom = conv_onnx(d / "det.onnx"), multi_onnx(d / "vad.onnx"), multi_onnx(d / "custom.onnx", True)
    import openvino as ov

    ov.save_model(ov.convert_model(str(multi)), str(d / "vad.xml"), compress_to_fp16=False)
    lonely = d / "lonely"
    lonely.mkdir()
    shutil.copy(d / "vad.xml", lonely / "vad.xml")  # without its .bin
    rng = np.random.default_rng(1)
    arrays = {
        "a": rng.standard_normal((2, 4)).astype(np.float32),
        "b": rng.standard_normal((2, 4)).astype(np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }
    for name, array in arrays.items():
        np.save(d / f"{name}.npy", array)
    return {"conv": conv, "multi": multi, "custom": custom, "ir": d / "vad.xml", "lonely": lonely / "vad.xml",
            "dir": d, "arrays": arrays}  # fmt: skip


def _stdout(capsys, argv):
    """Stdout of ``edgepipe ARGV`` run in-process, which must succeed."""
    from edgepipe.cli import main

    capsys.readouterr()
    code = main(one_process(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_a_dynamic_spatial_dimension_needs_a_shape(capsys, cli_run, files):
    code, err = cli_run(["bench", str(files["conv"]), "--runs", "5"])
    assert code == 2
    assert "input 'image' [batch, 3, height, width]: dimension 2 ('height') is dynamic" in err
    assert "--shape image=1,3,N,N" in err
    row = json.loads(
        _stdout(capsys, ["bench", str(files["conv"]), "--shape", "image=1,3,40,48", "--runs", "5", "--json"])
    )
    assert row["status"] == "ok" and row["latency_ms"]["n"] == 5


def test_shape_errors_name_the_input(cli_run, files):
    code, err = cli_run(["bench", str(files["conv"]), "--shape", "image=1,4,40,48"])
    assert code == 2 and "--shape image: [1, 4, 40, 48] does not fit the input's shape [batch, 3, height, width]" in err
    code, err = cli_run(["bench", str(files["conv"]), "--shape", "picture=1,3,8,8"])
    assert code == 2 and "--shape picture: the model has no input 'picture' (inputs: ['image'])" in err
    code, err = cli_run(["bench", str(files["conv"]), "--shape", "image=1,x"])
    assert code == 2 and "--shape image=1,x: expected NAME=D1,D2,..." in err


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_given_inputs_are_fed_exactly_and_outputs_saved_bit_for_bit(capsys, files, runtime, tmp_path):
    d = files["dir"]
    args = [f"--input={n}={d / n}.npy" for n in ("a", "b", "sr")]
    model = files["multi"] if runtime == "onnxruntime" else files["ir"]
    row = json.loads(_stdout(capsys, ["bench", str(model), "--runtime", runtime, *args, "--save-outputs",
                                      str(tmp_path / "out"), "--runs", "5", "--threads", "1", "--json"]))  # fmt: skip
    assert row["input_source"].startswith("given: a from") and "sr from" in row["input_source"]
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert saved == ["0_picked.npy", "1_product.npy"]
    feeds = files["arrays"]
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        bare = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    else:
        import openvino as ov

        compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_NUM_THREADS": 1})
        result = compiled(feeds)
        bare = [result[o] for o in compiled.outputs]
    for name, expected in zip(saved, bare, strict=True):
        got = np.load(tmp_path / "out" / name)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), name
    # sr = 16000 > 8000: the If took its then-branch
    assert np.array_equal(np.load(tmp_path / "out" / "0_picked.npy"), feeds["a"] + feeds["b"])


def test_given_inputs_are_checked_against_the_model(cli_run, files, tmp_path):
    wrong = tmp_path / "a64.npy"
    np.save(wrong, files["arrays"]["a"].astype(np.float64))
    code, err = cli_run(["bench", str(files["multi"]), f"--input=a={wrong}"])
    assert code == 2 and f"--input a: {wrong} holds float64, the input takes float32" in err
    bad = tmp_path / "a3.npy"
    np.save(bad, np.zeros((2, 3), dtype=np.float32))
    code, err = cli_run(["bench", str(files["multi"]), f"--input=a={bad}"])
    assert code == 2 and "has shape [2, 3], the input takes [batch, 4]" in err
    # an input that disagrees with another on a shared dimension (a mask shorter than its ids)
    short = tmp_path / "b1.npy"
    np.save(short, np.zeros((1, 4), dtype=np.float32))
    code, err = cli_run(["bench", str(files["multi"]), f"--input=a={files['dir'] / 'a.npy'}", f"--input=b={short}"])
    assert code == 2 and "b: its 'batch' dimension is 1, but a gives 2" in err and "\n" not in err.strip()
    code, err = cli_run(["bench", str(files["multi"]), f"--input=a={tmp_path / 'none.npy'}"])
    assert code == 2 and "does not exist" in err
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    code, err = cli_run(["bench", str(files["multi"]), f"--input=a={pickled}"])
    assert code == 2 and "not a readable .npy array" in err  # never unpickled


def test_synthetic_integer_scalar_is_said_and_runs(capsys, files):
    row = json.loads(_stdout(capsys, ["bench", str(files["multi"]), "--runs", "5", "--json"]))
    assert "sr scalar values in [0, 99] (range unknown)" in row["input_source"]
    assert row["input_source"].startswith("synthetic (seed 0)") and "a uniform in [-1, 1)" in row["input_source"]


def test_several_runtimes_on_identical_inputs_with_parity(capsys, files):
    d = files["dir"]
    args = ["bench", str(files["multi"]), "--runtime", "onnxruntime,openvino", "--runs", "5"]
    args += [f"--input={n}={d / n}.npy" for n in ("a", "b", "sr")]
    rows = json.loads(_stdout(capsys, [*args, "--json"]))
    assert [r["runtime"] for r in rows] == ["onnxruntime", "openvino"]
    assert rows[0]["parity"] is None
    assert rows[1]["parity"]["max_abs_diff_vs_first"] <= 1e-6
    assert "max diff vs first" in _stdout(capsys, args)
    # --shape fixes `batch` by name for onnxruntime; OpenVINO has no dimension names: it still gets the same arrays
    rows = json.loads(_stdout(capsys, [*args[:6], "--shape", "a=2,4", "--json"]))
    assert (
        rows[1]["parity"]["max_abs_diff_vs_first"] == 0.0 and "the onnxruntime run's input" in rows[1]["input_source"]
    )


def test_a_scalar_first_input_and_a_one_dimensional_sequence(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["sr"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["a", "f"], ["y"]),
         helper.make_node("Cast", ["tokens"], ["t"], to=TensorProto.FLOAT)],
        "g",
        [helper.make_tensor_value_info("sr", TensorProto.INT64, []),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("tokens", TensorProto.INT64, ["sequence_length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, ["sequence_length"])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    row = json.loads(_stdout(capsys, ["bench", str(tmp_path / "m.onnx"), "--runs", "3", "--seq-len", "24", "--json"]))
    assert row["batch_size"] == 1 and "sequence_length=24" in row["input_source"]


def test_inspect_reads_every_input_output_operator_and_subgraph(capsys, files):
    info = Inspection.model_validate(json.loads(_stdout(capsys, ["inspect", str(files["multi"]), "--json"])))
    assert info.format == "onnx" and info.format_version == "opset 17, IR 9"
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [
        ("a", ["batch", 4], "float32"), ("b", ["batch", 4], "float32"), ("sr", [], "int64")
    ]  # fmt: skip
    assert [t.name for t in info.outputs] == ["picked", "product"]
    assert info.operators == {"Add": 1, "Greater": 1, "If": 1, "Mul": 1, "Sub": 1}  # the If's branches counted
    assert info.details["control_flow"] == ["If"] and info.custom_operators == []
    assert info.model_dump()["weights"] == {"int64": {"count": 1, "bytes": 8}}  # the If's threshold
    assert len(info.sha256) == 64 and info.size_bytes == files["multi"].stat().st_size
    assert "sr  []  int64" in _stdout(capsys, ["inspect", str(files["multi"])])


def test_inspect_an_openvino_ir_and_its_missing_weights(capsys, cli_run, files):
    info = Inspection.model_validate(json.loads(_stdout(capsys, ["inspect", str(files["ir"]), "--json"])))
    assert info.format == "openvino" and info.format_version.startswith("IR v")
    assert [f.path.rsplit(".", 1)[1] for f in info.files] == ["xml", "bin"]
    assert {t.name for t in info.inputs} == {"a", "b", "sr"} and "If" in info.operators
    for verb in (["inspect"], ["bench", "--runs", "3"]):
        code, err = cli_run([*verb, str(files["lonely"])])
        assert code == 2 and str(files["lonely"]) in err and "vad.bin" in err, err


def test_a_custom_operator_is_named(capsys, cli_run, files):
    info = Inspection.model_validate(json.loads(_stdout(capsys, ["inspect", str(files["custom"]), "--json"])))
    assert info.custom_operators == ["my.domain.MyOp"]
    code, err = cli_run(["bench", str(files["custom"]), "--runs", "3"])
    assert code == 2 and str(files["custom"]) in err and "MyOp" in err, err


def test_inspect_a_gguf(capsys, lm):
    _, _, artifacts, _ = lm
    path = artifacts[("gguf", "q4_k_m")].model_file
    info = Inspection.model_validate(json.loads(_stdout(capsys, ["inspect", str(path), "--json"])))
    assert info.format == "gguf" and info.format_version == "GGUF v3"
    assert info.details["architecture"] == "llama" and info.details["tokenizer"] == "gpt2"
    assert info.details["parameters"] > 0 and info.details["context_length"] == 64
    assert sum(w.count for w in info.weights.values()) == sum(info.details["tensor_types"].values())


@pytest.mark.parametrize("name", ["det.onnx", "vad.xml"])
def test_inspect_bad_files_get_one_line(cli_run, files, tmp_path, name):
    data = (files["dir"] / name).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: len(data) // 3])
    if name.endswith(".xml"):
        shutil.copy(files["dir"] / "vad.bin", tmp_path / "vad.bin")
    code, err = cli_run(["inspect", str(bad)])
    assert code == 2 and err.startswith(f"edgepipe: error: {bad}"), err
