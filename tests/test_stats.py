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
    assert speedup(many, few) == {"ratio": pytest.approx(2.0, rel=0.01), "significant": False, "ci95": None}


def test_median_ci_has_about_95_percent_coverage():
    rng = np.random.default_rng(0)
    true_median = np.log(2)  # exponential(1): skewed, like latencies
    hits = sum(lo <= true_median <= hi for lo, hi in (median_ci95(rng.exponential(size=200)) for _ in range(1000)))
    assert 0.94 <= hits / 1000 <= 0.99


def test_speedup_significance():
    fast = latency_stats(np.full(100, 1.0) + np.linspace(0, 0.01, 100))
    slow = latency_stats(np.full(100, 2.0) + np.linspace(0, 0.01, 100))
    assert speedup(slow, fast) == {"ratio": pytest.approx(2.0, rel=0.01), "significant": True, "ci95": None}
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


def _process_medians(rng, center: float, k: int, spread: float, drift=None) -> list[list[float]]:
    """``k`` processes' runs: each process sits at its own level (lognormal, ``spread`` between processes, times
    a shared ``drift`` per process if given), with runs jittered around it."""
    levels = center * np.exp(rng.normal(0, spread, k)) * (1 if drift is None else drift)
    return [list(level * (1 + rng.normal(0, 0.01, 50))) for level in levels]


@pytest.mark.parametrize("k", [3, 5, 10])
def test_the_interval_across_processes_covers_the_true_median_95_percent_of_the_time(k):
    rng = np.random.default_rng(k)
    hits = 0
    for _ in range(2000):
        lo, hi = latency_stats(_process_medians(rng, 1.0, k, 0.08))["ci95"]
        hits += lo <= 1.0 <= hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_paired_ratio_intervals_cover_the_true_ratio_and_cancel_shared_drift():
    from edgepipe.benchmarks.stats import ratio_interval

    rng = np.random.default_rng(1)
    hits, paired_widths, unpaired_widths = 0, [], []
    for _ in range(2000):
        drift = np.exp(rng.normal(0, 0.10, 5))  # what both saw in each round (the machine's mood)
        a = [float(np.median(p)) for p in _process_medians(rng, 2.0, 5, 0.02, drift)]
        b = [float(np.median(p)) for p in _process_medians(rng, 1.0, 5, 0.02, drift)]
        _, (lo, hi) = ratio_interval(a, b, paired=True)
        hits += lo <= 2.0 <= hi
        paired_widths.append(hi / lo)
        unpaired_widths.append(np.divide(*ratio_interval(a, b, paired=False)[1][::-1]))
    assert 0.93 <= hits / 2000 <= 0.97
    assert np.median(paired_widths) < np.median(unpaired_widths)  # pairing removes the shared drift


def test_speedup_uses_the_process_medians_when_both_sides_have_them():
    rng = np.random.default_rng(2)
    slow = latency_stats(_process_medians(rng, 1.3, 5, 0.03))
    fast = latency_stats(_process_medians(rng, 1.0, 5, 0.03))
    same = latency_stats(_process_medians(rng, 1.01, 5, 0.03))
    planted = speedup(slow, fast)
    assert planted["significant"] and planted["ci95"][0] > 1 and planted["ratio"] == pytest.approx(1.3, rel=0.06)
    assert not speedup(same, fast)["significant"]  # 1%: within the noise between processes


def test_automatic_warm_up_waits_for_the_median_to_settle(monkeypatch):
    import math
    import time

    from edgepipe.benchmarks import timing as harness

    clock = [0]  # a simulated clock: each call takes 1 ms plus a cold part that fades (caches, lazy setup)
    monkeypatch.setattr(harness.time, "perf_counter_ns", lambda: clock[0])
    monkeypatch.setattr(harness.time, "perf_counter", time.perf_counter)

    class Cooling:
        calls = 0

        def run_timed(self, feeds):
            self.calls += 1
            clock[0] += int(1e6 * (1 + 2 * math.exp(-self.calls / 15)))

    session = Cooling()
    made = harness.warm_up(session, [{}], "auto")
    # chunk medians of 10 calls differ by under 3% only once the cold part is below ~3% of a call
    assert 50 <= made <= 80 and made == session.calls
    assert harness.warm_up(Cooling(), [{}], 7) == 7
