"""The spine's performance goals, measured and printed (never asserted in a timed test).

    python -m edgepipe.benchmarks.spine_goals [--recipe recipes/quickstart.yaml] [--json]

Runs the recipe twice through the real CLI in a fresh run folder (cold, then cached), then prints:
INT8 vs FP32 accuracy drop and size ratio per runtime, INT8 vs FP32 latency ratio on the same
runtime (with significance), and both wall times, each against its goal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgepipe.benchmarks.report import fp32_baseline
from edgepipe.results import ResultRow


def _run(recipe: str, out: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.cli", "run", recipe, "--out", str(out)], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 4):
        sys.exit(f"edgepipe run failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall


def _verdict(value: float, goal: float, must: float | None = None) -> str:
    if value <= goal:
        return "meets goal"
    return "misses goal, within limit" if must is not None and value <= must else "MISSES GOAL"


def measure(recipe: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgepipe-goals-") as tmp:
        out = Path(tmp) / "run"
        cold = _run(recipe, out)
        cached = _run(recipe, out)
        results = json.loads((out / "results.json").read_text())
    rows = [r for r in (ResultRow.model_validate(d) for d in results["results"]) if r.status == "ok"]
    comparisons = []
    for row in rows:
        if not (vs := row.vs_fp32):
            continue
        base = fp32_baseline(row, rows)
        assert base is not None and base.latency_ms and row.latency_ms  # vs_fp32 exists only with a baseline
        comparisons.append(
            {
                "format": row.artifact.format,
                "runtime": row.runtime,
                "precision": row.artifact.precision,
                "accuracy_drop_points": -100 * vs.model_dump()["accuracy_delta"] + 0.0,  # + 0.0: -0.0 -> 0.0
                "size_ratio": vs.size_ratio,
                "latency_ratio_int8_over_fp32": 1 / vs.ratio,
                "speedup": vs.ratio,
                "speedup_significant": vs.significant,
                "median_ms": row.latency_ms.median,
                "fp32_median_ms": base.latency_ms.median,
            }
        )
    return {
        "cold_wall_s": cold,
        "cached_wall_s": cached,
        "comparisons": comparisons,
        "environment": {"cpu": results["environment"]["cpu"], "packages": results["environment"]["packages"]},
        "threads": rows[0].threads if rows else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/quickstart.yaml")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    m = measure(args.recipe)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    cpu = m["environment"]["cpu"]
    print(f"CPU: {cpu['model']} ({' '.join(cpu['flags'])}), threads {m['threads']}, batch 1")
    for c in m["comparisons"]:
        drop, size = c["accuracy_drop_points"], c["size_ratio"]
        lat = c["latency_ratio_int8_over_fp32"]
        speed = "faster" if lat < 1 else "SLOWER"
        sig = "" if c["speedup_significant"] else " (not significant: 95% CIs overlap)"
        print(f"{c['format']}/{c['precision']} on {c['runtime']}:")
        print(f"  accuracy drop  {drop:+.2f} points   goal <= 0.3, must <= 1   -> {_verdict(drop, 0.3, 1.0)}")
        print(f"  size ratio     {size:.3f} (1/{1 / size:.2f})   goal <= 1/3.8          -> {_verdict(size, 1 / 3.8)}")
        print(f"  latency ratio  {lat:.3f} ({c['median_ms']:.3f} vs {c['fp32_median_ms']:.3f} ms): INT8 {speed}{sig}")
    print(f"quickstart wall time, cold: {m['cold_wall_s']:.1f} s   goal <= 300 s -> {_verdict(m['cold_wall_s'], 300)}")
    print(
        f"quickstart wall time, cached: {m['cached_wall_s']:.1f} s   goal <= 30 s -> {_verdict(m['cached_wall_s'], 30)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
