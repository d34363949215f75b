"""Latency statistics: robust summaries plus a distribution-free confidence interval of the median."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted sample that bound the median with at least ``confidence``.

    Exact and distribution-free: the number of samples below the median is Binomial(n, 1/2), so
    [x_(k), x_(n-k+1)] covers it with probability 1 - 2 * P(B <= k - 1); k is the largest rank that keeps
    that at or above ``confidence``. None when n is too small for any interval (n < 6 at 95%).
    """
    tail = (1 - confidence) / 2
    log_total = math.lgamma(n + 1) - n * math.log(2)
    cdf, k = 0.0, 0
    for i in range(n):
        cdf += math.exp(log_total - math.lgamma(i + 1) - math.lgamma(n - i + 1))
        if cdf > tail:
            break
        k = i + 1
    return (k - 1, n - k) if k >= 1 else None


def median_ci95(samples: np.ndarray) -> tuple[float, float] | None:
    """95% confidence interval of the median from order statistics (exact binomial, no normality assumed),
    or None when there are too few samples for one (fewer than 6): no interval is called 95% that is not.

    It treats runs as independent; consecutive latencies on a busy machine are not quite, so read
    it as the spread of this run's median, not a promise about the next run.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    ranks = median_ci_ranks(len(x))
    if ranks is None:
        return None
    return float(x[ranks[0]]), float(x[ranks[1]])


def latency_stats(samples_ms: list[float] | np.ndarray) -> dict[str, Any]:
    """n, mean, std, min, max, median, p90, p99, IQR and the median's 95% CI (all in ms)."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples")
    q25, median, q75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    ci = median_ci95(x)
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "median": float(median),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(x.max()),
        "iqr": float(q75 - q25),
        "ci95": list(ci) if ci else None,
    }


def speedup(baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Ratio of medians (baseline / candidate: > 1 means the candidate is faster).

    ``significant`` is False when the two medians' 95% intervals overlap (the difference may be noise) or
    when either has too few runs for an interval.
    """
    ratio = baseline["median"] / candidate["median"]
    if not baseline.get("ci95") or not candidate.get("ci95"):
        return {"ratio": float(ratio), "significant": False}
    b_lo, b_hi = baseline["ci95"]
    c_lo, c_hi = candidate["ci95"]
    return {"ratio": float(ratio), "significant": bool(c_hi < b_lo or b_hi < c_lo)}
