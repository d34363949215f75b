"""The timed loop of one process: warm-up until the running median settles, then only the runtime's call,
with garbage collection off; and what the process itself can say (its OS threads, its peak memory)."""

from __future__ import annotations

import gc
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.runtimes import Session
from edgepipe.tensors import Feeds


@dataclass
class Timing:
    """One process's timed loop: per-call latencies (ms), the warm-up calls discarded before them, and the
    loop's wall time (for throughput: items per second actually served, not 1 / median)."""

    samples: list[float]
    warmup_runs: int
    wall_s: float


# Automatic warm-up: calls in chunks of WARMUP_CHUNK until a chunk's median is within WARMUP_SETTLED of
# the one before (caches filled, thread pools spun up, the runtime's own lazy work done), at most
# WARMUP_MAX_S seconds.
WARMUP_CHUNK, WARMUP_SETTLED, WARMUP_MAX_S = 10, 0.03, 3.0


def timed_call(session: Session, feeds: Feeds) -> float:
    """One call's latency in ms: the runtime's own measure where it keeps one (OpenVINO's
    ``InferRequest.latency``, what its benchmark_app reports), else the Python call around it."""
    t0 = time.perf_counter_ns()
    own = session.run_timed(feeds)
    return own if own is not None else (time.perf_counter_ns() - t0) / 1e6


def warm_up(session: Session, feeds: list[Feeds], warmup: int | str) -> int:
    """Untimed calls before timing: ``warmup`` of them, or with "auto" until the running median settles.
    Returns how many were made."""
    if warmup != "auto":
        for i in range(int(warmup)):
            session.run_timed(feeds[i % len(feeds)])
        return int(warmup)
    made, previous = 0, None
    deadline = time.perf_counter() + WARMUP_MAX_S
    while True:
        chunk = []
        for _ in range(WARMUP_CHUNK):
            chunk.append(timed_call(session, feeds[made % len(feeds)]))
            made += 1
        median = float(np.median(chunk))
        if previous is not None and abs(median - previous) <= WARMUP_SETTLED * previous:
            return made
        if time.perf_counter() > deadline:
            return made
        previous = median


def time_runs(session: Session, feeds: list[Feeds], warmup: int | str, runs: int, max_seconds: float) -> Timing:
    """Per-call latencies in ms after the warm-up; stops after ``max_seconds`` of timing. Only the
    runtime's call is timed (``run_timed``: no output copies; the runtime's own clock where it has one),
    with garbage collection off: a collection inside one call is not the model's latency."""
    warmed = warm_up(session, feeds, warmup)
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    gc_was_on = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        for i in range(runs):
            samples.append(timed_call(session, feeds[i % len(feeds)]))
            if time.perf_counter() > deadline and len(samples) >= 5:
                break
    finally:
        wall = time.perf_counter() - start
        if gc_was_on:
            gc.enable()
    return Timing(samples, warmed, wall)


def process_threads() -> int | None:
    """OS threads of this process (Linux): the runtime's pools as they really are, not as asked."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (interpreter and runtime included).

    Linux: VmHWM, the high-water mark of this program image. Not ru_maxrss: Linux keeps that across
    fork + exec, so a worker started by a 800 MB parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def in_turns(sessions: list[Session], feeds: list[Feeds], rounds: int, seconds: float) -> list[list[float]]:
    """Sessions timed in one process in turns (A B C, A B C, ...), each turn as many calls as fit in
    ``seconds`` (at least 5): each session's per-round medians in ms, so a drift of the machine touches all
    of them alike (their ratios pair round by round). Ten untimed calls first warm each one up."""
    for session, f in zip(sessions, feeds, strict=True):
        for _ in range(10):
            timed_call(session, f)
    medians: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for i, (session, f) in enumerate(zip(sessions, feeds, strict=True)):
            end, times = time.perf_counter() + seconds, list[float]()
            while len(times) < 5 or time.perf_counter() < end:
                times.append(timed_call(session, f))
            medians[i].append(float(np.median(times)))
    return medians
