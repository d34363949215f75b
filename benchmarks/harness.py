"""Benchmark one model file on one runtime: load (cold start), warm up, time many runs at each benchmark
point (threads x batch x sequence length), and score the task's metrics and parity with the reference
once, when evaluation data are given.

``benchmark`` returns one ``ResultRow`` per point. It runs in the calling process: ``edgepipe bench``
calls it directly; ``edgepipe run`` calls it through ``worker.py`` in a fresh process per artifact,
runtime and device, so that peak memory and cold start are per model and thread pools never compete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.artifact import resolve_model_path
from edgepipe.benchmarks.generation import GenerationPoint, generation_stats, prompt_for, text_evaluation
from edgepipe.benchmarks.inputs import InputChoice, described, save_outputs, synthetic_feeds
from edgepipe.benchmarks.model_file import describe_file, known_inputs, manifest_of
from edgepipe.benchmarks.stats import latency_stats
from edgepipe.benchmarks.timing import peak_rss_mb, process_threads, time_runs
from edgepipe.errors import InputError, first_line
from edgepipe.formats import detect_format
from edgepipe.results import ArtifactRef, GenerationStats, LatencyStats, ResultRow
from edgepipe.runtimes import Session, default_runtime, get_runtime, runtime_class
from edgepipe.tasks import EvalSet, Task
from edgepipe.tensors import Feeds, TensorSpec, with_ranges

if TYPE_CHECKING:
    from edgepipe.benchmarks.repeat import Repeat


@dataclass
class Point:
    """One benchmark point; ``feeds`` are real data shaped for it (None: synthetic inputs)."""

    threads: int | None = None
    batch_size: int = 1
    sequence_length: int | None = None
    feeds: list[Feeds] | None = None


@dataclass
class Evaluation:
    """What quality is scored on: the task kind, its evaluation batches, and the reference's outputs."""

    task: type[Task]
    data: EvalSet
    reference: list[np.ndarray] | None = None


def _fixed_batch(session: Session) -> int | None:
    dim = session.inputs[0].shape[0] if session.inputs and session.inputs[0].shape else None
    return dim if isinstance(dim, int) and dim > 0 else None


def for_session(session: Session, feeds: Feeds) -> list[Feeds]:
    """``feeds`` as this session takes them: keyed by its input names (taken in order when the model's
    names and the data's share none, e.g. a TFLite file's ``serving_default_args_0``),
    quantized where it takes integer inputs (full-integer models), split into its fixed batch (the
    remainder is dropped)."""
    names = [s.name for s in session.inputs]
    if (len(names) == 1 and len(feeds) == 1) or (len(names) == len(feeds) and not set(names) & set(feeds)):
        # One input, or none of the names shared (a converter named them args_0, args_1, ...): in order.
        arrays = list(feeds.values())
    elif missing := [n for n in names if n not in feeds]:
        raise InputError(f"the data lack model input(s) {missing} (data has {list(feeds)})")
    else:
        arrays = [feeds[n] for n in names]
    mapped = {s.name: _as_input(s, a) for s, a in zip(session.inputs, arrays, strict=True)}
    fixed, n = _fixed_batch(session), len(arrays[0]) if arrays and arrays[0].ndim else 1
    if fixed is None or fixed == n:
        return [mapped]
    return [{k: v[i : i + fixed] for k, v in mapped.items()} for i in range(0, n - fixed + 1, fixed)]


def _as_input(spec: TensorSpec, data: np.ndarray) -> np.ndarray:
    """Data as the model's input takes it: quantized for an integer input with a scale, and integer ids in
    the model's integer type (TFLite takes int32 where torch gave int64)."""
    data = spec.to_model(data)
    dtype = np.dtype(spec.dtype) if spec.dtype in np.sctypeDict else None
    if dtype is not None and data.dtype != dtype and data.dtype.kind in "iu" and dtype.kind in "iu":
        data = data.astype(dtype)
    return np.require(data, requirements="C")  # not ascontiguousarray: it makes a scalar input 1-D


