"""The TFLite goals, measured and printed (never asserted in a timed test).

    python -m edgepipe.benchmarks.tflite_goals [--json]

Runs ``recipes/tflite.yaml`` (the quickstart's digits CNN on LiteRT, onnxruntime and OpenVINO) and
``recipes/micro.yaml`` (a microcontroller-sized CNN with its TFLite Micro bundle) through the real CLI,
then prints: full-integer INT8 on LiteRT against its FP32 (accuracy drop, size, latency with XNNPACK at
the recipe's threads), the same comparison for every other INT8 row beside it, and the bundles.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgepipe.results import ResultRow

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _run(recipe: Path, out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.cli", "run", str(recipe), "--out", str(out)], capture_output=True, text=True
    )
    if proc.returncode not in (0, 4):
        sys.exit(f"edgepipe run {recipe.name} failed ({proc.returncode}): {proc.stderr.strip()}")
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def _comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [ResultRow.model_validate(r) for r in results["results"]]
    out = []
    for row in rows:
        if row.status != "ok" or not row.vs_fp32 or row.latency_ms is None:
            continue
        vs = row.vs_fp32.model_dump()
        out.append(
            {
                "artifact": row.name,
                "runtime": row.runtime,
                "accuracy_drop_points": -100 * vs.get("accuracy_delta", float("nan")) + 0.0,
                "size_ratio": vs["size_ratio"],
                "speedup": vs["ratio"],
                "significant": vs["significant"],
                "median_ms": row.latency_ms.median,
                "threads": row.threads,
            }
        )
    return out


def measure() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgepipe-tflite-goals-") as tmp:
        digits = _run(RECIPES / "tflite.yaml", Path(tmp) / "tflite")
        micro = _run(RECIPES / "micro.yaml", Path(tmp) / "micro")
    return {
        "cpu": digits["environment"]["cpu"],
        "digits": _comparisons(digits),
        "bundles": [n for n in digits["notes"] + micro["notes"] if "bundle" in n],
        "micro": _comparisons(micro),
    }


def _verdict(value: float, goal: float) -> str:
    return "meets goal" if value <= goal else "MISSES GOAL"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    m = measure()
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    cpu = m["cpu"]
    print(f"CPU: {cpu['model']} ({' '.join(cpu['flags'])})")
    print("digits CNN (recipes/tflite.yaml), each INT8 or FP16 variant against its own FP32, same runtime:")
    for c in m["digits"]:
        speed = f"x{c['speedup']:.2f}" + ("" if c["significant"] else " (n.s.)")
        slower = "  SLOWER" if c["speedup"] < 1 and c["significant"] else ""
        print(
            f"  {c['artifact']:<20} {c['runtime']:<12} accuracy drop {c['accuracy_drop_points']:+.2f} pt, "
            f"size x{c['size_ratio']:.3f}, latency {c['median_ms']:.3f} ms {speed} at {c['threads']} threads{slower}"
        )
    full = next((c for c in m["digits"] if c["artifact"] == "tflite-int8-static"), None)
    if full:
        drop, size = full["accuracy_drop_points"], full["size_ratio"]
        print(f"LiteRT full-integer INT8: accuracy drop {drop:+.2f} pt (goal <= 0.3) -> {_verdict(drop, 0.3)}")
        print(f"LiteRT full-integer INT8: size 1/{1 / size:.2f} of FP32 (goal <= 1/3.8) -> {_verdict(size, 1 / 3.8)}")
        print(f"LiteRT full-integer INT8 vs FP32 with XNNPACK: x{full['speedup']:.2f} (as measured)")
    print("micro CNN (recipes/micro.yaml):")
    for c in m["micro"]:
        print(f"  {c['artifact']:<20} accuracy drop {c['accuracy_drop_points']:+.2f} pt, size x{c['size_ratio']:.3f}")
    print("bundles:")
    for note in m["bundles"]:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
