"""``edgepipe bench``: any model file on one runtime or several, at every threads x batch point; checked and
scored in this process, then timed in fresh processes in turn (``edgepipe.benchmarks.repeat``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgepipe.errors import InputError


def _bench_runtimes(args: argparse.Namespace) -> list[str]:
    """``--runtime a,b`` (several, compared on identical inputs), else the format's usual runtime."""
    from edgepipe.artifact import resolve_model_path
    from edgepipe.formats import detect_format
    from edgepipe.runtimes import default_runtime

    if args.runtime:
        names = [r.strip() for r in args.runtime.split(",") if r.strip()]
        if not names or len(set(names)) != len(names):
            raise InputError(f"--runtime: expected one runtime or several separated by commas, got '{args.runtime}'")
        return names
    return [default_runtime(detect_format(resolve_model_path(args.model)))]


def _bench_options(args: argparse.Namespace, runtimes: list[str]) -> dict[str, dict[str, Any]]:
    """Runtime options from the flags that belong to one runtime, refused when that runtime is not chosen."""
    flags = {"--no-xnnpack": ("litert", "xnnpack", False if args.no_xnnpack else None)}
    flags["--n-gpu-layers"] = ("llama.cpp", "n_gpu_layers", args.n_gpu_layers)
    options: dict[str, dict[str, Any]] = {}
    for flag, (runtime, key, value) in flags.items():
        if value is None:
            continue
        if runtime not in runtimes:
            raise InputError(f"{flag}: only the {runtime} runtime takes it")
        options.setdefault(runtime, {})[key] = value
    return options


def _parity(rows: list[Any], outputs: list[list[Any] | None]) -> None:
    """Each row after the first gets ``parity.max_abs_diff_vs_first``: the largest difference of its outputs
    from the first runtime's on identical inputs (NaN when their shapes differ)."""
    import numpy as np

    reference = outputs[0]
    for row, got in zip(rows[1:], outputs[1:], strict=True):
        if reference is None or got is None:
            continue
        diff = float("nan")
        if [np.shape(a) for a in got] == [np.shape(a) for a in reference]:
            diffs = [
                float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                for a, b in zip(got, reference, strict=True)
                if np.size(a)
            ]
            diff = float("nan") if any(np.isnan(diffs)) else max(diffs, default=0.0)  # NaN anywhere stays NaN
        row.parity = {"max_abs_diff_vs_first": diff}


def cmd_bench(args: argparse.Namespace) -> int:
    import itertools
    from pathlib import Path

    from edgepipe.benchmarks.generation import GenerationPoint, read_text
    from edgepipe.benchmarks.harness import Point, benchmark_file
    from edgepipe.benchmarks.inputs import InputChoice, load_inputs, parse_shapes
    from edgepipe.benchmarks.repeat import Checked, Repeat, time_in_processes
    from edgepipe.benchmarks.report import render_table
    from edgepipe.environment import describe_environment
    from edgepipe.progress import Console

    runtimes = _bench_runtimes(args)
    options = _bench_options(args, runtimes)
    shapes, given = parse_shapes(args.shape or []), load_inputs(args.input or [])
    text = None if args.text is None else read_text(args.text)
    points = [Point(t, b, args.seq_len) for t, b in itertools.product(args.threads or [None], args.batch_size)]
    in_here = args.processes == 0
    checked: list[Checked] = []
    for runtime in runtimes:
        out = Path(args.save_outputs) / runtime if args.save_outputs and len(runtimes) > 1 else args.save_outputs
        choice = InputChoice(shapes=shapes, given=given, outputs_dir=Path(out) if out else None)
        if checked and checked[0].inputs.feeds is not None:  # identical inputs: what the first runtime was fed
            fed = checked[0].inputs.feeds.items()
            choice = InputChoice(
                given={n: (a, f"the {runtimes[0]} run's input") for n, a in fed}, outputs_dir=choice.outputs_dir
            )
        rows = benchmark_file(
            args.model,
            runtime if args.runtime else None,
            points=points,
            device=args.device,
            warmup=args.warmup,
            runs=args.runs if in_here else 0,  # checked and scored here; timed in fresh processes below
            max_seconds=args.max_seconds,
            options=options.get(runtime),
            text=text,
            generation=GenerationPoint() if in_here else None,
            inputs=choice,
        )
        checked.append(Checked(rows, choice, options.get(runtime)))
    if not in_here:
        repeat = Repeat(args.processes, max(args.processes, args.max_processes), args.target, args.time_budget)
        timing = {"warmup": args.warmup, "runs": args.runs, "max_seconds": args.max_seconds, "seed": 0}
        # On stderr, and only on a terminal: a script reading stderr sees nothing but an error line.
        reporter = Console(sys.stderr, lines=sys.stderr.isatty())
        try:
            timed = time_in_processes(
                checked, timing, repeat, GenerationPoint(), log=reporter.log, progress=reporter.progress
            )
        finally:
            reporter.close()
        for entry, rows in zip(checked, timed, strict=True):
            entry.rows = rows
    _parity([c.rows[0] for c in checked], [c.inputs.outputs for c in checked])
    rows = [row for c in checked for row in c.rows]
    environment = describe_environment()
    if args.json:
        dicts = [{**row.to_dict(), "environment": environment} for row in rows]
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
        return 0
    print(render_table(rows))
    for row in rows:
        _details(row, args, environment, several=len(runtimes) > 1)
    if args.save_outputs:
        print(f"outputs of the first run: {args.save_outputs}/" + ("<runtime>/" if len(runtimes) > 1 else ""))
    return 0