def run_batches(session: Session, data: EvalSet) -> tuple[list[np.ndarray], EvalSet]:
    """The session's first output (the logits / hidden states a task scores) on every evaluation batch, as
    float, and the data cut to what it ran (a model of fixed batch drops a remainder)."""
    first = session.outputs[0]
    outputs, targets = [], []
    for i, batch in enumerate(data.batches):
        chunks = for_session(session, batch)
        if not chunks:
            size = len(next(iter(batch.values())))
            raise InputError(f"the model takes a fixed batch larger than an evaluation batch ({size})")
        out = np.concatenate([first.to_float(session.run(c)[0]) for c in chunks])
        outputs.append(out)
        target = data.targets[i]
        targets.append(None if target is None else target[: len(out)])
    batches = [{k: v[: len(o)] for k, v in b.items()} for b, o in zip(data.batches, outputs, strict=True)]
    return outputs, EvalSet(batches, targets, data.groups, data.options)


def evaluate(session: Session, evaluation: Evaluation) -> tuple[Any, Any, Any, int]:
    """(metrics, parity, breakdown, non-finite count) of the session's first output on the evaluation data."""
    outputs, data = run_batches(session, evaluation.data)
    reference = None
    if evaluation.reference is not None:
        reference = [r[: len(o)] for r, o in zip(evaluation.reference, outputs, strict=True)]
    nonfinite = int(sum(np.size(o) - np.count_nonzero(np.isfinite(o)) for o in outputs))
    metrics, parity, breakdown = evaluation.task.quality(outputs, data, reference)
    return metrics, parity, breakdown, nonfinite


def _generation(session: Session, point: GenerationPoint, seed: int) -> GenerationStats | None:
    """Tokens/s of a language model, or None (with the reason in the session's info) when it cannot
    generate: not a language model, or an artifact of fixed sequence lengths (TFLite signatures)."""
    found = prompt_for(session, point, seed)
    if found is None:
        return None
    try:
        return generation_stats(session, found[0], found[1], point.runs)
    except Exception as e:  # the runtime's own reason, e.g. a length it has no signature for
        session.info["generation"] = f"not measured: {first_line(e)}"
        return None


def _load(path: Path, runtime: str, device: str, threads: int | None, options: dict[str, Any] | None) -> Any:
    t0 = time.perf_counter()
    session = get_runtime(runtime).load(path, device=device, threads=threads, options=options)
    return session, (time.perf_counter() - t0) * 1e3


