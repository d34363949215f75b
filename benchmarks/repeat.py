"""Measure artifacts in several fresh processes, interleaved (A B C A B C ...), until the median's interval
is narrow enough or the time budget is spent.

One process's median moves between processes on a shared machine (caches, frequency, neighbours) far
more than its own interval shows, so the figure a comparison rests on is the variation between processes.
The first round checks and scores each artifact (quality, parity, generation speed); later rounds only
time it. Running the artifacts in turn within each round lets the drift they all see cancel in a ratio
of the same round's processes (``stats.speedup`` pairs them).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepipe.benchmarks.stats import latency_stats, relative_half_width
from edgepipe.errors import EdgepipeError
from edgepipe.progress import Progress, no_progress
from edgepipe.results import LatencyStats, ResultRow
from edgepipe.stage import Log, silent

if TYPE_CHECKING:
    from edgepipe.benchmarks.generation import GenerationPoint
    from edgepipe.benchmarks.inputs import InputChoice


@dataclass
class Repeat:
    """How many fresh processes per artifact: at least ``processes``, more (up to ``max_processes``) while
    some median's 95% interval is wider than +-``target_half_width`` and ``time_budget_s`` (for all
    rounds together) is not spent."""

    processes: int = 3
    max_processes: int = 10
    target_half_width: float = 0.02
    time_budget_s: float = 60.0


def _timing_only(job: dict[str, Any]) -> dict[str, Any]:
    return {**job, "eval": None, "generation": None}


def widest(measured: list[list[list[ResultRow]]]) -> tuple[float, str]:
    """The widest relative half-width of any row's process medians so far, and whose (inf: none yet)."""
    worst, label = 0.0, ""
    for per_row in measured:
        for procs in per_row:
            medians = [p.latency_ms.median for p in procs if p.latency_ms]
            width = relative_half_width(medians)
            width = float("inf") if width is None else width
            if width > worst:
                worst, label = width, procs[0].label
    return worst, label


def measure(
    jobs: list[dict[str, Any]],
    repeat: Repeat,
    run_job: Any,
    log: Log = silent,
    progress: Progress = no_progress,
) -> list[list[ResultRow]]:
    """Each job's rows (one per benchmark point), each row merged over its processes. ``run_job(job)`` runs
    one job in a fresh process and returns its rows (``worker.run_in_subprocess``); a job whose first
    process fails keeps its failed rows and is not repeated."""
    started = time.perf_counter()
    step = f"benchmark: {len(jobs)} x {repeat.processes}+ processes"
    planned, done = len(jobs) * repeat.processes, 0
    first = []
    for job in jobs:
        rows = run_job(job)
        first.append(rows)
        log(_said(job, rows))
        done += 1
        progress(step, done, planned)
    # measured[j][i]: job j's row i as each process measured it
    measured = [[[r] for r in rows] for rows in first]
    active = [j for j, rows in enumerate(first) if rows and all(r.status == "ok" and r.latency_ms for r in rows)]
    rounds, last_round = 1, time.perf_counter() - started
    width, _ = widest([measured[j] for j in active])
    while active and rounds < repeat.max_processes:
        # A round is not started that the last one's duration says would end past the budget.
        over = time.perf_counter() - started + last_round > repeat.time_budget_s
        if rounds >= repeat.processes and (width <= repeat.target_half_width or over):
            break
        round_start = time.perf_counter()
        planned = max(planned, done + len(active))
        for j in list(active):
            rows = run_job(_timing_only(jobs[j]))
            done += 1
            progress(step, done, planned)
            if len(rows) != len(measured[j]) or any(r.status != "ok" or not r.latency_ms for r in rows):
                said = next((r.error for r in rows if r.error), "no rows")
                for per_row in measured[j]:
                    per_row[0].session["repeat_failed"] = f"process {rounds + 1}: {said}"
                active.remove(j)
                continue
            for per_row, row in zip(measured[j], rows, strict=True):
                per_row.append(row)
        rounds += 1
        last_round = time.perf_counter() - round_start
        width, whose = widest([measured[j] for j in active])
        shown = f"+-{width:.1%}" if width != float("inf") else "none yet"
        took = time.perf_counter() - started
        log(f"[bench] round {rounds}: widest interval of a median {shown} ({whose}), {took:.0f} s")
    progress(step, done, done)
    return [[merge(procs) for procs in per_row] for per_row in measured]


