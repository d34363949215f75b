"""A quality budget's choice: of the configurations within ``max_quality_drop``, the fastest, measured.

Every candidate is loaded on its format's default runtime at the search's thread count and timed on one
calibration example (batch 1) in the same process, in turns (A B C, A B C, ...), so a drift of the machine
touches all of them alike; each one's figure is the median of its rounds' medians. The first of them (the
requested configuration, or the first fix within the budget) is kept unless another is faster beyond the
noise: the paired interval of its speed-up over the rounds lies above 1. The figures go into the search's
attempts (``latency_ms``, ``latency_rounds_ms``, ``speedup``): the report says what keeping layers in float
cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgepipe.artifact import Artifact
    from edgepipe.stage import StageContext

ROUNDS = 5
SECONDS_PER_TURN = 0.3


def fastest(paths: dict[int, Path], attempts: list[dict[str, Any]], parent: Artifact, ctx: StageContext) -> int:
    """The index (into ``attempts``) of the fastest of ``paths``; each attempt gets its latency recorded."""
    from edgepipe.benchmarks.stats import ratio_interval
    from edgepipe.benchmarks.timing import in_turns
    from edgepipe.formats import detect_format
    from edgepipe.runtimes import default_runtime, get_runtime
    from edgepipe.search import THREADS

    feeds = ctx.example_feeds(parent, 1)
    sessions = {}
    try:
        for i, path in paths.items():
            sessions[i] = get_runtime(default_runtime(detect_format(path))).load(path, threads=THREADS)
        medians = in_turns(list(sessions.values()), [feeds] * len(sessions), ROUNDS, SECONDS_PER_TURN)
    finally:
        for s in sessions.values():
            s.close()
    rounds = dict(zip(sessions, medians, strict=True))
    first = min(rounds)
    faster = []
    for i, values in rounds.items():
        ratio, ci = ratio_interval(rounds[first], values, paired=True)
        attempts[i]["latency_ms"] = round(float(np.median(values)), 4)
        attempts[i]["latency_rounds_ms"] = [round(v, 4) for v in values]
        attempts[i]["speedup"] = {"vs_attempt": first, "ratio": round(ratio, 3), "ci95": ci}
        faster += [i] if ci is not None and ci[0] > 1 else []
    best = min(faster, key=lambda i: attempts[i]["latency_ms"]) if faster else first
    ctx.log(
        "[budget] latency within the budget: "
        + "; ".join(f"attempt {i} {attempts[i]['latency_ms']:.3f} ms" for i in rounds)
        + f"; shipping attempt {best}"
        + ("" if faster else f" (none is faster than attempt {first} beyond the noise)")
    )
    return best


def summary(name: str, quantization: dict[str, Any]) -> str | None:
    """One note for the run's report: what the budget shipped, which layers it keeps in float, and what
    that costs in latency against the requested configuration (the same process, in turns)."""
    search = quantization.get("search") or {}
    budget = search.get("max_quality_drop")
    if budget is None or "chosen" not in search:
        return None
    attempts = search["attempts"]
    chosen = attempts[search["chosen"]]
    changed = chosen.get("changes") or {}
    kept = list(changed.get("exclude_nodes") or (changed.get("ignored_scope") or {}).get("names") or [])
    kept += [n for n in quantization.get("float_op_names") or [] if n not in kept]
    unit = search.get("drop_unit") or ""
    said = [
        f"{name}: within {budget:g} {unit} (tuning data): shipped "
        + (f"attempt {search['chosen']} ({_short(changed)})" if changed else "the requested configuration")
        + f", drop {chosen.get('drop')}"
    ]
    if kept:
        said.append(f"kept in float: {', '.join(kept[:6])}" + (f" (+{len(kept) - 6} more)" if len(kept) > 6 else ""))
    else:
        said.append("every quantizable layer stays INT8")
    timed = [a for a in attempts if "latency_ms" in a]
    if len(timed) > 1 and "speedup" in chosen:
        s = chosen["speedup"]
        figures = ", ".join(f"attempt {attempts.index(a)} {a['latency_ms']:.3f} ms" for a in timed)
        if s["vs_attempt"] == search["chosen"]:
            said.append(f"latency {figures}: none faster than it beyond the noise")
        else:
            ci = f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]" if s.get("ci95") else ""
            said.append(f"latency {figures}; shipped x{s['ratio']:.2f}{ci} against attempt {s['vs_attempt']}")
    return "; ".join(said)


def _short(changes: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={len(v)} nodes" if isinstance(v, list) and len(v) > 3 else f"{k}={v}" for k, v in changes.items()
    )
