"""Does edgepipe measure what the runtimes' own tools measure? Prints edgepipe's latency beside theirs.

    python -m edgepipe.benchmarks.agreement [--run runs/quickstart] [--gguf FILE] [--rounds 8] [--threads 2]
                                            [--seconds 2] [--only NAME] [--json]

The ONNX and OpenVINO artifacts of ``--run`` (the newest of each name; ``edgepipe run recipes/quickstart.yaml``
makes them) and a GGUF file (``--gguf``, or the run's own) are measured in fresh processes, interleaved
round by round (edgepipe A, bare A, benchmark_app A, edgepipe B, ...), at the same threads and input shape:

- edgepipe: the benchmark worker (``worker.run_in_subprocess``), as ``edgepipe run`` measures;
- a bare loop: onnxruntime ``session.run`` / OpenVINO ``request.infer()`` on a tensor set once, each call
  timed with ``perf_counter_ns`` and gc off; for GGUF, llama-cpp-python ``Llama.eval([token])`` per new token
  (same n_ctx and F32 KV cache as edgepipe) against edgepipe's generation token latency;
- OpenVINO's ``benchmark_app`` (its "Median:" line) with threads pinned (``-hint none -nthreads N -nstreams 1
  -api sync -infer_precision f32``), for IR files and for ONNX files, then paired with edgepipe running the
  same file on OpenVINO (benchmark_app runs an ONNX file on OpenVINO, not onnxruntime).

Per artifact and tool: the median of the process medians and the ratio edgepipe / tool with a 95% interval
from the per-round pairs. Goal: within 3% of the bare loop, 5% of benchmark_app ("MEETS" on the point
estimate; "interval inside" when the whole interval lies in the band).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.artifact import Artifact, load_artifact
from edgepipe.benchmarks.stats import ratio_interval
from edgepipe.benchmarks.worker import run_in_subprocess
from edgepipe.environment import describe_environment
from edgepipe.errors import EdgepipeError

BANDS = {"bare": 0.03, "benchmark_app": 0.05}
WARMUP, RUNS, TIMEOUT_S = 50, 1000, 300.0
PROMPT, NEW_TOKENS, GEN_RUNS, N_CTX = [1 + i % 50 for i in range(16)], 32, 5, 256

_LOOP = """
for _ in range(warmup):
    call()
gc.disable()
times, end = [], time.perf_counter() + seconds
while len(times) < runs and (time.perf_counter() < end or len(times) < 5):
    t0 = time.perf_counter_ns()
    call()
    times.append((time.perf_counter_ns() - t0) / 1e6)
print(json.dumps({"median_ms": float(np.median(times))}))
"""
_HEAD = "import gc, json, sys, time\nimport numpy as np\n"
_ARGS = "path, threads, warmup, runs, seconds = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])\n"
BARE = {
    "onnxruntime": _HEAD
    + _ARGS
    + """import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
shape = lambda i: [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
feeds = {i.name: rng.random(shape(i), dtype=np.float32) for i in session.get_inputs()}
call = lambda: session.run(None, feeds)
"""
    + _LOOP,
    "openvino": _HEAD
    + _ARGS
    + """import openvino as ov
core = ov.Core()
config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
compiled = core.compile_model(core.read_model(path), "CPU", config)
request = compiled.create_infer_request()
rng = np.random.default_rng(0)
for i, port in enumerate(compiled.inputs):
    shape = [d.get_length() if d.is_static else 1 for d in port.get_partial_shape()]
    request.set_input_tensor(i, ov.Tensor(rng.random(shape, dtype=np.float32)))
call = request.infer
"""
    + _LOOP,
    "llama.cpp": _HEAD
    + """import llama_cpp
path, threads, n_ctx, new_tokens, runs = sys.argv[1], *map(int, sys.argv[2:6])
prompt = json.loads(sys.argv[6])
llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, n_batch=n_ctx,
                      type_k=0, type_v=0, verbose=False, logits_all=False)  # F32 KV cache, as edgepipe's default
