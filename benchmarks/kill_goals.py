"""Killed runs lose nothing: ``kill -9`` an ``edgepipe run`` (its whole process group, benchmark workers
included) at seeded random moments during training, export, quantization and benchmarking, run it again in
the same folder, and compare with a run that was never interrupted. Printed, never asserted in a timed test:

    python -m edgepipe.benchmarks.kill_goals [--kills 20] [--seed 0] [--json]

For each kill: the stage it landed in (the last line the run printed), whether the next run reused any
artifact that fails verification or differs from the uninterrupted run's (goal: 0), and whether it
completed with identical metrics and parity for every row and identical artifact hashes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

# The tests' tiny classifier: trains in seconds, exports to ONNX and OpenVINO, INT8 for each.
RECIPE = {
    "name": "killed",
    "seed": 0,
    "task": {"kind": "classification", "image_size": 16, "test_size": 200, "calibration_size": 100},
    "source": {"kind": "train", "family": "cnn", "params": {"channels": [32, 64], "convs_per_block": 1},
               "epochs": 3, "batch_size": 64, "learning_rate": 0.01},
    "targets": [{"format": "onnx", "quantize": [{"method": "static"}]},
                {"format": "openvino", "quantize": [{"method": "static"}]}],
    "benchmark": {"threads": 1, "warmup": 2, "runs": 20, "max_seconds": 5, "processes": 1, "max_processes": 1},
}  # fmt: skip


def _start(recipe: Path, out: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEPIPE_DEBUG"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgepipe.cli", "run", str(recipe), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the kill takes its workers too
    )


def run_to_end(recipe: Path, out: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    proc = _start(recipe, out)
    log, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"edgepipe run failed ({proc.returncode}): {log.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0, json.loads((out / "results.json").read_text())


def fingerprint(results: dict[str, Any]) -> dict[str, Any]:
    """What must not change between runs: each row's quality and parity, and each artifact's hash."""
    return {
        f"{r['name']}@{r['runtime']}": {"sha256": r["artifact"]["sha256"], "metrics": r["metrics"],
                                       "parity": r["parity"], "status": r["status"]}
        for r in results["results"]
    }  # fmt: skip


def kill_after(recipe: Path, out: Path, delay: float) -> str:
    """Start a run, SIGKILL its process group after ``delay`` seconds; the last line it printed."""
    proc = _start(recipe, out)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    log, _ = proc.communicate()
    lines = [line for line in log.splitlines() if line.startswith("[")]
    return lines[-1] if lines else "(before its first line)"


def trial(recipe: Path, out: Path, delay: float, expected: dict[str, Any]) -> dict[str, Any]:
    """Kill, rerun in the same folder, verify the store, compare with the uninterrupted run."""
    last = kill_after(recipe, out, delay)
    _, results = run_to_end(recipe, out)
    verify = subprocess.run([sys.executable, "-m", "edgepipe.cli", "verify", str(out)], capture_output=True, text=True)
    got = fingerprint(results)
    differ = sorted(k for k in expected if got.get(k) != expected[k])
    return {
        "delay_s": round(delay, 2),
        "killed_at": last,
        "store_verifies": verify.returncode == 0,
        "corrupt_reused": len(differ) if verify.returncode == 0 else len(differ) + 1,
        "identical": not differ and set(got) == set(expected),
        "differ": differ,
    }


def measure(kills: int, seed: int, folder: Path) -> dict[str, Any]:
    recipe = folder / "killed.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    took, reference = run_to_end(recipe, folder / "uninterrupted")
    expected = fingerprint(reference)
    rng = random.Random(seed)
    trials = [trial(recipe, folder / f"kill-{i}", rng.uniform(0.5, took), expected) for i in range(kills)]
    return {"uninterrupted_s": took, "trials": trials}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgepipe-kills-") as tmp:
        m = measure(args.kills, args.seed, Path(tmp))
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"uninterrupted run: {m['uninterrupted_s']:.1f} s; kills at seeded moments in it (seed {args.seed})")
    for t in m["trials"]:
        verdict = "identical" if t["identical"] else f"DIFFERS: {', '.join(t['differ'])}"
        print(f"  kill at {t['delay_s']:5.1f} s, last line {t['killed_at'][:70]:<70} -> rerun {verdict}")
    trials = m["trials"]
    print(
        f"kills tried: {len(trials)}; corrupt artifacts reused: {sum(t['corrupt_reused'] for t in trials)} (goal 0); "
        f"reruns with identical results: {sum(t['identical'] for t in trials)}/{len(trials)}"
    )
    return 0 if all(t["identical"] and t["store_verifies"] for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
