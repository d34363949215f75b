"""End to end: a tiny recipe through every stage, the results contract, caching and gates."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from conftest import TINY_RECIPE
from edgepipe.cli import main
from edgepipe.recipe import load_recipe
from edgepipe.results import RESULTS_SCHEMA_VERSION

pytestmark = pytest.mark.slow

ROW_KEYS = {
    "artifact",
    "runtime",
    "device",
    "threads",
    "batch_size",
    "status",
    "latency_ms",
    "metrics",
    "parity",
    "load_ms",
    "peak_rss_mb",
    "runtime_version",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    recipe = folder / "tiny.yaml"
    # Two processes per artifact, in turn: the between-process statistics end to end.
    bench = {**TINY_RECIPE["benchmark"], "processes": 2, "max_processes": 2}
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "benchmark": bench, "output_dir": str(folder / "out")}))
    logs: list[str] = []
    from edgepipe.runner import run_recipe

    result = run_recipe(recipe, log=logs.append)
    return folder, recipe, result, logs


def test_results_follow_the_contract(run_dir):
    folder, _, result, _ = run_dir
    data = json.loads((folder / "out" / "results.json").read_text())
    assert data["schema_version"] == RESULTS_SCHEMA_VERSION
    assert data["task"]["kind"] == "classification" and data["task"]["metrics"][0]["name"] == "accuracy"
    assert {"cpu", "packages", "python", "os", "timestamp"} <= set(data["environment"])
    assert data["environment"]["cpu"]["model"] and "onnxruntime" in data["environment"]["packages"]
    # Each INT8 row explained once, named by its own precision, read against its FP32 file.
    assert sorted(data["explain"]) == ["onnx-int8-static@onnxruntime", "openvino-int8-static@openvino"]
    for label, why in data["explain"].items():
        assert why["answer"].startswith("INT8 is x") and why["reference"]["by_precision"], label
    rows = data["results"]
    assert [(r["artifact"]["format"], r["artifact"]["precision"]) for r in rows] == [
        ("torch", "fp32"),
        ("onnx", "fp32"),
        ("onnx", "int8"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
    ]
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        assert set(row) >= ROW_KEYS
        assert {"format", "precision", "path", "size_bytes", "sha256"} <= set(row["artifact"])
        lat = row["latency_ms"]
        assert lat["n"] == 40 and lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["processes"] == 2 and len(lat["process_medians"]) == 2 and lat["ci_basis"] == "processes"
        assert lat["ci95"][0] <= min(lat["process_medians"]) <= max(lat["process_medians"]) <= lat["ci95"][1]
        assert len(row["samples_ms"]) == 40 and row["cold_start_ms"] > row["load_ms"] > 0
        assert row["throughput_per_s"] > 0 and row["session"]["process_threads"] >= 1
        assert 0.8 < row["metrics"]["accuracy"] <= 1.0
        assert row["threads"] == 1 and row["task"] == "classification" and row["nonfinite_outputs"] == 0
        assert row["input_source"] == "evaluation data"
    for row in rows[1:]:
        assert row["parity"]["top1_agreement"] >= (1.0 if row["artifact"]["precision"] == "fp32" else 0.95)
        assert row["gates"]["passed"]
    int8 = [r for r in rows if r["artifact"]["precision"] == "int8"]
    assert all("ratio" in r["vs_fp32"] and "accuracy_delta" in r["vs_fp32"] for r in int8)
    for r in int8:  # the ratio's interval, from the two processes of each, paired
        lo, hi = r["vs_fp32"]["ci95"]
        assert lo <= r["vs_fp32"]["ratio"] <= hi and r["vs_fp32"]["significant"] == (lo > 1 or hi < 1)
    assert result.gate_failures == [] and result.unchecked is None


def test_markdown_and_csv_are_renderings_of_the_same_rows(run_dir):
    folder, *_ = run_dir
    md = (folder / "out" / "results.md").read_text()
    assert "| artifact" in md and "Machine:" in md and "onnxruntime" in md
    with open(folder / "out" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    data = json.loads((folder / "out" / "results.json").read_text())
    assert len(rows) == len(data["results"])
    assert float(rows[2]["latency_median_ms"]) == pytest.approx(data["results"][2]["latency_ms"]["median"])


def test_rerun_skips_finished_stages_and_force_rebuilds(run_dir, capsys):
    folder, recipe, _, logs = run_dir
    assert not any("cached" in line for line in logs if line.startswith(("[train]", "[export", "[quantize")))
    out = str(folder / "out")
    assert main(["run", str(recipe), "--out", out]) == 0
    stages = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("[train]", "[export", "[quantize"))
    ]
    assert len(stages) == 5 and all("cached" in line for line in stages)

    # A corrupted artifact is not trusted: only that stage (and nothing upstream) is rebuilt.
    onnx_int8 = next((folder / "out" / "artifacts").glob("onnx-int8-*"))
    (onnx_int8 / "model.onnx").write_bytes(b"truncated")
    assert main(["run", str(recipe), "--out", out]) == 0
    stages = [line for line in capsys.readouterr().out.splitlines() if "cached" in line or "done in" in line]
    rebuilt = [line for line in stages if "done in" in line and line.startswith("[")]
    assert [line.split("]")[0] for line in rebuilt] == ["[quantize onnx-int8-static"]


def test_failed_gate_writes_results_and_exits_4(run_dir, tmp_path, capsys):
    _, recipe, *_ = run_dir
    strict = load_recipe(recipe).model_dump(mode="json")
    strict["gates"]["fp32_max_abs_diff"] = 0.0  # no export is bit-exact with torch
    strict["targets"] = [{"format": "onnx"}]
    strict["benchmark"]["reference"] = True
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(strict))
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "max abs diff" in err[0]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["results"][1]["gates"]["passed"] is False


def test_missing_export_package_is_unavailable_not_a_crash(tmp_path, monkeypatch, capsys):
    """A recipe whose exporter's package is missing exits 3 with a pip hint, before any training."""
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "targets": [{"format": "openvino"}]}))
    monkeypatch.setitem(sys.modules, "openvino", None)
    code = main(["run", str(recipe), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1
    assert "target 'openvino'" in err[0] and "'openvino'" in err[0] and "pip install" in err[0]
    assert not (tmp_path / "out" / "artifacts").exists() or not any((tmp_path / "out" / "artifacts").iterdir())


def test_a_run_where_no_runtime_is_available_does_not_pass(tmp_path, monkeypatch, capsys):
    """Every benchmark row unavailable: results are written, and the exit code says nothing was checked."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "targets": [{"format": "onnx"}], "benchmark": {
        **TINY_RECIPE["benchmark"], "devices": ["npu"], "reference": False}}))  # fmt: skip
    code = main(["run", str(recipe), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "no artifact could be checked" in err[0]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]["status"] == "unavailable"


def test_the_run_is_recorded_compared_and_reported(run_dir, tmp_path, capsys):
    folder, _, result, logs = run_dir
    run_id = result.results["run_id"]
    assert any(line.startswith(f"recorded as {run_id}") for line in logs)
    assert main(["history", "--recipe", "tiny"]) == 0 and run_id in capsys.readouterr().out
    # the run against itself (by id, then as a file; the folder itself is re-run by other tests here)
    same = tmp_path / "same.json"
    same.write_text(json.dumps(result.results))
    assert main(["compare", run_id, str(same)]) == 0
    assert "no regression beyond the measured noise" in capsys.readouterr().out
    # one row planted 3x slower in every process (its processes made steady first: the real ones may
    # spread too widely on a busy machine for two of them to tell 3x apart): a regression, exit 5
    data = json.loads((folder / "out" / "results.json").read_text())
    steady, slower = tmp_path / "steady.json", tmp_path / "slower.json"
    data["results"][1]["latency_ms"]["process_medians"] = [1.0, 1.02]
    steady.write_text(json.dumps(data))
    data["results"][1]["latency_ms"]["process_medians"] = [3.0, 3.06]
    data["results"][1]["latency_ms"]["median"] *= 3
    slower.write_text(json.dumps(data))
    assert main(["compare", str(steady), str(slower)]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 latency and 0 quality regression(s)" in err[0] and "onnx-fp32" in err[0]
    # the same latency, 5 points less accuracy: a quality regression, exit 5 as well
    data["results"][1]["latency_ms"]["process_medians"] = [1.0, 1.02]
    data["results"][1]["metrics"]["accuracy"] -= 0.05
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(data))
    assert main(["compare", str(steady), str(worse)]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0 latency and 1 quality regression(s)" in err[0] and "accuracy worse" in err[0]
    # the HTML report of the run: four plots in one file
    assert main(["report", str(folder / "out")]) == 0
    page = (folder / "out" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4
