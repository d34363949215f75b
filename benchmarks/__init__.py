"""Benchmark harness: latency statistics, task metrics, parity, reports and the results contract."""
