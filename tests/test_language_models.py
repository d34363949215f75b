"""A language model on every format, scored the same way: NNCF weight compression read back from the IR,
generation on runtimes without a KV cache, and the memory-budget recommendation."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.benchmarks.generation import GenerationPoint, generation_stats, prompt_for
from edgepipe.benchmarks.harness import Evaluation, evaluate
from edgepipe.benchmarks.report import recommend, render_table
from edgepipe.results import ArtifactRef, ResultRow
from edgepipe.runtimes import get_runtime
from edgepipe.tasks.language_modeling import LanguageModelingTask


@pytest.fixture(scope="module")
def scored(lm):
    """(data, torch reference) on the held-out windows."""
    task, model, _, ctx = lm
    data = task.eval_set(ctx.preprocessor(model))
    with get_runtime("torch").load(model.model_file, threads=1) as session:
        return data, [session.run(b)[0] for b in data.batches]


def _parity(artifact, runtime, scored):
    with get_runtime(runtime).load(artifact.model_file, threads=1) as session:
        return evaluate(session, Evaluation(LanguageModelingTask, *scored))[1]


def test_onnx_fp32_logits_match_torch(lm, scored):
    parity = _parity(lm[2][("onnx", "fp32")], "onnxruntime", scored)
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0


@pytest.mark.parametrize(("precision", "element", "max_kld"), [("int8", "u8", 1e-3), ("int4", "u4", 0.05)])
def test_nncf_weight_compression_is_read_back_and_scored(lm, scored, precision, element, max_kld):
    art = lm[2][("openvino", precision)]
    assert art.manifest.name.startswith(f"openvino-{precision}-weights")
    q = art.manifest.quantization
    assert q["tool"] == "nncf.compress_weights" and q["calibration"] is None
    assert q["weight_element_types"].get(element, 0) > 0
    assert not q["fake_quantize"]["count"]  # weights only: activations stay float
    parity = _parity(art, "openvino", scored)
    assert 0 < parity["kld"] < max_kld
    # The weights file (on a model this small the .xml graph is as large as the weights)
    fp32 = lm[2][("openvino", "fp32")].model_file.with_suffix(".bin").stat().st_size
    int8 = lm[2][("openvino", "int8")].model_file.with_suffix(".bin").stat().st_size
    assert int8 < 0.3 * fp32
    if precision == "int4":
        assert art.model_file.with_suffix(".bin").stat().st_size < 0.8 * int8


def test_recompute_generation_on_onnx_equals_llama_cpp_kv_cache(lm):
    task, model, made, ctx = lm
    prompt = task.generation_prompt(ctx.preprocessor(model), 16)
    with get_runtime("llama.cpp").load(made[("gguf", "fp32")].model_file, threads=1) as llama:
        cached = llama.generate(prompt, 8).tokens
    with get_runtime("onnxruntime").load(made[("onnx", "fp32")].model_file, threads=1) as onnx:
        stats = generation_stats(onnx, prompt, 8, runs=2)
        assert prompt_for(onnx, GenerationPoint(), 0) is None  # no synthetic prompt for a bare ONNX file
        from edgepipe.benchmarks.generation import recompute_generate

        assert recompute_generate(onnx, prompt, 8).tokens == cached
    assert stats.method == "recompute" and stats.prompt_tokens == 16 and stats.new_tokens == 8
    assert stats.token_ms.n == 16 and stats.prompt_ms.n == 2
    assert stats.generation_tokens_per_s == pytest.approx(1e3 / stats.token_ms.median)


def _row(name: str, size: int, kld: float, status: str = "ok") -> ResultRow:
    return ResultRow(
        name=name,
        artifact=ArtifactRef(name=name, format="gguf", precision=name, path="x", size_bytes=size, sha256=name),
        runtime="llama.cpp",
        device="cpu",
        threads=2,
        batch_size=1,
        status=status,  # type: ignore[arg-type]
        parity={"kld": kld, "top1_agreement": 1.0, "max_abs_diff": 0.0},
        peak_rss_mb=50.0,
    )


def test_recommendation_is_the_lowest_kld_that_fits():
    rows = [
        _row("q8_0", 4_000_000, 1e-4),
        _row("q4_k_m", 2_500_000, 1e-2),
        _row("q4_0", 2_400_000, 2e-2),
        _row("broken", 1_000_000, 0.0, status="failed"),
        _row("nan", 1_000_000, float("nan")),
    ]
    pick, note = recommend(rows, LanguageModelingTask, 3.0)
    assert pick["artifact"] == "q4_k_m" and pick["kld"] == 1e-2
    assert note.startswith("Memory budget 3 MB: q4_k_m@llama.cpp") and "lowest KLD" in note
    assert recommend(rows, LanguageModelingTask, 5.0)[0]["artifact"] == "q8_0"
    none, said = recommend(rows, LanguageModelingTask, 0.5)
    assert none["artifact"] is None and "no measured artifact fits" in said


def test_table_shows_bits_per_weight_and_types_only_when_known():
    row = _row("q8_0", 1_000_000, 1e-4)
    assert "bits/w" not in render_table([row], LanguageModelingTask)
    row.artifact.parameters = 1_000_000
    row.session = {"tensor_types": {"Q8_0": 15, "F32": 5}}
    table = render_table([row], LanguageModelingTask)
    assert "bits/w" in table and "8.00" in table and "Q8_0 15, F32 5" in table
    assert np.isfinite(row.artifact.bits_per_weight or np.nan)
