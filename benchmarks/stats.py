"""Latency statistics: robust summaries plus a distribution-free confidence interval of the median."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def median_ci95(samples: np.ndarray) -> tuple[float, float]:
    """95% confidence interval of the median from order statistics (no normality assumed).

    The ranks n/2 -+ 1.96*sqrt(n)/2 bound the median with ~95% coverage (binomial(n, 1/2) approximation).
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(x)
    half = 1.959964 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return float(x[lo]), float(x[hi])


def latency_stats(samples_ms: list[float] | np.ndarray) -> dict[str, Any]:
    """n, mean, std, min, max, median, p90, p99, IQR and the median's 95% CI (all in ms)."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples")
    q25, median, q75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    lo, hi = median_ci95(x)
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
        "ci95": [lo, hi],
    }


def speedup(baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Ratio of medians (baseline / candidate: > 1 means the candidate is faster).

    ``significant`` is False when the two medians' 95% intervals overlap: the difference may be noise.
    """
    ratio = baseline["median"] / candidate["median"]
    b_lo, b_hi = baseline["ci95"]
    c_lo, c_hi = candidate["ci95"]
    return {"ratio": float(ratio), "significant": bool(c_hi < b_lo or b_hi < c_lo)}
