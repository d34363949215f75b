"""Latency statistics: robust summaries, the median's interval across fresh processes, ratio intervals.

On a shared machine the median of one process moves more between processes (about 8% here) than
one process's own interval shows (about 1%). So an artifact is measured in several fresh processes,
and its interval, and any ratio's, is built from the process medians: a t interval on a log scale
(latencies multiply: a ratio's log is a difference). Paired when two artifacts' processes alternated
(A B A B ...): the drift both saw cancels in each pair's ratio.
"""

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


def _t(confidence: float, df: float) -> float:
    from scipy import stats  # here, not at the top: it takes a second to import, in every benchmark process

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def log_interval(values: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float] | None:
    """(center, low, high): the geometric mean of positive ``values`` and a t interval for it on a log
    scale; None for fewer than two values or any value not positive."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or not np.all(x > 0):
        return None
    logs = np.log(x)
    mean, half = logs.mean(), _t(confidence, x.size - 1) * logs.std(ddof=1) / math.sqrt(x.size)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def relative_half_width(values: list[float] | np.ndarray) -> float | None:
    """Half the width of ``log_interval`` over its center (0.02: +-2%), or None when there is none."""
    found = log_interval(values)
    return None if found is None else (found[2] - found[1]) / 2 / found[0]


def latency_stats(
    samples_ms: list[float] | np.ndarray | list[list[float]], warmup_runs: int | None = None
) -> dict[str, Any]:
    """n, mean, std, min, max, median, p90, p99, IQR and the median's 95% interval (all in ms).

    ``samples_ms`` is one process's runs, or a list of each process's runs. With two or more processes
    the interval is ``log_interval`` of the process medians (``ci_basis`` "processes"); with one it is the
    distribution-free interval of that process's runs (``ci_basis`` "runs")."""
    per_process = (
        [np.asarray(p, dtype=np.float64) for p in samples_ms]
        if len(samples_ms) and isinstance(samples_ms[0], (list, np.ndarray))
        else [np.asarray(samples_ms, dtype=np.float64)]
    )
    per_process = [p for p in per_process if p.size]
    if not per_process:
        raise ValueError("no latency samples")
    x = np.concatenate(per_process)
    q25, median, q75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    medians = [float(np.median(p)) for p in per_process]
    basis, ci = "runs", median_ci95(x)
    if len(medians) >= 2:
        basis, found = "processes", log_interval(medians)
        ci = None if found is None else (found[1], found[2])
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
        "processes": len(medians),
        "process_medians": medians,
        "process_spread": (max(medians) - min(medians)) / float(np.median(medians)) if len(medians) > 1 else None,
        "ci_basis": basis if ci else None,
        "warmup_runs": warmup_runs,
    }


def ratio_interval(
    baseline: list[float], candidate: list[float], paired: bool = True, confidence: float = 0.95
) -> tuple[float, list[float] | None]:
    """The ratio baseline / candidate of two sets of process medians and its interval.

    ``paired`` (the processes alternated, A B A B ...: the i-th of each ran side by side): a t interval
    of the per-pair log ratios. Otherwise (two separate runs): Welch's interval of the difference of the
    mean logs. The ratio is of geometric means; the interval is None with fewer than two of each."""
    b, c = np.log(np.asarray(baseline, np.float64)), np.log(np.asarray(candidate, np.float64))
    ratio = math.exp(b.mean() - c.mean())
    if paired and b.size == c.size and b.size >= 2:
        found = log_interval(np.exp(b - c), confidence)
        return ratio, None if found is None else [found[1], found[2]]
    if b.size < 2 or c.size < 2:
        return ratio, None
    vb, vc = b.var(ddof=1) / b.size, c.var(ddof=1) / c.size
    se = math.sqrt(vb + vc)
    if se == 0:
        return ratio, [ratio, ratio]
    df = (vb + vc) ** 2 / (vb**2 / (b.size - 1) + vc**2 / (c.size - 1))
    half = _t(confidence, df) * se
    return ratio, [ratio * math.exp(-half), ratio * math.exp(half)]


def speedup(baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Ratio of medians (baseline / candidate: > 1 means the candidate is faster) and its 95% interval.

    With process medians on both sides (two or more each, measured interleaved in one run) the ratio
    and interval come from them, paired by process (``ratio_interval``); ``significant`` means the
    interval excludes 1. With one process each there is no interval for the ratio, and ``significant``
    falls back to the runs' intervals not overlapping (which understates the noise between processes).
    """
    b_med, c_med = baseline.get("process_medians") or [], candidate.get("process_medians") or []
    if len(b_med) >= 2 and len(c_med) >= 2:
        ratio, ci = ratio_interval(b_med, c_med, paired=len(b_med) == len(c_med))
        significant = ci is not None and (ci[0] > 1 or ci[1] < 1)
        return {"ratio": ratio, "significant": bool(significant), "ci95": ci}
    ratio = baseline["median"] / candidate["median"]
    if not baseline.get("ci95") or not candidate.get("ci95"):
        return {"ratio": float(ratio), "significant": False, "ci95": None}
    b_lo, b_hi = baseline["ci95"]
    c_lo, c_hi = candidate["ci95"]
    return {"ratio": float(ratio), "significant": bool(c_hi < b_lo or b_hi < c_lo), "ci95": None}