def _details(row: Any, args: argparse.Namespace, environment: dict[str, Any], several: bool) -> None:
    from edgepipe.benchmarks.report import tensor_types

    lat = row.latency_ms
    assert lat is not None  # benchmark_model raises rather than return a row without timings
    basis = "across processes" if lat.ci_basis == "processes" else "of one process's runs"
    ci = (
        f"95% interval of the median {basis} [{lat.ci95[0]:.3f}, {lat.ci95[1]:.3f}] ms"
        if lat.ci95
        else "no 95% interval"
    )
    spread = f", process medians {lat.process_spread:.1%} apart" if lat.process_spread is not None else ""
    point = f"threads {row.threads or 'default'}, batch {row.batch_size}" + (
        f", length {row.sequence_length}" if row.sequence_length else ""
    )
    threads = row.session.get("num_threads")
    print(
        f"\n{row.runtime + ', ' if several else ''}{point}: {lat.n} runs in {lat.processes} process(es), "
        f"warm-up {lat.warmup_runs}; {ci}{spread}; mean {lat.mean:.3f} ms; "
        f"throughput {row.throughput_per_s or 0:.1f}/s (measured at batch {row.batch_size})"
    )
    cold = f"cold start {row.cold_start_ms:.0f} ms (process start to first output), " if row.cold_start_ms else ""
    print(
        f"{cold}load {row.load_ms:.1f} ms, first run {row.first_run_ms:.2f} ms, peak RSS {row.peak_rss_mb:.0f} MB; "
        f"threads: runtime says {threads if threads is not None else '?'}, process has "
        f"{row.session.get('process_threads', '?')}; inputs: {row.input_source}; CPU: {environment['cpu']['model']}"
    )
    info = row.session
    if info.get("architecture"):
        bpw = row.artifact.bits_per_weight
        print(
            f"{info['architecture']}, {row.artifact.parameters or 0:,} parameters, {bpw or 0:.2f} bits/weight; "
            f"tensor types: {tensor_types(info.get('tensor_types') or {})}"
        )
    if g := row.generation:
        print(
            f"prompt {g.prompt_tokens} tokens: {g.prompt_tokens_per_s:.0f} tok/s (median of {g.prompt_ms.n}); "
            f"generation ({g.method}): {g.generation_tokens_per_s:.1f} tok/s, median {g.token_ms.median:.3f} ms/token, "
            f"p90 {g.token_ms.p90:.3f} ms (n={g.token_ms.n} tokens)"
        )
    if not_measured := info.get("generation"):
        print(f"generation: {not_measured}")
    if "perplexity" in row.metrics:
        print(f"perplexity {row.metrics['perplexity']:.3f} on {args.text} ({', '.join(row.breakdown)})")
