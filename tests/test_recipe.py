"""Recipe schema: the shipped recipes validate and round-trip; every section is validated by the config
class of the kind it names. (One-line CLI messages for bad recipes are in test_cli_errors.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.errors import InputError
from edgepipe.recipe import load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate_and_round_trip(path):
    recipe = load_recipe(path)
    again = parse_recipe(json.loads(recipe.model_dump_json()), "again")
    assert again.model_dump() == recipe.model_dump()
    assert recipe.targets, "a shipped recipe exports something"


def test_quickstart_is_what_the_readme_describes():
    r = load_recipe(Path(__file__).parent.parent / "recipes" / "quickstart.yaml")
    assert [t.format for t in r.targets] == ["onnx", "openvino"]
    assert all(q.precision == "int8" for t in r.targets for q in t.quantize)
    assert (r.benchmark.threads, r.benchmark.batch_size, r.task.kind) == ([2], [1], "classification")
    assert (r.source.kind, r.source.family) == ("train", "cnn")


def test_defaults_fill_a_minimal_recipe():
    r = parse_recipe({"name": "minimal"})
    assert r.task.kind == "classification" and r.source.kind == "train" and r.source.family == "cnn"
    assert r.benchmark.devices == ["cpu"] and r.targets == [] and r.stages == []
    assert r.gates.fp32_min_top1_agreement == 1.0  # the classification task's own gates


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": {"kind": "segmentation"}}, "task.kind: unknown task kind 'segmentation'"),
        ({"task": {"kind": "language-modeling", "image_size": 32}}, "task.image_size: unknown field"),
        ({"source": {"kind": "zoo"}}, "source.kind: unknown model source 'zoo'"),
        ({"source": {"kind": "huggingface"}}, "source.path: Field required"),
        ({"stages": [{"stage": "prun"}]}, "stages.0.stage: unknown stage 'prun'"),
        ({"stages": [{"stage": "finetune", "epochs": -1}]}, "stages.0.epochs: Input should be greater"),
        ({"targets": [{"format": "onnx", "quantize": [{"method": "awq"}]}]}, "targets.0.quantize.0.method: unknown"),
        (
            {"targets": [{"format": "openvino", "quantize": [{"reduce_range": True}]}]},
            "targets.0.quantize.0.reduce_range: unknown field",
        ),
        ({"targets": [{"format": "openvino", "opset": 17}]}, "targets.0.opset: unknown field"),
        (
            {"targets": [{"format": "onnx", "quantize": [{"method": "dynamic", "activation_type": "int8"}]}]},
            "targets.0.quantize.0.activation_type: unknown field",
        ),
        (
            {"targets": [{"format": "onnx", "quantize": [{}, {"method": "static"}]}]},
            "targets.0.quantize.1: makes the same variant as quantize.0",
        ),
        ({"gates": {"quantized_max_kld": 0.1}}, "gates.quantized_max_kld: unknown field"),
        ({"task": {"kind": "embedding"}}, "source.kind: the embedding task has no training data"),
        (
            {
                "task": {"kind": "embedding"},
                "source": {"kind": "huggingface", "path": "."},
                "stages": [{"stage": "finetune"}],
            },
            "stages.0.stage: the embedding task has no training data",
        ),
        ({"model": {"family": "cnn"}}, "model/train: these sections became `source:"),
        ({"source": {"kind": "train", "family": "llama"}}, "source.family: 'llama' serves language-modeling tasks"),
        ({"source": {"kind": "huggingface", "path": "."}}, "source.kind: a huggingface model serves embedding"),
        (
            {"task": {"kind": "embedding"}, "source": {"kind": "module", "file": "m.py", "class": "M"}},
            "source.kind: a module model serves classification, language-modeling tasks, not embedding",
        ),
        ({"benchmark": {"threads": [1, 0]}}, "benchmark.threads: thread counts go from 1 to 256, got 0"),
        ({"benchmark": {"sequence_lengths": [16]}}, "benchmark.sequence_lengths: the classification task has no"),
        ({"benchmark": {"processes": 5, "max_processes": 2}}, "benchmark.max_processes: 2 is fewer than processes (5)"),
        (
            {"benchmark": {"warmup": "soon"}},
            "benchmark.warmup: must be a count of calls (0 or more) or auto, got 'soon'",
        ),
        ({"benchmark": {"warmup": -1}}, "benchmark.warmup: must be a count of calls (0 or more) or auto, got -1"),
        ({"benchmark": {"target_half_width": 0}}, "benchmark.target_half_width: Input should be greater than 0"),
    ],
)
def test_each_section_is_checked_by_the_kind_it_names(data, message):
    with pytest.raises(InputError) as info:
        parse_recipe({"name": "r", **data}, "r.yaml")
    assert str(info.value).startswith(f"r.yaml: {message}"), str(info.value)


def test_language_model_gates_belong_to_the_language_model_task():
    r = parse_recipe(
        {
            "name": "r",
            "task": {"kind": "language-modeling"},
            "source": {"kind": "train", "family": "llama"},
            "gates": {"quantized_max_kld": 0.1},
        }
    )
    assert r.gates.quantized_max_kld == 0.1


@pytest.mark.parametrize(
    ("runtimes", "message"),
    [
        ({"onnx": ["nope"]}, "benchmark.runtimes.onnx: unknown runtime 'nope'"),
        ({"onnx": ["torch"]}, "benchmark.runtimes.onnx: runtime 'torch' cannot run onnx models"),
        ({"pickle": ["torch"]}, "benchmark.runtimes.pickle: unknown format"),
    ],
)
def test_extra_runtimes_are_checked_against_the_registry(runtimes, message):
    with pytest.raises(InputError, match="^r.yaml: " + message):
        parse_recipe({"name": "r", "benchmark": {"runtimes": runtimes}}, "r.yaml")


@pytest.mark.parametrize(
    ("precisions", "message"),
    [
        ({"nope": ["bf16"]}, "nope: unknown runtime"),
        ({"onnxruntime": ["bf16"]}, "runtime 'onnxruntime' has no inference precision 'bf16' \\(offers: none\\)"),
        ({"openvino": ["int3"]}, "runtime 'openvino' has no inference precision 'int3' \\(offers: bf16, f16\\)"),
    ],
)
def test_inference_precisions_are_checked_against_the_runtime(precisions, message):
    with pytest.raises(InputError, match="^r.yaml: benchmark.inference_precisions.*" + message):
        parse_recipe({"name": "r", "benchmark": {"inference_precisions": precisions}}, "r.yaml")
    assert parse_recipe({"name": "r", "benchmark": {"inference_precisions": {"openvino": ["bf16"]}}})


def test_a_lower_precision_the_runtime_did_not_run_is_not_a_result():
    from edgepipe.results import ArtifactRef, ResultRow
    from edgepipe.runner import _ran_at

    ref = ArtifactRef(name="m:bf16", format="openvino", precision="bf16", path="m.xml", size_bytes=1, sha256="a")
    row = ResultRow(artifact=ref, runtime="openvino", device="cpu", threads=2, batch_size=1, status="ok")
    job = {"options": {"inference_precision": "bf16"}}
    row.session = {"inference_precision": "f32"}
    fell_back = _ran_at(row, job)
    assert fell_back.status == "unavailable"
    assert "asked for bf16 inference, the runtime ran f32" in (fell_back.error or "")
    assert (fell_back.threads, fell_back.batch_size) == (2, 1)
    row.session = {"inference_precision": "bf16"}
    assert _ran_at(row, job).status == "ok"


def test_benchmark_sweeps_accept_one_value_or_a_list():
    r = parse_recipe({"name": "r", "benchmark": {"threads": [1, 2], "batch_size": 8}})
    assert r.benchmark.threads == [1, 2] and r.benchmark.batch_size == [8]


def test_split_sizes_must_leave_training_data():
    with pytest.raises(InputError, match=r"^r\.yaml: task: test_size \+ calibration_size must leave"):
        parse_recipe({"name": "r", "task": {"test_size": 1000, "calibration_size": 790}}, "r.yaml")


def test_quantize_variants_get_readable_distinct_names():
    from edgepipe.export.onnx import OrtDynamicQuant, OrtStaticQuant
    from edgepipe.export.openvino import NncfQuant

    variants = [
        OrtStaticQuant(),
        OrtDynamicQuant(),
        OrtStaticQuant(per_channel=False),
        OrtStaticQuant(activation_type="int8"),
        OrtStaticQuant(calibration_samples=50),
        OrtStaticQuant(reduce_range=True),
        OrtStaticQuant(calibrate_method="entropy"),
        OrtStaticQuant(op_types=["MatMul"]),
        OrtDynamicQuant(exclude_nodes=["a", "b"]),
    ]
    names = [q.variant_name("onnx") for q in variants]
    assert names[:2] == ["onnx-int8-static", "onnx-int8-dynamic"]
    assert "onnx-int8-static-ops-matmul" in names and any(n.startswith("onnx-int8-dynamic-excl-2-") for n in names)
    other = OrtDynamicQuant(exclude_nodes=["a", "c"]).variant_name("onnx")
    assert other != names[-1], "excluding other nodes is another variant"
    assert len(set(names)) == len(names)
    assert NncfQuant(preset="mixed", model_type="transformer").variant_name("openvino") == (
        "openvino-int8-static-mixed-transformer"
    )


def test_a_format_takes_only_its_own_tools_options():
    onnx = parse_recipe({"name": "r", "targets": [{"format": "onnx", "quantize": [{"reduce_range": True}]}]})
    assert onnx.targets[0].quantize[0].reduce_range
    with pytest.raises(InputError, match="appears twice"):
        parse_recipe({"name": "r", "targets": [{"format": "onnx"}, {"format": "onnx"}]})
