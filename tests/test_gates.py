"""Quality gates and comparisons on synthetic result rows (no models needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgepipe.benchmarks.report import add_comparisons, to_json
from edgepipe.benchmarks.stats import latency_stats
from edgepipe.gates import check_gates
from edgepipe.results import ArtifactRef, LatencyStats, ResultRow
from edgepipe.tasks.classification import ClassificationGates, ClassificationTask


def row(fmt, precision, sha, parent=None, median=1.0, acc=0.98, agree=1.0, diff=1e-6, status="ok", nonfinite=0):
    lat = latency_stats(np.full(50, median) + np.linspace(0, median * 0.01, 50))
    return ResultRow(
        runtime="onnxruntime", device="cpu", threads=2, batch_size=1, status=status,
        error=None if status == "ok" else "boom",
        artifact=ArtifactRef(format=fmt, precision=precision, sha256=sha, parent_sha256=parent, path="p",
                             size_bytes=1000 if precision == "fp32" else 260),
        latency_ms=LatencyStats.model_validate(lat), metrics={"accuracy": acc},
        parity={"top1_agreement": agree, "max_abs_diff": diff}, nonfinite_outputs=nonfinite,
    )  # fmt: skip


def gates(rows, reference=None, **config):
    return check_gates(rows, ClassificationTask, ClassificationGates(**config), reference or {"accuracy": 0.98})


def test_passing_rows_pass():
    rows = [row("onnx", "fp32", "a"), row("onnx", "int8", "b", parent="a", acc=0.975, agree=0.99, diff=0.3)]
    report = gates(rows)
    assert report.failures == [] and report.checked == 2
    assert all(r.gates.passed for r in rows)


def test_nan_outputs_fail_every_threshold():
    rows = [row("onnx", "fp32", "a", diff=math.nan, agree=math.nan)]
    report = gates(rows)
    assert len(report.failures) == 2 and not rows[0].gates.passed


def test_nonfinite_outputs_fail_a_quantized_row_whatever_its_metrics_say():
    rows = [row("onnx", "int8", "b", acc=0.98, agree=1.0, nonfinite=7)]
    [failure] = gates(rows).failures
    assert "7 NaN or Inf output values" in failure


def test_accuracy_drop_is_measured_against_the_reference_outputs_not_a_benchmarked_row():
    rows = [row("onnx", "int8", "b", acc=0.95)]  # no torch row in the results at all
    [failure] = gates(rows, quantized_max_accuracy_drop=0.01).failures
    assert "accuracy drop 0.0300 > 0.01" in failure


def test_a_failed_benchmark_fails_the_gate_but_an_unavailable_runtime_does_not():
    rows = [row("onnx", "fp32", "a", status="failed"), row("openvino", "fp32", "c", status="unavailable")]
    report = gates(rows)
    assert report.failures == ["onnx/fp32@onnxruntime: benchmark failed: boom"]
    assert rows[1].gates is None


def test_a_run_where_nothing_could_be_checked_says_so():
    rows = [row("onnx", "fp32", "a", status="unavailable"), row("torch", "fp32", "t")]
    report = gates(rows)
    assert report.failures == [] and report.checked == 0 and report.needed == 1


def test_thresholds_are_printed_as_configured():
    rows = [row("onnx", "fp32", "a", diff=0.002)]
    [failure] = gates(rows, fp32_max_abs_diff=0.0015).failures
    assert failure.endswith("max abs diff 0.002 > 0.0015")


def test_quantized_rows_compare_with_their_own_parent():
    rows = [
        row("onnx", "fp32", "dynamo", median=1.0),
        row("onnx", "fp32", "torchscript", median=2.0),
        row("onnx", "int8", "q", parent="torchscript", median=0.5),
    ]
    add_comparisons(rows, ClassificationTask)
    # paired with the torchscript export it came from (x4), not the first FP32 ONNX row (x2)
    assert rows[2].vs_fp32.ratio == pytest.approx(rows[1].latency_ms.median / rows[2].latency_ms.median)
    assert rows[2].vs_fp32.ratio == pytest.approx(4.0, rel=0.01)
    assert rows[2].vs_fp32.size_ratio == 0.26


def test_results_json_is_strict():
    text = to_json({"x": math.nan, "y": [math.inf, 1.0]})
    assert "NaN" not in text and "Infinity" not in text and '"x": null' in text


def test_full_integer_models_get_quantized_inputs_and_dequantized_outputs():
    """A TFLite-style int8 model: the harness quantizes float data and dequantizes outputs itself."""
    from edgepipe.benchmarks.harness import Evaluation, evaluate, for_session
    from edgepipe.runtimes import Session
    from edgepipe.tasks import EvalSet
    from edgepipe.tensors import TensorSpec

    class Int8Identity(Session):
        inputs = [TensorSpec(name="x", shape=["batch", 3], dtype="int8",
                             quantization={"scale": [0.5], "zero_point": [-1]})]  # fmt: skip
        outputs = [TensorSpec(name="y", shape=["batch", 3], dtype="int8",
                              quantization={"scale": [0.5], "zero_point": [-1]})]  # fmt: skip
        info: dict = {}

        def run(self, feeds):
            assert feeds["x"].dtype == np.int8
            return [feeds["x"]]

    x = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [100.0, -100.0, 0.5]], dtype=np.float32)
    session = Int8Identity()
    [feeds] = for_session(session, {"x": x})
    np.testing.assert_array_equal(feeds["x"], [[-1, 1, 3], [3, 1, -1], [127, -128, 0]])
    data = EvalSet([{"x": x}], [np.array([2, 0, 0])], ["test"])
    metrics, par, _, nonfinite = evaluate(session, Evaluation(ClassificationTask, data, [x]))
    assert metrics["accuracy"] == 1.0 and nonfinite == 0
    assert par["max_abs_diff"] == pytest.approx(100 - 63.5)  # only the clipped values differ


def test_text_tasks_gate_every_length_on_its_own():
    """A length that breaks is not averaged away by the others."""
    from edgepipe.tasks.embedding import EmbeddingGates, EmbeddingTask
    from edgepipe.tasks.language_modeling import LanguageModelingGates, LanguageModelingTask

    lm = row("onnx", "int8", "b")
    lm.metrics = {"perplexity": 20.0}
    lm.parity = {"kld": 0.02, "top1_agreement": 0.9, "max_abs_diff": 0.5}
    lm.breakdown = {
        "length 32": {"kld": 0.001, "top1_agreement": 0.99},
        "length 128": {"kld": 0.09, "top1_agreement": 0.85},
    }
    assert LanguageModelingTask.gate_failures(lm, LanguageModelingGates(), {"perplexity": 20.0}) == [
        "KLD at length 128 0.0900 > 0.05"
    ]
    emb = row("onnx", "int8", "b")
    emb.metrics = {"cosine_mean": 0.995, "cosine_worst": 0.97, "nn_agreement": 1.0}
    emb.breakdown = {"length 16": {"cosine_mean": 0.985}, "length 128": {"cosine_mean": 0.999}}
    assert EmbeddingTask.gate_failures(emb, EmbeddingGates(), {}) == ["mean cosine at length 16 0.9850 < 0.99"]
