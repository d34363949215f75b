"""End to end, the shipped recipes of three model kinds (made smaller where they train): every exported
artifact is checked against the torch reference on its own runtime, through the real runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edgepipe.recipe import parse_recipe
from edgepipe.runner import run_recipe

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).parent.parent / "recipes"


def _run(name: str, tmp_path: Path, **overrides):
    data = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    recipe = parse_recipe(data, f"{name}.yaml", RECIPES)
    result = run_recipe(recipe, out_dir=tmp_path / "out")
    return result, {(r.name, r.runtime, r.sequence_length): r for r in result.rows}


def test_minilm_from_its_folder_agrees_with_torch_on_every_runtime_at_every_length(tmp_path, minilm_folder):
    result, rows = _run(
        "minilm",
        tmp_path,
        task={"sequence_lengths": [16, 32, 128], "eval_per_length": 8},
        benchmark={"warmup": 2, "runs": 10, "reference": False},
    )
    assert result.gate_failures == [] and result.unchecked is None
    assert {(n, rt) for n, rt, _ in rows} == {("onnx-fp32", "onnxruntime"), ("openvino-fp32", "openvino")}
    for (_, _, length), row in rows.items():
        assert row.status == "ok" and length in (16, 32, 128)
        assert row.latency_ms is not None and row.latency_ms.n == 10
        assert row.metrics["cosine_worst"] >= 0.9999 and row.metrics["nn_agreement"] == 1.0
        # checked at each unpadded length, not only overall
        assert set(row.breakdown) == {"length 16", "length 32", "length 128"}
        assert all(g["cosine_worst"] >= 0.9999 for g in row.breakdown.values())
        assert [i["name"] for i in row.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    exported = next((result.out_dir / "artifacts").glob("onnx-fp32-*"))
    assert {"tokenizer.json", "vocab.txt", "manifest.json", "model.onnx"} <= {p.name for p in exported.iterdir()}


def test_lm_tiny_exports_with_perplexity_kld_and_token_agreement(tmp_path):
    result, rows = _run(
        "lm-tiny",
        tmp_path,
        task={"sources": ["docs"], "context_length": 64, "sequence_lengths": [16, 64], "eval_windows": 4},
        source={"params": {"dim": 64, "layers": 2, "heads": 4, "kv_heads": 2, "max_length": 64}, "max_steps": 60},
        benchmark={"warmup": 2, "runs": 10, "generation": {"prompt_tokens": 16, "new_tokens": 8, "runs": 2}},
    )
    assert result.unchecked is None
    reference = result.results["task"]["reference_metrics"]["perplexity"]
    assert 1 < reference < 300  # trained: far below the uniform 512
    fp32 = rows[("onnx-fp32", "onnxruntime", 64)]
    assert fp32.parity["max_abs_diff"] <= 1e-4 and fp32.parity["kld"] < 1e-9 and fp32.parity["top1_agreement"] == 1
    assert fp32.metrics["perplexity"] == pytest.approx(reference, rel=1e-5)
    int8 = rows[("onnx-int8-dynamic", "onnxruntime", 64)]
    assert int8.parity["kld"] > 0 and int8.vs_fp32 is not None and "perplexity_delta" in int8.vs_fp32.model_dump()
    assert int8.artifact.precision == "int8" and "accuracy" not in int8.metrics
    assert rows[("openvino-fp32", "openvino", 16)].parity["max_abs_diff"] <= 1e-4
    gguf = rows[("gguf-fp32", "llama.cpp", 64)]
    assert gguf.parity["max_abs_diff"] <= 1e-4 and gguf.metrics["perplexity"] == pytest.approx(reference, rel=1e-4)
    q4 = [r for (name, _, _), r in rows.items() if name == "gguf-q4_k_m"]
    assert q4 and all(r.status == "ok" for r in q4) and q4[0].session["tensor_types"]
    generated = [r.generation for r in q4 if r.generation]
    assert generated and generated[0].generation_tokens_per_s > 0 and generated[0].method == "kv-cache"
    table = (result.out_dir / "results.md").read_text()
    assert "perplexity" in table and "KLD" in table and "accuracy" not in table


def test_a_users_module_runs_through_the_chain(tmp_path):
    result, rows = _run(
        "custom-module",
        tmp_path,
        task={"image_size": 16},
        stages=[{"stage": "finetune", "epochs": 2, "batch_size": 64, "learning_rate": 0.01}],
        targets=[{"format": "onnx"}],
        benchmark={"warmup": 2, "runs": 10},
    )
    torch_row = rows[("torch-finetune", "torch", None)]
    onnx_row = rows[("onnx-fp32", "onnxruntime", None)]
    assert onnx_row.parity["top1_agreement"] == 1.0 and onnx_row.parity["max_abs_diff"] < 1e-4
    assert np.isclose(onnx_row.metrics["accuracy"], torch_row.metrics["accuracy"])
    finetuned = next((result.out_dir / "artifacts").glob("torch-finetune-*"))
    manifest = yaml.safe_load((finetuned / "manifest.json").read_text())
    assert manifest["model"]["builder"] == "module" and manifest["lineage"]["stage"] == "finetune"
    assert (finetuned / "module.py").is_file()
