"""The README's examples stay true: its recipe validates, its commands are the ones CI runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from edgepipe.recipe import parse_recipe

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_recipe_validates():
    [recipe] = _blocks("yaml")
    parsed = parse_recipe(yaml.safe_load(recipe), "README.md")
    assert parsed.benchmark.runtimes == {"onnx": ["onnxruntime", "openvino"]}


def test_readme_results_contract_example_is_json_with_the_row_keys():
    [example] = _blocks("json")
    data = json.loads(example)
    row = data["results"][0]
    assert {"artifact", "runtime", "device", "threads", "latency_ms", "metrics", "parity"} <= set(row)
    assert {"n", "median", "p90", "p99", "ci95"} <= set(row["latency_ms"])


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line)
    assert command in README