times = []
gc.disable()
for r in range(runs + 1):  # the first generation is untimed
    llm.reset()
    llm.eval(prompt)
    for k in range(new_tokens):
        t0 = time.perf_counter_ns()
        llm.eval([prompt[k % len(prompt)]])  # the token's id does not change the cost of decoding it
        if r:
            times.append((time.perf_counter_ns() - t0) / 1e6)
print(json.dumps({"median_ms": float(np.median(times))}))
""",
}


@dataclass
class Target:
    """One file on one runtime: edgepipe's process medians and each tool's, one per round (None: failed)."""

    name: str
    runtime: str
    path: Path
    shapes: dict[str, list[int]]
    tools: list[str]
    medians: dict[str, list[float | None]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def targets(artifacts: list[Artifact], gguf: Path | None) -> list[Target]:
    found: list[Target] = []
    for a in artifacts:
        m = a.manifest
        shapes = {s.name: [d if isinstance(d, int) and d > 0 else 1 for d in s.shape] for s in m.inputs}
        if m.format == "onnx":
            found.append(Target(m.name, "onnxruntime", a.model_file, shapes, ["bare"]))
            found.append(Target(m.name, "openvino", a.model_file, shapes, ["benchmark_app"]))
        elif m.format == "openvino":
            found.append(Target(m.name, "openvino", a.model_file, shapes, ["bare", "benchmark_app"]))
        elif m.format == "gguf" and gguf is None:
            found.append(Target(m.name, "llama.cpp", a.model_file, {}, ["bare"]))
    if gguf is not None:
        name = gguf.parent.name if gguf.name == "model.gguf" else gguf.name  # an artifact folder's file
        found.append(Target(name, "llama.cpp", gguf, {}, ["bare"]))
    return found


def run_artifacts(run: Path) -> list[Artifact]:
    """The newest artifact of each name in ``run`` that a runtime here can measure (not torch)."""
    newest: dict[str, Artifact] = {}
    for folder in sorted((run / "artifacts").iterdir()) if (run / "artifacts").is_dir() else []:
        try:
            a = load_artifact(folder)
        except EdgepipeError:
            continue
        m, old = a.manifest, newest.get(a.manifest.name)
        if m.format in ("onnx", "openvino", "gguf") and (old is None or m.created_at > old.manifest.created_at):
            newest[m.name] = a
    return sorted(newest.values(), key=lambda a: a.manifest.name)


def measure(t: Target, tool: str, threads: int, seconds: float) -> float:
    """One fresh process's median in ms (per generated token for GGUF); RuntimeError with its reason."""
    if tool == "edgepipe":
        gguf = t.runtime == "llama.cpp"
        point = {"threads": threads, "batch_size": 1, "sequence_length": len(PROMPT) if gguf else None, "feeds": None}
        job = {"path": str(t.path), "runtime": t.runtime, "device": "cpu", "points": [point],
               "warmup": 1 if gguf else WARMUP, "runs": 1 if gguf else RUNS, "max_seconds": seconds, "seed": 0,
               "artifact": None, "eval": None,
               "generation": {"prompt": PROMPT, "new_tokens": NEW_TOKENS, "runs": GEN_RUNS} if gguf else None,
               "options": {"n_ctx": N_CTX} if gguf else None}  # fmt: skip
        row = run_in_subprocess(job, TIMEOUT_S)[0]
        stats = (row.generation.token_ms if row.generation else None) if gguf else row.latency_ms
        if row.status != "ok" or stats is None:
            raise RuntimeError(row.error or f"status {row.status}, no latency")
        return float(stats.median)
    if tool == "benchmark_app":
        shape = ",".join(f"{n}[{','.join(map(str, s))}]" for n, s in t.shapes.items())
        cmd = [str(Path(sys.executable).parent / "benchmark_app"), "-m", str(t.path), "-d", "CPU", "-hint", "none",
               "-nthreads", str(threads), "-nstreams", "1", "-api", "sync", "-infer_precision", "f32",
               "-t", str(max(1, round(seconds))), *(["-shape", shape] if shape else [])]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        if found := re.search(r"Median:\s*([\d.]+)\s*(ms|us)", proc.stdout):  # it prints us below 1 ms
            return float(found.group(1)) / (1e3 if found.group(2) == "us" else 1)
        raise RuntimeError(next((ln for ln in proc.stdout.splitlines() if "ERROR" in ln), f"exit {proc.returncode}"))
    extra = [N_CTX, NEW_TOKENS, GEN_RUNS, json.dumps(PROMPT)] if t.runtime == "llama.cpp" else [WARMUP, RUNS, seconds]
    args = [sys.executable, "-c", BARE[t.runtime], str(t.path), str(threads), *map(str, extra)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S)
    try:
        return float(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])
    except (IndexError, ValueError, KeyError):
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]) from None


