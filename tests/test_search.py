"""A quantize step held to the task's gates: it tries the tool's alternatives when the requested configuration
misses them, ships the first that meets them (or the best, said so), and records every attempt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgepipe.configs import QuantizeConfig
from edgepipe.export.onnx import read_io_spec
from edgepipe.export.onnx_blame import outlier_ranking
from edgepipe.search import MAX_ATTEMPTS, quantize_to_bar, summary
from edgepipe.stage import StageContext
from edgepipe.store import StageOutput
from edgepipe.tasks import task_class


class Noisy(QuantizeConfig):
    """A stand-in quantizer whose damage is a config option: it scales noise added to every weight."""

    method: Literal["noisy"] = "noisy"
    noise: float = 1.0
    tries: list[float] = [0.5, 0.0]

    def alternatives(self, parent: Any, ctx: Any) -> Iterator[QuantizeConfig]:
        for n in self.tries:
            yield self.model_copy(update={"noise": n})


def _noisy_quantize(parents, config: Noisy, out_dir: Path, ctx) -> StageOutput:
    model = onnx.load(str(parents["model"].model_file))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 1:
            noisy = w + config.noise * w.std() * rng.standard_normal(w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(out_dir / "model.onnx"))
    inputs, outputs = read_io_spec(out_dir / "model.onnx")
    return StageOutput("onnx", "int8", "model.onnx", inputs, outputs, quantization={"tool": "noise"})


def _ctx(stage_context: StageContext, **gates: Any) -> StageContext:
    gate = task_class("classification").Gates.model_validate(gates)
    return StageContext(stage_context.task, stage_context.seed, gates=gate)


def test_a_missed_bar_tries_the_alternatives_and_ships_the_first_that_meets_it(exported, stage_context, tmp_path):
    fp32 = exported[("onnx", "fp32")]
    ctx = _ctx(stage_context, quantized_max_accuracy_drop=0.02)
    out = _noisy_quantize  # the requested noise wrecks the model; 0.0 is the FP32 model itself
    shipped = quantize_to_bar(out, {"model": fp32}, Noisy(), tmp_path, ctx)
    search = shipped.quantization["search"]
    assert search["met_bar"] and search["chosen"] == len(search["attempts"]) - 1
    first = search["attempts"][0]
    assert first["changes"] == {} and first["failures"] and first["metrics"]["accuracy"] < 0.5
    assert search["attempts"][-1]["failures"] == [] and search["attempts"][-1]["changes"] == {"noise": 0.0}
    # the shipped file is the chosen attempt's, and no try folder is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "model.onnx")).graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32.model_file)).graph.initializer}
    assert all(np.array_equal(weights[k], original[k]) for k in original)
    assert "missed the bar" in summary("x", shipped.quantization) and "which meets it" in summary(
        "x", shipped.quantization
    )


def test_when_nothing_meets_the_bar_the_best_is_shipped_and_said_so(exported, stage_context, tmp_path):
    fp32 = exported[("onnx", "fp32")]
    ctx = _ctx(stage_context, quantized_max_accuracy_drop=0.0, quantized_min_top1_agreement=1.0)
    shipped = quantize_to_bar(_noisy_quantize, {"model": fp32}, Noisy(tries=[0.3, 2.0]), tmp_path, ctx)
    search = shipped.quantization["search"]
    assert not search["met_bar"] and len(search["attempts"]) == 3
    accuracy = [a["metrics"]["accuracy"] for a in search["attempts"]]
    assert search["chosen"] == int(np.argmax(accuracy)) == 1
    said = summary("x", shipped.quantization, "accuracy")
    assert said is not None and "no configuration of 3 met it" in said and "rejected: as requested accuracy" in said


def test_without_gates_or_with_search_off_the_tool_runs_once(exported, stage_context, tmp_path):
    fp32 = exported[("onnx", "fp32")]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    plain = quantize_to_bar(_noisy_quantize, {"model": fp32}, Noisy(), tmp_path / "a", stage_context)
    assert "search" not in plain.quantization
    off = Noisy(search=False)
    strict = _ctx(stage_context, quantized_max_accuracy_drop=0.0)
    assert "search" not in quantize_to_bar(_noisy_quantize, {"model": fp32}, off, tmp_path / "b", strict).quantization
    assert off.variant_name("onnx").endswith("-as-is") and not Noisy().variant_name("onnx").endswith("-as-is")


def test_a_real_quantizer_that_meets_the_bar_is_checked_once_and_recorded(exported, stage_context, tmp_path):
    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtStaticQuant

    ctx = _ctx(stage_context, quantized_max_accuracy_drop=0.05, quantized_min_top1_agreement=0.9)
    shipped = quantize_to_bar(
        onnx_backend.quantize, {"model": exported[("onnx", "fp32")]}, OrtStaticQuant(), tmp_path, ctx
    )
    search = shipped.quantization["search"]
    assert search["met_bar"] and len(search["attempts"]) == 1 and search["tuning_data"]["split"] == "calibration"
    assert search["bar"]["quantized_max_accuracy_drop"] == 0.05
    assert shipped.quantization["tool"] == "onnxruntime.quantization.quantize_static"


def _outlier_model(path: Path) -> None:
    """x -> MatMul W1 -> scaled by a per-feature vector with one huge entry -> MatMul W2 -> y."""
    rng = np.random.default_rng(0)
    scale = np.ones(16, dtype=np.float32)
    scale[3] = 500.0  # one feature carries an outlier: the second product's input has a huge crest factor
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w1"),
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("Mul", ["h", "scale"], ["hs"], name="stretch"),
        helper.make_node("MatMul", ["hs", "w2"], ["y"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "outlier",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_layer_whose_input_has_an_outlier_ranks_first_on_onnx_and_openvino(tmp_path):
    _outlier_model(tmp_path / "m.onnx")
    feeds = [{"x": np.random.default_rng(i).standard_normal((4, 16)).astype(np.float32)} for i in range(3)]
    assert outlier_ranking(tmp_path / "m.onnx", feeds) == ["second", "first"]

    ov = pytest.importorskip("openvino")
    from edgepipe.export.openvino_blame import outlier_ranking as ov_ranking

    model = ov.convert_model(str(tmp_path / "m.onnx"))
    ov.save_model(model, str(tmp_path / "m.xml"), compress_to_fp16=False)
    products = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    after_stretch = next(op for op in products if op.input_value(0).get_node().get_type_name() == "Multiply")
    ranked = ov_ranking(tmp_path / "m.xml", feeds)
    assert len(ranked) == 2 and ranked[0] == after_stretch.get_friendly_name()


class Plain(QuantizeConfig):
    """A tool with no other options to offer."""

    method: Literal["plain"] = "plain"
    noise: float = 1.0


class Breaking(Noisy):
    """Offers one alternative, then fails while making the next (as a layer ranking can)."""

    def alternatives(self, parent: Any, ctx: Any) -> Iterator[QuantizeConfig]:
        yield self.model_copy(update={"noise": 0.8})
        raise RuntimeError("ranking failed")


def test_a_tool_without_alternatives_is_not_searched(exported, stage_context, tmp_path):
    strict = _ctx(stage_context, quantized_max_accuracy_drop=0.0)
    shipped = quantize_to_bar(_noisy_quantize, {"model": exported[("onnx", "fp32")]}, Plain(), tmp_path, strict)
    assert not Plain().has_alternatives() and Noisy().has_alternatives()
    assert "search" not in shipped.quantization and (tmp_path / "model.onnx").is_file()


def test_alternatives_that_fail_to_be_made_end_the_search_with_what_was_tried(exported, stage_context, tmp_path):
    strict = _ctx(stage_context, quantized_max_accuracy_drop=0.0)
    shipped = quantize_to_bar(_noisy_quantize, {"model": exported[("onnx", "fp32")]}, Breaking(), tmp_path, strict)
    search = shipped.quantization["search"]
    assert not search["met_bar"] and len(search["attempts"]) == 2
    assert search["attempts"][-1]["failures"][-1] == "no further alternatives: RuntimeError: ranking failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_search_over_a_real_tool_ships_the_same_bytes_twice(exported, stage_context, tmp_path, monkeypatch):
    """A bar no configuration meets walks through every alternative of onnxruntime's static quantizer
    (operator types, calibration, layers kept in float by their ranking): twice, the same choice and bytes."""
    import hashlib

    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtStaticQuant

    task = type(stage_context.task)
    monkeypatch.setattr(task, "gate_failures", classmethod(lambda cls, row, gates, ref: ["a bar nothing meets"]))
    strict = _ctx(stage_context)
    shipped = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        out = quantize_to_bar(
            onnx_backend.quantize, {"model": exported[("onnx", "fp32")]}, OrtStaticQuant(), tmp_path / run, strict
        )
        digest = hashlib.sha256((tmp_path / run / "model.onnx").read_bytes()).hexdigest()
        search = out.quantization["search"]
        blamed = [a["blame"]["ranked"] for a in search["attempts"] if "blame" in a]
        shipped.append((digest, search["chosen"], [a["changes"] for a in search["attempts"]], blamed))
    assert shipped[0] == shipped[1]
    changes, blamed = shipped[0][2], shipped[0][3]
    # Nothing meets this bar: every attempt is blamed, and each next one keeps a blamed quantizer's nodes
    # in float, until the attempts or the fixes run out.
    assert changes[0] == {} and len(blamed) == len(changes) and 2 < len(changes) <= MAX_ATTEMPTS
    first = {n for s in blamed[0] for n in s["nodes"]}
    assert set(changes[1]["exclude_nodes"]) <= first


def test_exclude_nodes_that_name_no_node_are_one_line_naming_the_field_and_file(exported, stage_context, tmp_path):
    from edgepipe.errors import InputError
    from edgepipe.export import onnx as onnx_backend
    from edgepipe.export.onnx import OrtDynamicQuant

    fp32 = exported[("onnx", "fp32")]
    with pytest.raises(InputError) as info:
        onnx_backend.quantize({"model": fp32}, OrtDynamicQuant(exclude_nodes=["nope"]), tmp_path, stage_context)
    said = str(info.value)
    assert said.startswith("exclude_nodes: ") and str(fp32.model_file) in said and "'nope'" in said
    assert "\n" not in said and not (tmp_path / "prepared.onnx").exists()