def benchmark(
    path: str | Path,
    runtime: str,
    *,
    points: list[Point],
    device: str = "cpu",
    warmup: int | str = "auto",
    runs: int = 300,
    max_seconds: float = 30.0,
    options: dict[str, Any] | None = None,
    evaluation: Evaluation | Callable[[Session], Evaluation] | None = None,
    artifact: ArtifactRef | None = None,
    seed: int = 0,
    generation: GenerationPoint | None = None,
    inputs: InputChoice | None = None,
    started_at: float | None = None,
) -> list[ResultRow]:
    """Benchmark a model file at every point and return one row per point. Raises EdgepipeError on bad
    input; quality is scored once (on the first point's session) and shared by the rows. ``evaluation``
    may be made from the loaded session (a text scored with the model's own tokenizer). With
    ``generation``, a language model's tokens/s are measured once per thread count (first row of each).
    ``inputs`` gives synthetic inputs' shapes and real arrays, and receives the first run's outputs.
    ``runs`` 0 checks and scores without timing (rows without latency). ``started_at`` (``time.time()`` when
    this process was started) gives the first row its cold start: process start to first output."""
    choice = inputs or InputChoice()
    path = resolve_model_path(path)
    fmt = detect_format(path)
    rt = get_runtime(runtime)
    if fmt not in rt.formats:
        raise InputError(f"{path}: format '{fmt}' cannot run on runtime '{runtime}' (it runs: {', '.join(rt.formats)})")
    rt.require()
    manifest = manifest_of(path)  # hashes the model's files: once per benchmark
    ref = artifact or describe_file(path, fmt, manifest)
    limit = manifest.preprocessing.get("max_length") if manifest else None
    if limit and (too_long := [p.sequence_length for p in points if (p.sequence_length or 0) > limit]):
        raise InputError(f"{path}: sequence length {too_long[0]} is longer than the model's maximum {limit}")
    rows: list[ResultRow] = []
    sessions: dict[int | None, tuple[Any, float]] = {}
    generated: set[int | None] = set()
    task: str | None = None
    known: list[TensorSpec] | None = None
    quality: tuple[Any, Any, Any, int | None] = ({}, None, {}, None)
    measured: set[tuple[int | None, int, int | None]] = set()
    try:
        for point in points:
            if point.threads not in sessions:
                sessions[point.threads] = _load(path, runtime, device, point.threads, options)
            session, load_ms = sessions[point.threads]
            known = known_inputs(path, manifest) if known is None else known
            specs = with_ranges(session.inputs, known)
            if point.feeds:
                feeds, source = [c for f in point.feeds for c in for_session(session, f)], "evaluation data"
            else:
                try:
                    one, source = synthetic_feeds(
                        specs,
                        _fixed_batch(session) or point.batch_size,
                        point.sequence_length,
                        seed,
                        shapes=choice.shapes,
                        given=choice.given,
                    )
                except InputError as e:
                    raise InputError(f"{path}: {e}") from None
                feeds = [one]
            batch = next((len(a) for a in feeds[0].values() if a.ndim), point.batch_size)  # a scalar has none
            if (point.threads, batch, point.sequence_length) in measured:
                continue  # a file of fixed batch (TFLite: 1) ran this point already at its own batch
            measured.add((point.threads, batch, point.sequence_length))
            session.check_feeds(feeds[0])
            t1 = time.perf_counter()
            try:
                outputs = session.run(feeds[0])
            except Exception as e:  # the runtime's own message, without its traceback
                raise InputError(
                    f"{path}: {runtime} failed to run it on {described(feeds[0], source, choice)}: {first_line(e)}"
                ) from e
            first_run_ms = (time.perf_counter() - t1) * 1e3
            cold_start_ms = (time.time() - started_at) * 1e3 if started_at is not None and not rows else None
            choice.point_feeds.append(feeds)
            if not rows:
                choice.feeds, choice.outputs = feeds[0], outputs
                if choice.outputs_dir is not None:
                    save_outputs(choice.outputs_dir, session.outputs, outputs)
            timing = time_runs(session, feeds, warmup, runs, max_seconds) if runs else None
            peak = peak_rss_mb()  # before evaluation, which runs larger batches
            session.info["process_threads"] = process_threads()  # the runtime's pools are up by now
            session.info.setdefault("timer", "the Python call")  # else the runtime's own clock, by name
            if evaluation is not None and not rows:
                scored = evaluation if isinstance(evaluation, Evaluation) else evaluation(session)
                task = scored.task.kind
                quality = evaluate(session, scored)
            speed = None
            if generation is not None and point.threads not in generated:
                generated.add(point.threads)
                speed = _generation(session, generation, seed)
            stats = LatencyStats.model_validate(latency_stats(timing.samples, timing.warmup_runs)) if timing else None
            rows.append(
                ResultRow(
                    artifact=ref
                    if ref.parameters
                    else ref.model_copy(update={"parameters": session.info.get("parameters")}),
                    runtime=runtime,
                    runtime_version=rt.version(),
                    device=device,
                    threads=point.threads,
                    batch_size=batch,
                    sequence_length=point.sequence_length,
                    status="ok",
                    task=task,
                    inputs=[s.model_dump(exclude_none=True) for s in specs],
                    input_source=source,
                    load_ms=load_ms,
                    first_run_ms=first_run_ms,
                    cold_start_ms=cold_start_ms,
                    latency_ms=stats,
                    samples_ms=timing.samples if timing else [],
                    throughput_per_s=batch * len(timing.samples) / timing.wall_s if timing else None,
                    peak_rss_mb=peak,
                    metrics=quality[0],
                    parity=quality[1],
                    breakdown=quality[2],
                    nonfinite_outputs=quality[3],
                    generation=speed,
                    session=session.info,
                )
            )
    finally:
        for session, _ in sessions.values():
            session.close()
    return rows