def summary(t: Target, tool: str) -> dict[str, Any]:
    pairs = [(e, x) for e, x in zip(t.medians["edgepipe"], t.medians[tool], strict=True) if e and x]
    ep, tl = [p[0] for p in pairs], [p[1] for p in pairs]
    ratio, ci = ratio_interval(ep, tl, paired=True) if pairs else (None, None)  # edgepipe / tool
    band = BANDS[tool]
    return {
        "artifact": t.name, "runtime": t.runtime, "path": str(t.path), "tool": tool, "pairs": len(pairs),
        "edgepipe_ms": statistics.median(ep) if ep else None, "tool_ms": statistics.median(tl) if tl else None,
        "edgepipe_medians": t.medians["edgepipe"], "tool_medians": t.medians[tool], "ratio": ratio, "ci95": ci,
        "band": band, "meets": ratio is not None and abs(ratio - 1) <= band,
        "interval_within": ci is not None and 1 - band <= ci[0] and ci[1] <= 1 + band,
        "errors": {k: v for k, v in t.errors.items() if k in ("edgepipe", tool)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--gguf", type=Path, help="a GGUF file to measure on llama.cpp")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per process (default 2)")
    parser.add_argument("--only", help="measure only artifacts whose name contains this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.run.is_dir() and args.gguf is None:
        print(f"{args.run}: no such run; run `edgepipe run recipes/quickstart.yaml` first", file=sys.stderr)
        return 2
    todo = [t for t in targets(run_artifacts(args.run), args.gguf) if not args.only or args.only in t.name]
    if not todo:
        print(f"{args.run}: no ONNX, OpenVINO or GGUF artifact to measure", file=sys.stderr)
        return 2
    for r in range(args.rounds):
        for t in todo:
            for tool in ["edgepipe", *t.tools]:
                try:
                    value: float | None = measure(t, tool, args.threads, args.seconds)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    value, t.errors[tool] = None, f"round {r + 1}: {e}"
                t.medians.setdefault(tool, []).append(value)
        if not args.json:
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    cpu = describe_environment()["cpu"]["model"]
    results = [summary(t, tool) for t in todo for tool in t.tools]
    if args.json:
        print(json.dumps({"cpu": cpu, "threads": args.threads, "rounds": args.rounds, "results": results}, indent=1))
        return 0
    print(f"CPU: {cpu}; threads {args.threads}; {args.rounds} rounds, {args.seconds:g} s per process (GGUF: ms/token)")
    print(f"{'artifact':<22}{'runtime':<12}{'tool':<14}{'edgepipe':>9}{'tool':>9}{'ratio':>7}  95% interval    goal")
    for s in results:
        ms = [f"{v:>9.4f}" if v is not None else f"{'-':>9}" for v in (s["edgepipe_ms"], s["tool_ms"])]
        ci = f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if s["ci95"] else "-"
        verdict = ("MEETS" if s["meets"] else "MISSES") + (", interval inside" if s["interval_within"] else "")
        verdict = verdict if s["ratio"] is not None else "NO DATA"
        ratio = f"{s['ratio']:>7.3f}" if s["ratio"] is not None else f"{'-':>7}"
        band = f"±{s['band']:.0%}"
        print(f"{s['artifact']:<22}{s['runtime']:<12}{s['tool']:<14}{ms[0]}{ms[1]}{ratio}  {ci:<15} {band} {verdict}")
        for tool, error in s["errors"].items():
            print(f"    {tool} failed ({error})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
