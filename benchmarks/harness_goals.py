"""The harness's goals, measured and printed (never asserted in a timed test).

    python -m edgepipe.benchmarks.harness_goals [--recipe recipes/quickstart.yaml] [--runs 2] [--json]

Builds the recipe once (untimed), then re-runs it ``--runs`` times through the real CLI, cached: only the
benchmark runs again. Prints each cached re-run's wall time against the 30 s goal, each INT8/FP32 ratio
of every run with its interval, and whether every run's interval holds every other run's ratio (the goal:
an interval that says what the next run will show); then ``edgepipe compare`` of the first two runs,
which must find no regression between runs of the same files.
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

GOALS = {"cached_rerun_s": 30.0}


def _cli(*args: str) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgepipe.cli", *args], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0


def _ratios(run: Path) -> dict[str, dict[str, Any]]:
    results = json.loads((run / "results.json").read_text())
    return {
        f"{r['name']}@{r['runtime']}": {**r["vs_fp32"], "run_id": results["run_id"]}
        for r in results["results"]
        if r.get("vs_fp32")
    }


def measure(recipe: str, runs: int, root: Path) -> dict[str, Any]:
    out = root / "run"
    code, said, _ = _cli("run", recipe, "--out", str(out), "--db", str(root / "store.sqlite"))
    if code not in (0, 4):
        sys.exit(f"edgepipe run failed ({code}): {said.strip().splitlines()[-1]}")
    walls, ratios = [], []
    for _ in range(runs):
        code, said, wall = _cli("run", recipe, "--out", str(out), "--db", str(root / "store.sqlite"))
        if code not in (0, 4):
            sys.exit(f"edgepipe run failed ({code}): {said.strip().splitlines()[-1]}")
        walls.append(round(wall, 1))
        ratios.append(_ratios(out))
    contained = {}
    for label in ratios[0]:
        seen = [r[label] for r in ratios if label in r]
        contained[label] = all(
            a["ci95"] is not None and a["ci95"][0] <= b["ratio"] <= a["ci95"][1]
            for a in seen
            for b in seen
            if a is not b
        )
    first, second = ratios[0][next(iter(ratios[0]))]["run_id"], ratios[1][next(iter(ratios[1]))]["run_id"]
    code, said, _ = _cli("compare", first, second, "--db", str(root / "store.sqlite"))
    return {
        "cached_rerun_s": walls,
        "ratios": ratios,
        "every_interval_holds_the_other_runs_ratio": contained,
        "compare_exit_code": code,
        "compare_summary": said.strip().splitlines()[-1] if said.strip() else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/quickstart.yaml")
    ap.add_argument("--runs", type=int, default=2, help="cached re-runs to compare (default: 2)")
    ap.add_argument("--out", help="keep the run folder and store here (a second call reuses its artifacts)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgepipe-harness-") as tmp:
        found = measure(args.recipe, max(2, args.runs), Path(args.out or tmp))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    goal = GOALS["cached_rerun_s"]
    for i, wall in enumerate(found["cached_rerun_s"], 1):
        print(f"cached re-run {i}: {wall:.1f} s (goal <= {goal:.0f} s) -> {'meets goal' if wall <= goal else 'MISSES'}")
    for label, held in found["every_interval_holds_the_other_runs_ratio"].items():
        shown = "; ".join(
            f"run {i}: x{r[label]['ratio']:.2f} [{r[label]['ci95'][0]:.2f}, {r[label]['ci95'][1]:.2f}]"
            if r[label].get("ci95")
            else f"run {i}: x{r[label]['ratio']:.2f} (no interval)"
            for i, r in enumerate(found["ratios"], 1)
            if label in r
        )
        verdict = (
            "each interval holds the other runs' ratios" if held else "MISSES: an interval misses another run's ratio"
        )
        print(f"{label} vs fp32: {shown} -> {verdict}")
    print(f"edgepipe compare run 1 run 2: exit {found['compare_exit_code']}: {found['compare_summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
