"""Files made elsewhere: edgepipe's median latency against a bare loop of the same runtime on the same file,
threads and inputs (goal: within +-3%), printed, never asserted in a timed test.

    python -m edgepipe.benchmarks.files_goals [--threads 2] [--runs 200] [--rounds 9] [--json]

The files are made here the way other tools make them (``sample_models``): a convolution over a dynamic
320x320 image (given with ``--shape``), the same as OpenVINO IR, and a model with three inputs (one an
int64 scalar), an If subgraph and two outputs. Each round times edgepipe, then the bare loop, in this
process; the ratio printed is the median of the rounds' ratios. The bare loops call each runtime the way
its own documentation does: ``InferenceSession.run``, ``InferRequest.infer`` with shared inputs and outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.benchmarks.harness import benchmark_model
from edgepipe.benchmarks.inputs import InputChoice
from edgepipe.benchmarks.repeat import Repeat
from edgepipe.benchmarks.sample_models import conv_onnx, multi_onnx

GOAL = 0.03


def _bare_onnxruntime(path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: session.run(names, feeds)


def _bare_openvino(path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], Any]:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request, names = compiled.create_infer_request(), [p.get_any_name() for p in compiled.inputs]
    # OpenVINO's fast path: inputs and outputs stay shared, nothing is copied.
    return lambda feeds: request.infer([feeds[n] for n in names], share_inputs=True, share_outputs=True)


BARE = {"onnxruntime": _bare_onnxruntime, "openvino": _bare_openvino}


def _bare_times(
    run: Callable[[dict[str, np.ndarray]], Any], feeds: dict[str, np.ndarray], warmup: int, runs: int
) -> list[float]:
    for _ in range(warmup):
        run(feeds)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(feeds)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def measure(threads: int, runs: int, rounds: int) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="edgepipe-files-"))
    det = conv_onnx(folder / "det.onnx", channels=32)
    vad = multi_onnx(folder / "vad.onnx")
    import openvino as ov

    ov.save_model(ov.convert_model(str(det)), str(folder / "det.xml"), compress_to_fp16=False)
    rng = np.random.default_rng(0)
    vad_inputs = {
        "a": (rng.standard_normal((1, 4)).astype(np.float32), "a"),
        "b": (rng.standard_normal((1, 4)).astype(np.float32), "b"),
        "sr": (np.array(16000, dtype=np.int64), "sr"),
    }
    cases = [
        ("det.onnx 1x3x320x320", det, "onnxruntime", InputChoice(shapes={"image": (1, 3, 320, 320)})),
        ("det.xml 1x3x320x320", folder / "det.xml", "openvino", InputChoice(shapes={"image": (1, 3, 320, 320)})),
        ("vad.onnx 3 inputs, If", vad, "onnxruntime", InputChoice(given=vad_inputs)),
        ("vad.onnx on openvino", vad, "openvino", InputChoice(given=vad_inputs)),
    ]
    out = []
    in_here = Repeat(processes=0)
    for label, path, runtime, choice in cases:
        ours: list[float] = []
        theirs: list[float] = []
        bare = BARE[runtime](path, threads)
        for _ in range(rounds):
            # In this process, like the bare loop beside it (benchmarks/agreement.py compares fresh processes).
            row = benchmark_model(
                path, runtime, threads=threads, runs=runs, warmup=20, max_seconds=60, inputs=choice, repeat=in_here
            )
            assert row.latency_ms is not None and choice.feeds is not None
            ours.append(row.latency_ms.median)
            theirs.append(statistics.median(_bare_times(bare, choice.feeds, 20, runs)))
        # Paired: each round's ratio is of two medians measured back to back; the machine's drift between
        # rounds (tens of % here) cancels in the pair.
        ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
        o, t = statistics.median(ours), statistics.median(theirs)
        out.append(
            {"file": label, "runtime": runtime, "threads": threads, "runs": runs, "rounds": rounds, "edgepipe_ms": o,
             "bare_ms": t, "ratio": statistics.median(ratios), "ratio_range": [ratios[0], ratios[-1]],
             "edgepipe_rounds": ours, "bare_rounds": theirs}
        )  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = measure(args.threads, args.runs, args.rounds)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    from edgepipe.environment import describe_environment

    cpu = describe_environment()["cpu"]
    print(f"CPU: {cpu['model']}; {args.threads} threads, {args.runs} runs x {args.rounds} alternating rounds")
    for r in results:
        ok = abs(r["ratio"] - 1) <= GOAL
        print(
            f"  {r['file']:<24} {r['runtime']:<12} edgepipe {r['edgepipe_ms']:.4f} ms, bare {r['bare_ms']:.4f} ms: "
            f"ratio {r['ratio']:.3f} (rounds {r['ratio_range'][0]:.3f}..{r['ratio_range'][1]:.3f}; "
            f"goal 1 +- {GOAL}) -> {'meets goal' if ok else 'MISSES GOAL'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
