"""The README's and docs' examples stay true: the recipe validates, the results example has the row's
keys, the test command is the one CI runs, and every recipe field is in the reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from edgepipe.recipe import parse_recipe

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_recipe_validates():
    [recipe] = _blocks(README, "yaml")
    parsed = parse_recipe(yaml.safe_load(recipe), "README.md")
    assert parsed.benchmark.runtimes == {"onnx": ["onnxruntime", "openvino"]}
    assert [s.stage for s in parsed.stages] == ["finetune"]
    assert [q.variant_name("onnx") for q in parsed.targets[0].quantize] == ["onnx-int8-static", "onnx-int8-dynamic"]


def test_results_contract_example_is_json_with_the_row_keys():
    from edgepipe.results import RESULTS_SCHEMA_VERSION, ResultRow

    [example] = _blocks(DOCS["results.md"], "json")
    data = json.loads(example)
    assert data["schema_version"] == RESULTS_SCHEMA_VERSION and {"kind", "metrics", "parity"} <= set(data["task"])
    row = ResultRow.model_validate(data["results"][0])  # the example is a valid row, field for field
    assert row.latency_ms is not None and row.latency_ms.ci95 is not None


def _fields(cls) -> set[str]:
    return {f.alias or name for name, f in cls.model_fields.items()}


def test_inspect_example_follows_the_inspection_schema():
    from edgepipe.inspection import Inspection

    [example] = _blocks(DOCS["inspect.md"], "json")
    info = Inspection.model_validate(json.loads(example))
    documented = {line.split("|")[1] for line in DOCS["inspect.md"].splitlines() if line.startswith("| `")}
    fields = {f"`{f}`" for f in Inspection.model_fields}
    assert fields <= {part.strip() for cell in documented for part in cell.split(",")}, "a field is undocumented"
    assert info.inputs[2].shape == [] and info.details["control_flow"] == ["If"]


def test_every_recipe_field_is_in_the_reference():
    from edgepipe.export import BACKENDS, target_class
    from edgepipe.recipe import BenchmarkConfig, GenerationConfig, Recipe
    from edgepipe.stage import SOURCES, STAGES
    from edgepipe.tasks import TASK_KINDS, task_class

    classes = [Recipe, BenchmarkConfig, GenerationConfig]
    classes += [c for k in TASK_KINDS for c in (task_class(k).Config, task_class(k).Gates)]
    classes += [s.config_class() for s in (*SOURCES.values(), *STAGES.values())]
    for fmt in BACKENDS:
        classes += [target_class(fmt), *target_class(fmt).quantizers.values()]
    reference = DOCS["recipes.md"]
    missing = sorted({f"{c.__name__}.{f}" for c in classes for f in _fields(c) if f"`{f}`" not in reference})
    assert not missing, f"fields not in docs/recipes.md: {missing}"
    for name in [*TASK_KINDS, *SOURCES, *STAGES, *BACKENDS]:
        assert f": {name}" in reference, f"docs/recipes.md has no section for {name}"


@pytest.mark.parametrize("name", sorted(DOCS))
def test_links_between_docs_resolve(name):
    for target in re.findall(r"\]\(([\w./-]+\.md)", DOCS[name] + (README if name == "recipes.md" else "")):
        assert (ROOT / "docs" / Path(target).name).is_file(), target


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line)
    assert command in README
