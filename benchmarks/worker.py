"""Run one benchmark job in a fresh process: ``python -m edgepipe.benchmarks.worker ROWS.json < job.json``.

A job is one model file on one runtime and device at one or more points::

    {"path", "runtime", "device", "warmup" (calls, or "auto"), "runs", "max_seconds", "seed", "options", "artifact",
     "started_at" (time.time() when the parent started this process: the first row's cold start),
     "points": [{"threads", "batch_size", "sequence_length", "feeds": "timing.npz" | null}, ...],
     "eval": {"task": kind, "data": "eval.npz", "reference": "reference.npz" | null} | null,
     "generation": {"prompt": [token ids], "new_tokens", "runs"} | null}

The rows are written to ROWS.json, not stdout, which native libraries may write to at any time;
errors become rows with ``status`` "unavailable" or "failed" and a one-line ``error``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from edgepipe.errors import EdgepipeError, UnavailableError, first_line
from edgepipe.files import atomic_write_text
from edgepipe.results import ArtifactRef, ResultRow, failed_row


def _evaluation(spec: dict[str, Any] | None) -> Any:
    if not spec:
        return None
    from edgepipe.benchmarks.harness import Evaluation
    from edgepipe.tasks import EvalSet, task_class
    from edgepipe.tasks.base import load_outputs

    reference = load_outputs(Path(spec["reference"])) if spec.get("reference") else None
    return Evaluation(task_class(spec["task"]), EvalSet.load(Path(spec["data"])), reference)


def _points(job: dict[str, Any]) -> list[Any]:
    from edgepipe.benchmarks.harness import Point
    from edgepipe.tasks import EvalSet

    return [
        Point(
            p.get("threads"),
            p.get("batch_size", 1),
            p.get("sequence_length"),
            EvalSet.load(Path(p["feeds"])).batches if p.get("feeds") else None,
        )
        for p in job["points"]
    ]


def failed_rows(job: dict[str, Any], status: Literal["failed", "unavailable"], error: str) -> list[ResultRow]:
    artifact = ArtifactRef.model_validate(job["artifact"])
    return [failed_row(artifact, job["runtime"], job.get("device", "cpu"), status, error, **p) for p in job["points"]]


def run_job(job: dict[str, Any]) -> list[ResultRow]:
    from edgepipe.benchmarks.generation import GenerationPoint
    from edgepipe.benchmarks.harness import benchmark

    try:
        return benchmark(
            job["path"],
            job["runtime"],
            points=_points(job),
            device=job.get("device", "cpu"),
            warmup=job.get("warmup", "auto"),
            runs=job.get("runs", 300),
            max_seconds=job.get("max_seconds", 30.0),
            options=job.get("options"),
            evaluation=_evaluation(job.get("eval")),
            artifact=ArtifactRef.model_validate(job["artifact"]) if job.get("artifact") else None,
            seed=job.get("seed", 0),
            generation=GenerationPoint(**job["generation"]) if job.get("generation") else None,
            started_at=job.get("started_at"),
        )
    except UnavailableError as e:
        return failed_rows(job, "unavailable", str(e))
    except EdgepipeError as e:
        return failed_rows(job, "failed", str(e))
    except Exception as e:  # a runtime's own failure must not lose the other rows
        return failed_rows(job, "failed", f"{type(e).__name__}: {first_line(e)}")


def run_in_subprocess(job: dict[str, Any], timeout_s: float) -> list[ResultRow]:
    """Run a job in a fresh interpreter; a crash or time-out becomes failed rows, never an exception."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    with tempfile.TemporaryDirectory(prefix="edgepipe-worker-") as tmp:
        rows_path = Path(tmp) / "rows.json"
        try:
            # On any exception here (time-out, Ctrl-C, SIGTERM turned into KeyboardInterrupt) run() kills the worker.
            proc = subprocess.run(
                [sys.executable, "-m", "edgepipe.benchmarks.worker", str(rows_path)],
                input=json.dumps({**job, "started_at": time.time()}),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return failed_rows(job, "failed", f"benchmark did not finish within {timeout_s:.0f} s")
        try:
            return [ResultRow.model_validate(r) for r in json.loads(rows_path.read_text())]
        except (OSError, ValueError):
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return failed_rows(job, "failed", f"benchmark process {_exit_reason(proc.returncode)}: {tail}")


def _exit_reason(returncode: int) -> str:
    """'exited with code 3', or the signal that killed it, with what SIGILL means for a native runtime."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"was killed by signal {-returncode}"
    if name == "SIGILL":
        # Seen here: llama.cpp built natively enables AMX, which these VMs advertise but do not run.
        return "was killed by SIGILL (the runtime was built for CPU instructions this machine does not run)"
    return f"was killed by {name}"


def main() -> int:
    warnings.filterwarnings("ignore")
    rows = run_job(json.loads(sys.stdin.read()))
    # NaN stays NaN between processes (a model that outputs NaN must fail its gates, not pass as null);
    # results.json turns it into null.
    atomic_write_text(Path(sys.argv[1]), json.dumps([r.to_dict() for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