def merge(procs: list[ResultRow]) -> ResultRow:
    """One row from the same point measured in several processes: latency pooled with the interval of the
    process medians; cold start, load and first run as their median over processes; the highest peak
    memory; throughput as all items over all timed wall time. Quality comes from the first process."""
    row = procs[0].model_copy(deep=True)
    if len(procs) == 1 or row.latency_ms is None:
        row.samples_ms = [round(x, 4) for x in row.samples_ms]
        return row
    stats = latency_stats([p.samples_ms for p in procs], warmup_runs=row.latency_ms.warmup_runs)
    row.latency_ms = LatencyStats.model_validate(stats)
    row.samples_ms = [round(x, 4) for p in procs for x in p.samples_ms]
    items = [(p.batch_size or 1) * len(p.samples_ms) for p in procs]
    walls = [n / p.throughput_per_s for n, p in zip(items, procs, strict=True) if p.throughput_per_s]
    row.throughput_per_s = sum(items) / sum(walls) if len(walls) == len(procs) and sum(walls) > 0 else None
    for field in ("cold_start_ms", "load_ms", "first_run_ms"):
        values = [v for p in procs if (v := getattr(p, field)) is not None]
        setattr(row, field, statistics.median(values) if values else None)
    peaks = [p.peak_rss_mb for p in procs if p.peak_rss_mb is not None]
    row.peak_rss_mb = max(peaks) if peaks else None
    return row


def _said(job: dict[str, Any], rows: list[ResultRow]) -> str:
    name = (job.get("artifact") or {}).get("name") or job["path"]
    parts = []
    for row in rows:
        lat = row.latency_ms
        point = f" {row.batch_size}x{row.sequence_length}" if row.sequence_length else ""
        parts.append(
            f"{point.strip() or ''} median {lat.median:.3f} ms (n={lat.n})".strip()
            if lat
            else f"{row.status}: {row.error}"
        )
    return f"[bench] {name} on {job['runtime']}/{job['device']}: {'; '.join(parts)}"


@dataclass
class Checked:
    """One file on one runtime, checked and scored in this process (``harness.benchmark`` with ``runs=0``):
    its rows (one per point), the inputs each point was fed, and the runtime's options."""

    rows: list[ResultRow]
    inputs: InputChoice
    options: dict[str, Any] | None = None


def time_in_processes(
    checked: list[Checked],
    timing: dict[str, Any],
    repeat: Repeat,
    generation: GenerationPoint | None = None,
    timeout_s: float = 600.0,
    log: Log = silent,
    progress: Progress = no_progress,
) -> list[list[ResultRow]]:
    """Time files already checked and scored in this process in fresh processes, in turn, on the very same
    inputs and with the same runtime options. ``timing``: warmup, runs, max_seconds, seed. Returns the
    checked rows with the timings (and peak memory, cold start, generation speed) of the fresh processes."""
    from edgepipe.benchmarks.worker import run_in_subprocess
    from edgepipe.tasks import EvalSet

    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as tmp:
        jobs = []
        for j, entry in enumerate(checked):
            points = []
            for i, (row, feeds) in enumerate(zip(entry.rows, entry.inputs.point_feeds, strict=True)):
                saved = EvalSet(feeds, [None] * len(feeds)).save(Path(tmp) / f"feeds-{j}-{i}.npz")
                point = {"threads": row.threads, "batch_size": row.batch_size, "sequence_length": row.sequence_length}
                points.append({**point, "feeds": str(saved)})
            first = entry.rows[0]
            jobs.append(
                {
                    "path": first.artifact.path,
                    "runtime": first.runtime,
                    "device": first.device,
                    "points": points,
                    **timing,
                    "options": entry.options,
                    "eval": None,
                    "generation": asdict(generation) if generation else None,
                    "artifact": first.artifact.model_dump(),
                }
            )
        measured = measure(jobs, repeat, lambda job: run_in_subprocess(job, timeout_s), log, progress)
    return [
        [_with_timing(c, t) for c, t in zip(entry.rows, got, strict=True)]
        for entry, got in zip(checked, measured, strict=True)
    ]


def _with_timing(checked: ResultRow, timed: ResultRow) -> ResultRow:
    """The fresh processes' row, with what was scored here (quality, the inputs' description)."""
    if timed.status != "ok":
        raise EdgepipeError(
            f"{checked.artifact.path}: {checked.runtime} ran it here but not in a fresh process: {timed.error}"
        )
    keep = ("name", "metrics", "parity", "breakdown", "nonfinite_outputs", "input_source", "inputs", "task")
    row = timed.model_copy(update={k: getattr(checked, k) for k in keep})
    row.session = {**checked.session, **timed.session}
    return row
