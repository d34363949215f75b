"""Benchmark one model file on one runtime: load (cold start), warm up, time many runs, then score
the task metric and parity with the reference outputs when evaluation data are given.

``benchmark_model`` returns one results row (see README, "The results contract"). It runs in the
calling process: ``edgepipe bench`` calls it directly; ``edgepipe run`` calls it through
``worker.py`` in a fresh process per artifact, runtime and device, so that peak memory and cold start are per model and
runtimes' thread pools never compete.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifact import FileEntry, TensorSpec, content_sha256, read_manifest, resolve_model_path, sha256_file
from edgepipe.benchmarks.stats import latency_stats
from edgepipe.errors import InputError, first_line
from edgepipe.formats import MANIFEST_NAME, detect_format
from edgepipe.metrics import METRICS, parity
from edgepipe.runtimes import Session, get_runtime


def side_files(path: Path) -> list[Path]:
    """Files that belong to a model file: an IR's .bin, an ONNX model's conventional external data."""
    candidates = {".xml": [path.with_suffix(".bin")], ".onnx": [path.with_name(path.name + ".data")]}
    return [f for f in candidates.get(path.suffix.lower(), []) if f.is_file()]


@dataclass
class EvalData:
    """Evaluation data: named inputs batched along axis 0, labels, and the reference model's outputs.

    Input names must match the model's; with a single input on both sides the name may differ.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None
    metric: str = "accuracy"

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def feeds_for(self, session: Session, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples [start, stop) as a feed dict keyed by the session's input names, quantized where
        the model takes integer inputs (full-integer TFLite)."""
        names = [s.name for s in session.inputs]
        if len(names) == 1 and len(self.inputs) == 1:
            arrays = list(self.inputs.values())
        elif missing := [n for n in names if n not in self.inputs]:
            raise InputError(f"evaluation data lack model input(s) {missing} (data has {list(self.inputs)})")
        else:
            arrays = [self.inputs[n] for n in names]
        return {
            spec.name: np.ascontiguousarray(spec.to_model(a[start:stop]))
            for spec, a in zip(session.inputs, arrays, strict=True)
        }


def describe_file(path: Path, format: str) -> dict[str, Any]:
    """The ``artifact`` block of a results row for a model file. The precision is known only when the
    file sits in an edgepipe artifact folder whose manifest matches its hash."""
    files = [path, *side_files(path)]
    entries = [FileEntry(path=f.name, size_bytes=f.stat().st_size, sha256=sha256_file(f)) for f in files]
    block: dict[str, Any] = {
        "format": format,
        "precision": None,
        "path": str(path),
        "size_bytes": sum(e.size_bytes for e in entries),
        "sha256": content_sha256(entries),
    }
    if (path.parent / MANIFEST_NAME).is_file():
        try:
            manifest = read_manifest(path.parent)
        except InputError:
            return block
        if manifest.primary == path.name and manifest.sha256 == block["sha256"]:
            block.update(name=manifest.name, precision=manifest.precision)
    return block


def random_feeds(inputs: list[TensorSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs drawn from each input's spec: normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        try:
            shape, dtype = spec.concrete_shape(batch), np.dtype(spec.dtype)
        except TypeError:
            raise InputError(f"input '{spec.name}': cannot make random data of dtype {spec.dtype}") from None
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 100, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        else:
            raise InputError(f"input '{spec.name}': cannot make random data of dtype {spec.dtype}")
    return feeds


def _fixed_batch(session: Session) -> int | None:
    dim = session.inputs[0].shape[0] if session.inputs[0].shape else None
    return dim if isinstance(dim, int) and dim > 0 else None


def _data_feeds(session: Session, data: EvalData, size: int, limit: int = 64) -> list[dict[str, np.ndarray]]:
    """Up to ``limit`` whole batches of evaluation data, to cycle through while timing."""
    starts = range(0, len(data) - size + 1, size)[:limit]
    return [data.feeds_for(session, i, i + size) for i in starts]


def time_runs(
    session: Session, feeds: list[dict[str, np.ndarray]], warmup: int, runs: int, max_seconds: float
) -> list[float]:
    """Per-call latencies in ms, after ``warmup`` untimed calls; stops after ``max_seconds`` of timing."""
    for i in range(warmup):
        session.run(feeds[i % len(feeds)])
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for i in range(runs):
        t0 = time.perf_counter_ns()
        session.run(feeds[i % len(feeds)])
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() > deadline and len(samples) >= 5:
            break
    return samples


def evaluate(
    session: Session, data: EvalData, batch_size: int = 64
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Task metric and parity on the evaluation data (outputs[0] are the logits)."""
    fixed = _fixed_batch(session)
    size = fixed or batch_size
    n = len(data) - len(data) % size if fixed else len(data)
    if n == 0:
        raise InputError(f"the model takes a fixed batch of {size}, more than the {len(data)} evaluation samples")
    first_output = session.outputs[0]  # the logits / embeddings the metric and parity are computed on
    outputs = np.concatenate(
        [first_output.to_float(session.run(data.feeds_for(session, i, min(i + size, n)))[0]) for i in range(0, n, size)]
    )
    metrics = METRICS[data.metric](outputs, data.labels[:n]) if data.labels is not None else {}
    par = parity(outputs, data.reference[:n]) if data.reference is not None else None
    return metrics, par


def benchmark_model(
    path: str | Path,
    runtime: str,
    *,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    warmup: int = 20,
    runs: int = 300,
    max_seconds: float = 30.0,
    options: dict[str, Any] | None = None,
    data: EvalData | None = None,
    artifact: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Benchmark a model file and return one results row. Raises EdgepipeError on bad input."""
    path = resolve_model_path(path)
    fmt = detect_format(path)
    rt = get_runtime(runtime)
    if fmt not in rt.formats:
        raise InputError(f"{path}: format '{fmt}' cannot run on runtime '{runtime}' (it runs: {', '.join(rt.formats)})")
    rt.require()

    t0 = time.perf_counter()
    session = rt.load(path, device=device, threads=threads, options=options)
    load_ms = (time.perf_counter() - t0) * 1e3
    with session:
        size = _fixed_batch(session) or batch_size
        feeds = _data_feeds(session, data, size) if data is not None else []
        input_source = "evaluation data" if feeds else "random from input spec"
        feeds = feeds or [random_feeds(session.inputs, size, seed)]
        session.check_feeds(feeds[0])
        t1 = time.perf_counter()
        try:
            session.run(feeds[0])
        except Exception as e:  # the runtime's own message, without its traceback
            shapes = {k: list(v.shape) for k, v in feeds[0].items()}
            raise InputError(f"{path}: {runtime} failed to run it on {input_source} {shapes}: {first_line(e)}") from e
        first_run_ms = (time.perf_counter() - t1) * 1e3

        samples = time_runs(session, feeds, warmup, runs, max_seconds)
        peak_rss_mb = _peak_rss_mb()  # before evaluation, which runs larger batches
        stats = latency_stats(samples)
        metrics, par = evaluate(session, data) if data is not None else ({}, None)
        info = session.info
    actual_batch = size
    row: dict[str, Any] = {
        "artifact": artifact or describe_file(path, fmt),
        "runtime": runtime,
        "runtime_version": rt.version(),
        "device": device,
        "threads": threads,
        "batch_size": actual_batch,
        "status": "ok",
        "inputs": [s.model_dump(exclude_none=True) for s in session.inputs],
        "input_source": input_source,
        "load_ms": load_ms,
        "first_run_ms": first_run_ms,
        "latency_ms": stats,
        "throughput_per_s": actual_batch / stats["median"] * 1e3,
        "peak_rss_mb": peak_rss_mb,
        "metrics": metrics,
        "parity": par,
        "session": info,
    }
    return row


def _peak_rss_mb() -> float:
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
