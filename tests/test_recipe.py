"""Recipe schema: the shipped recipes validate, round-trip, and cross-field rules hold.

(One-line error messages for bad recipes are covered through the CLI in test_cli_errors.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepipe.errors import InputError
from edgepipe.recipe import Recipe, load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate_and_round_trip(path):
    recipe = load_recipe(path)
    again = Recipe.model_validate_json(recipe.model_dump_json())
    assert again == recipe
    assert recipe.targets, "a shipped recipe exports something"


def test_quickstart_is_what_the_readme_describes():
    r = load_recipe(Path(__file__).parent.parent / "recipes" / "quickstart.yaml")
    assert [t.format for t in r.targets] == ["onnx", "openvino"]
    assert all(q.precision == "int8" for t in r.targets for q in t.quantize)
    assert (r.benchmark.threads, r.benchmark.batch_size, r.task.name) == (2, 1, "digits")


def test_defaults_fill_a_minimal_recipe():
    r = parse_recipe({"name": "minimal"})
    assert r.model.family == "cnn" and r.benchmark.devices == ["cpu"] and r.targets == []


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


def test_openvino_may_also_run_onnx():
    r = parse_recipe({"name": "r", "benchmark": {"runtimes": {"onnx": ["openvino"]}}})
    assert r.benchmark.runtimes == {"onnx": ["openvino"]}


def test_split_sizes_must_leave_training_data():
    with pytest.raises(InputError, match=r"^r\.yaml: task: test_size \+ calibration_size must leave"):
        parse_recipe({"name": "r", "task": {"test_size": 1000, "calibration_size": 790}}, "r.yaml")


def test_quantize_variants_get_distinct_names():
    from edgepipe.pipeline import variant_name
    from edgepipe.recipe import QuantizeConfig

    variants = [
        QuantizeConfig(),
        QuantizeConfig(method="dynamic"),
        QuantizeConfig(per_channel=False),
        QuantizeConfig(activation_type="int8"),
        QuantizeConfig(calibration_samples=50),
        QuantizeConfig(reduce_range=True),
    ]
    names = [variant_name("onnx", q) for q in variants]
    assert names[0] == "onnx-int8-static"
    assert len(set(names)) == len(names)


def test_format_rules_come_from_the_format_backend():
    with pytest.raises(InputError, match=r"targets\.0\.quantize\.0\.reduce_range: an onnxruntime option"):
        parse_recipe({"name": "r", "targets": [{"format": "openvino", "quantize": [{"reduce_range": True}]}]}, "r")
    onnx = parse_recipe({"name": "r", "targets": [{"format": "onnx", "quantize": [{"reduce_range": True}]}]})
    assert onnx.targets[0].quantize[0].reduce_range
    with pytest.raises(InputError, match="appears twice"):
        parse_recipe({"name": "r", "targets": [{"format": "onnx"}, {"format": "onnx"}]})
