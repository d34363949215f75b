"""Measuring in several fresh processes, in turn: the order, the stopping rule, and how rows merge."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.benchmarks.repeat import Repeat, measure, merge
from edgepipe.benchmarks.stats import latency_stats
from edgepipe.results import ArtifactRef, LatencyStats, ResultRow


def _row(name: str, samples: list[float], status: str = "ok") -> ResultRow:
    ok = status == "ok"
    return ResultRow(
        name=name,
        artifact=ArtifactRef(name=name, format="onnx", precision="fp32", path="m.onnx", size_bytes=1, sha256="s"),
        runtime="onnxruntime",
        device="cpu",
        threads=2,
        batch_size=4,
        status=status,  # type: ignore[arg-type]
        error=None if ok else "it broke",
        latency_ms=LatencyStats.model_validate(latency_stats(samples)) if ok else None,
        samples_ms=samples if ok else [],
        throughput_per_s=4 * len(samples) / (sum(samples) / 1e3) if ok else None,
        load_ms=10.0,
        cold_start_ms=100.0,
        peak_rss_mb=50.0,
        metrics={"accuracy": 0.9},
    )


class FakeWorker:
    """Stands in for a fresh process: each artifact's process median drifts by ``noise`` between processes."""

    def __init__(self, noise: float, fail: dict[str, int] | None = None):
        self.calls: list[tuple[str, bool]] = []
        self.rng = np.random.default_rng(0)
        self.noise, self.fail = noise, fail or {}

    def __call__(self, job: dict) -> list[ResultRow]:
        name = job["artifact"]["name"]
        self.calls.append((name, job["eval"] is not None))
        if sum(n == name for n, _ in self.calls) == self.fail.get(name):  # its n-th process fails
            return [_row(name, [], "failed")]
        level = job["level"] * np.exp(self.rng.normal(0, self.noise))
        return [_row(name, list(level + self.rng.exponential(0.01, 50)))]


def _jobs(*names: str) -> list[dict]:
    return [{"artifact": {"name": n}, "runtime": "onnxruntime", "device": "cpu", "eval": {"x": 1}, "path": n,
             "level": 1.0 + i} for i, n in enumerate(names)]  # fmt: skip


def test_processes_run_in_turn_and_only_the_first_scores():
    worker = FakeWorker(noise=0.05)
    measure(_jobs("a", "b", "c"), Repeat(processes=3, max_processes=3), worker)
    assert [n for n, _ in worker.calls] == ["a", "b", "c"] * 3  # A B C A B C A B C, not A A A B B B
    assert [scored for _, scored in worker.calls] == [True] * 3 + [False] * 6


def test_it_stops_at_the_target_or_the_most_processes():
    quiet = FakeWorker(noise=0.0001)
    [[row]] = measure(_jobs("a"), Repeat(processes=3, max_processes=10, target_half_width=0.02), quiet)
    assert row.latency_ms is not None and row.latency_ms.processes == 3  # narrow at once: the minimum
    noisy = FakeWorker(noise=0.2)
    [[row]] = measure(_jobs("a"), Repeat(processes=3, max_processes=6, target_half_width=0.02), noisy)
    assert row.latency_ms is not None and row.latency_ms.processes == 6
    assert row.latency_ms.ci_basis == "processes" and len(row.samples_ms) == 300


def test_the_time_budget_ends_new_rounds_but_not_the_minimum():
    noisy = FakeWorker(noise=0.2)
    [[row]] = measure(_jobs("a"), Repeat(processes=3, max_processes=10, time_budget_s=0.0), noisy)
    assert row.latency_ms is not None and row.latency_ms.processes == 3


def test_a_job_that_fails_first_is_not_repeated_and_a_later_failure_is_said():
    worker = FakeWorker(noise=0.05, fail={"a": 1})
    rows = measure(_jobs("a", "b"), Repeat(processes=3, max_processes=3), worker)
    assert rows[0][0].status == "failed" and [n for n, _ in worker.calls].count("a") == 1
    later = FakeWorker(noise=0.05, fail={"b": 2})
    rows = measure(_jobs("a", "b"), Repeat(processes=3, max_processes=3), later)
    b = rows[1][0]
    assert b.status == "ok" and "process 2: it broke" in b.session["repeat_failed"]
    assert b.latency_ms is not None and b.latency_ms.processes == 1
    assert rows[0][0].latency_ms is not None and rows[0][0].latency_ms.processes == 3


def test_merge_pools_runs_and_keeps_the_first_processes_quality():
    a, b = _row("x", [1.0] * 10 + [2.0] * 10), _row("x", [3.0] * 20)
    b.metrics = {"accuracy": 0.1}
    row = merge([a, b])
    assert row.latency_ms is not None and row.latency_ms.n == 40 and row.latency_ms.process_medians == [1.5, 3.0]
    assert row.metrics == {"accuracy": 0.9}
    # throughput: all items over all timed wall time (4 x 40 items in 30 + 60 ms)
    assert row.throughput_per_s == pytest.approx(4 * 40 / 0.090)
