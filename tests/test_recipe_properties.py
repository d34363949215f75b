"""Property-based: whatever a recipe holds, the parser either accepts it or raises one InputError whose
single line names the recipe file; never a traceback from inside (hypothesis generates the recipes)."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgepipe.errors import InputError  # noqa: E402
from edgepipe.recipe import load_recipe, parse_recipe  # noqa: E402

# Names a recipe really uses, so that generated recipes reach deep into validation, and some that it doesn't.
KEYS = [
    "version", "name", "seed", "task", "source", "stages", "targets", "benchmark", "gates", "output_dir",
    "kind", "dataset", "image_size", "test_size", "calibration_size", "sequence_lengths", "context_length",
    "family", "params", "epochs", "batch_size", "learning_rate", "path", "format", "quantize", "method",
    "type", "mode", "group_size", "per_channel", "threads", "runs", "warmup", "max_seconds", "devices",
    "runtimes", "generation", "memory_budget_mb", "stage", "channels", "dim", "layers", "heads", "unknown",
]  # fmt: skip
VALUES = [
    "classification", "language-modeling", "embedding", "digits", "stdlib-text", "train", "huggingface",
    "module", "cnn", "llama", "onnx", "openvino", "tflite", "gguf", "static", "dynamic", "weights", "Q4_K_M",
    "cpu", "cuda", "finetune", "../outside", "/etc", "",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(VALUES),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=25,
)
recipes = st.one_of(
    values,
    st.fixed_dictionaries(
        {"name": st.sampled_from(["x", ""]), "task": values, "source": values},
        optional={"targets": values, "benchmark": values, "gates": values, "stages": values, "seed": values},
    ),
)


def _one_line(e: InputError, source: str) -> None:
    text = str(e)
    assert "\n" not in text.strip() and text.startswith(f"{source}: "), text


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes)
@example({"name": "x", "task": {"\n": None}, "source": None})  # a key that is a line break: shown quoted
def test_any_recipe_validates_or_gives_one_line(data):
    try:
        parse_recipe(data, "r.yaml")
    except InputError as e:
        _one_line(e, "r.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_recipe_file_validates_or_gives_one_line(tmp_path, raw):
    path = tmp_path / "r.yaml"
    path.write_bytes(raw)
    try:
        load_recipe(path)
    except InputError as e:
        _one_line(e, str(path))