def benchmark_file(
    path: str | Path,
    runtime: str | None = None,
    *,
    points: list[Point] | None = None,
    device: str = "cpu",
    warmup: int | str = "auto",
    runs: int = 300,
    max_seconds: float = 30.0,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    text: str | None = None,
    generation: GenerationPoint | None = None,
    inputs: InputChoice | None = None,
) -> list[ResultRow]:
    """Benchmark any model file (or edgepipe artifact folder) on synthetic inputs in this process: one
    row per point (default: one point, the runtime's own threads, batch 1). ``runtime`` defaults to the
    format's usual one; ``runs`` 0 checks and scores without timing. A language model that carries its
    tokenizer (GGUF) also gets tokens/s (``generation``) and, given a ``text``, its perplexity on it."""
    resolved = resolve_model_path(path)
    fmt = detect_format(resolved)  # its errors name the file already
    try:
        name = runtime or default_runtime(fmt)
        runtime_class(name)
    except InputError as e:
        raise InputError(f"{resolved}: {e}" if runtime is None else f"--runtime: {e}") from None
    rows = benchmark(
        resolved,
        name,
        points=points or [Point()],
        device=device,
        warmup=warmup,
        runs=runs,
        max_seconds=max_seconds,
        options=options,
        seed=seed,
        evaluation=None if text is None else lambda session: text_evaluation(session, text),
        generation=generation,
        inputs=inputs,
    )
    for row in rows:
        row.name = row.artifact.name or resolved.stem
    return rows


def benchmark_model(
    path: str | Path,
    runtime: str | None = None,
    *,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    sequence_length: int | None = None,
    warmup: int | str = "auto",
    runs: int = 300,
    max_seconds: float = 30.0,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    text: str | None = None,
    generation: GenerationPoint | None = None,
    inputs: InputChoice | None = None,
    repeat: Repeat | None = None,
) -> ResultRow:
    """Benchmark any model file (or edgepipe artifact folder) on synthetic inputs: one results row.

    It is checked and scored in this process (bad input raises here, with its one-line message), then
    timed in fresh processes (``repeat``, default ``Repeat()``: 3 or more, until the median is known to
    +-2% or 60 s are spent), so peak memory and cold start are the model's own and the interval is the
    one between processes. ``repeat=Repeat(processes=0)`` times it in this process instead. A language
    model that carries its tokenizer (GGUF) also gets tokens/s (``generation``, by default 32 tokens
    after a 64-token prompt, 5 runs) and, given a ``text``, its perplexity on it. ``inputs``: shapes for
    dynamic dimensions, real arrays, a folder for the outputs (``InputChoice``).

    >>> row = benchmark_model("model.onnx", threads=2, runs=200)      # doctest: +SKIP
    >>> row.latency_ms.median, row.latency_ms.ci95                      # doctest: +SKIP
    """
    from edgepipe.benchmarks.repeat import Checked, Repeat, time_in_processes

    repeat = repeat or Repeat()
    point = Point(threads, batch_size, sequence_length)
    generation = generation or GenerationPoint()
    in_here = repeat.processes == 0
    choice = inputs or InputChoice()
    rows = benchmark_file(
        path,
        runtime,
        points=[point],
        device=device,
        warmup=warmup,
        runs=runs if in_here else 0,
        max_seconds=max_seconds,
        options=options,
        seed=seed,
        text=text,
        generation=generation if in_here else None,
        inputs=choice,
    )
    if not in_here:
        timing = {"warmup": warmup, "runs": runs, "max_seconds": max_seconds, "seed": seed}
        [rows] = time_in_processes([Checked(rows, choice, options)], timing, repeat, generation)
    return rows[0]
