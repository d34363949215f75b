"""Latency statistics and comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.benchmarks.report import add_comparisons, render_csv, render_table
from edgepipe.benchmarks.stats import latency_stats, median_ci95, speedup
from edgepipe.results import ArtifactRef, LatencyStats, ResultRow
from edgepipe.tasks.classification import ClassificationTask


def test_latency_stats_on_known_samples():
    s = latency_stats(list(range(1, 101)))
    assert s["n"] == 100
    assert s["median"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["min"] == 1 and s["max"] == 100 and s["mean"] == pytest.approx(50.5)
    lo, hi = s["ci95"]
    assert lo < s["median"] < hi


@pytest.mark.parametrize("n", [6, 7, 10, 21, 50, 99, 100, 300, 1001])
def test_median_ci_ranks_have_exact_coverage_of_at_least_95_percent(n):
    from math import comb

    from edgepipe.benchmarks.stats import median_ci_ranks

    lo, hi = median_ci_ranks(n)
    assert hi == n - 1 - lo  # symmetric
    # P(x_(lo) <= median <= x_(hi)) = P(lo < B <= hi) for B ~ Binomial(n, 1/2), ranks 0-based
    coverage = sum(comb(n, i) for i in range(lo + 1, hi + 1)) / 2**n
    assert coverage >= 0.95
    # and it is the tightest such interval: one rank in on each side falls below 95%
    assert sum(comb(n, i) for i in range(lo + 2, hi)) / 2**n < 0.95


def test_too_few_runs_give_no_95_percent_interval():
    from edgepipe.benchmarks.stats import median_ci_ranks

    assert median_ci_ranks(5) is None
    assert median_ci95(np.array([3.0, 1.0, 2.0, 5.0, 4.0])) is None
    assert latency_stats([3.0, 1.0, 2.0])["ci95"] is None
    # and a comparison without intervals is never called significant
    few, many = latency_stats([1.0, 1.0, 1.0]), latency_stats(np.full(100, 2.0) + np.linspace(0, 0.01, 100))
    assert speedup(many, few) == {"ratio": pytest.approx(2.0, rel=0.01), "significant": False}


def test_median_ci_has_about_95_percent_coverage():
    rng = np.random.default_rng(0)
    true_median = np.log(2)  # exponential(1): skewed, like latencies
    hits = sum(lo <= true_median <= hi for lo, hi in (median_ci95(rng.exponential(size=200)) for _ in range(1000)))
    assert 0.94 <= hits / 1000 <= 0.99


def test_speedup_significance():
    fast = latency_stats(np.full(100, 1.0) + np.linspace(0, 0.01, 100))
    slow = latency_stats(np.full(100, 2.0) + np.linspace(0, 0.01, 100))
    assert speedup(slow, fast) == {"ratio": pytest.approx(2.0, rel=0.01), "significant": True}
    assert not speedup(fast, fast)["significant"]


def _row(precision, median, fmt="onnx", acc=0.9):
    lat = latency_stats(np.full(50, median) + np.linspace(0, median * 0.01, 50))
    return ResultRow(
        name=f"{fmt}-{precision}",
        status="ok",
        runtime="onnxruntime",
        device="cpu",
        threads=2,
        batch_size=1,
        latency_ms=LatencyStats.model_validate(lat),
        metrics={"accuracy": acc},
        artifact=ArtifactRef(
            format=fmt, precision=precision, size_bytes=1000 if precision == "fp32" else 260, path="p", sha256="s"
        ),
        parity={"top1_agreement": 1.0, "max_abs_diff": 0.0},
    )


def test_a_slower_quantized_model_is_reported_as_slower():
    rows = [_row("fp32", 1.0), _row("int8", 1.25, acc=0.88)]
    notes = add_comparisons(rows, ClassificationTask)
    assert rows[1].vs_fp32.ratio == pytest.approx(0.8, rel=0.02)
    assert rows[1].vs_fp32.model_dump()["accuracy_delta"] == pytest.approx(-0.02)
    assert any("SLOWER" in n and "size x0.26" in n for n in notes)
    table = render_table(rows, ClassificationTask)
    assert "x0.80" in table and "accuracy" in table.splitlines()[0]


def test_failed_rows_are_noted_and_rendered():
    failed = ResultRow(
        name="x",
        runtime="openvino",
        device="cpu",
        threads=2,
        batch_size=1,
        status="unavailable",
        error="not installed",
        artifact=ArtifactRef(format="openvino", precision="fp32", path="p", size_bytes=1, sha256="t"),
    )
    rows = [_row("fp32", 1.0), failed]
    notes = add_comparisons(rows, ClassificationTask)
    assert any("unavailable: not installed" in n for n in notes)
    csv_text = render_csv(rows, ClassificationTask)
    assert csv_text.splitlines()[0].startswith("name,format,precision")
    assert "accuracy" in csv_text.splitlines()[0] and "perplexity" not in csv_text.splitlines()[0]
    assert "unavailable" in csv_text and "not installed" in csv_text
