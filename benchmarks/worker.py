"""Run one benchmark in a fresh process: ``python -m edgepipe.benchmarks.worker ROW.json < job.json``.

The job is a JSON object of ``benchmark_model`` keyword arguments plus ``path``, ``runtime`` and
optional ``eval`` (paths of .npy files). The row is written to ROW.json, not stdout, which native
libraries may write to at any time; errors become a row with ``status`` "unavailable" or "failed" and
a one-line ``error``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifact import atomic_write_text
from edgepipe.benchmarks.report import to_json
from edgepipe.errors import EdgepipeError, UnavailableError, first_line


def _load_eval(spec: dict[str, Any] | None) -> Any:
    """EvalData from {"inputs": {name: x.npy}, "labels": y.npy, "reference": ref.npy, "metric": name}."""
    if not spec:
        return None
    from edgepipe.benchmarks.harness import EvalData

    def load(path: str | None) -> np.ndarray | None:
        return np.load(path, allow_pickle=False) if path else None

    inputs = {name: np.load(path, allow_pickle=False) for name, path in spec["inputs"].items()}
    return EvalData(inputs, load(spec.get("labels")), load(spec.get("reference")), spec.get("metric", "accuracy"))


def failed_row(job: dict[str, Any], status: str, error: str) -> dict[str, Any]:
    return {
        "artifact": job.get("artifact"),
        "runtime": job["runtime"],
        "device": job.get("device", "cpu"),
        "threads": job.get("threads"),
        "batch_size": job.get("batch_size"),
        "status": status,
        "error": error,
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from edgepipe.benchmarks.harness import benchmark_model

    kwargs = {k: v for k, v in job.items() if k not in ("path", "runtime", "eval")}
    try:
        return benchmark_model(job["path"], job["runtime"], data=_load_eval(job.get("eval")), **kwargs)
    except UnavailableError as e:
        return failed_row(job, "unavailable", str(e))
    except EdgepipeError as e:
        return failed_row(job, "failed", str(e))
    except Exception as e:  # a runtime's own failure must not lose the other rows
        return failed_row(job, "failed", f"{type(e).__name__}: {first_line(e)}")


def run_in_subprocess(job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run a job in a fresh interpreter; a crash or time-out becomes a failed row, never an exception."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    with tempfile.TemporaryDirectory(prefix="edgepipe-worker-") as tmp:
        row_path = Path(tmp) / "row.json"
        try:
            # On any exception here (time-out, Ctrl-C, SIGTERM turned into KeyboardInterrupt) run() kills the worker.
            proc = subprocess.run(
                [sys.executable, "-m", "edgepipe.benchmarks.worker", str(row_path)],
                input=json.dumps(job),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return failed_row(job, "failed", f"benchmark did not finish within {timeout_s:.0f} s")
        try:
            row: dict[str, Any] = json.loads(row_path.read_text())
            return row
        except (OSError, ValueError):
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return failed_row(job, "failed", f"benchmark process exited with code {proc.returncode}: {tail}")


def main() -> int:
    warnings.filterwarnings("ignore")
    job = json.loads(sys.stdin.read())
    row = run_job(job)
    atomic_write_text(Path(sys.argv[1]), to_json(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
