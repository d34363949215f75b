"""``edgepipe explain``: why a model is (not) faster on a runtime, operator by operator, with the answer first.

The runtime itself says what it runs (``benchmarks.ops_<runtime>``: onnxruntime's optimized graph and
profiler, OpenVINO's runtime model and performance counters, the LiteRT interpreter's delegate nodes,
llama.cpp's tensor types); ``benchmarks.explain_traps`` names the known traps that occur. Given the FP32
model it came from (an artifact's parent, or ``--reference``), both are read the same way and timed in
the same process, in turns (A B A B ...), so their ratio compares like with like; its 95% interval comes
from the rounds, paired. ``Explanation`` is the JSON contract of ``explain --json`` (docs/explain.md).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgepipe.benchmarks.explain_traps import Finding, extensions, findings
from edgepipe.benchmarks.op_report import OpReport

EXPLAIN_SCHEMA_VERSION: Literal[1] = 1
READERS = {
    "onnxruntime": "ops_onnxruntime",
    "openvino": "ops_openvino",
    "litert": "ops_litert",
    "llama.cpp": "ops_llamacpp",
}
ROUNDS = 7
CAUSE_SHARE = 0.05  # a trap that costs at least this share of the operator time leads the answer
SECONDS_PER_TURN = 0.25


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cpu(_Strict):
    model: str
    arch: str
    extensions: list[str]
    notes: list[str]


class Latency(_Strict):
    """Both models timed in the same process, in turns: medians of the rounds' medians."""

    model_ms: float
    reference_ms: float | None = None
    speedup: float | None = None  # reference / model: above 1, the model is faster
    ci95: list[float] | None = None
    rounds: int
    clock: str  # the runtime's own ("InferRequest.latency") or the Python call


class Explanation(_Strict):
    schema_version: Literal[1] = EXPLAIN_SCHEMA_VERSION
    answer: str  # the one line first
    path: str
    runtime: str
    cpu: Cpu
    latency: Latency | None  # None: not a tensor model (GGUF), or its inputs could not be made
    model: OpReport
    reference: OpReport | None
    findings: list[Finding]


def explain(
    path: Path,
    runtime: str | None = None,
    reference: Path | None = None,
    threads: int | None = 2,
    batch: int = 1,
    sequence_length: int | None = None,
    calls: int = 20,
    options: dict[str, Any] | None = None,
) -> Explanation:
    """Read ``path`` (and ``reference``) on ``runtime`` (default: the format's), time both, name the traps."""
    from edgepipe.artifact import resolve_model_path
    from edgepipe.environment import cpu_description
    from edgepipe.errors import InputError
    from edgepipe.formats import detect_format
    from edgepipe.runtimes import default_runtime, get_runtime

    model_file = resolve_model_path(path)
    runtime = runtime or default_runtime(detect_format(model_file))
    if runtime not in READERS:
        raise InputError(f"--runtime: explain reads {', '.join(READERS)}, not '{runtime}'")
    reader = importlib.import_module(f"edgepipe.benchmarks.{READERS[runtime]}")
    ref_file = resolve_model_path(reference) if reference is not None else None
    latency = None
    files = [model_file, *([ref_file] if ref_file else [])]
    feeds: list[dict[str, np.ndarray] | None] = [None] * len(files)
    if runtime != "llama.cpp":
        sessions = [get_runtime(runtime).load(f, threads=threads, options=dict(options or {})) for f in files]
        try:
            feeds = [synthetic_inputs(s, f, batch, sequence_length) for s, f in zip(sessions, files, strict=True)]
            latency = _latency(sessions, feeds)
        finally:
            for s in sessions:
                s.close()
    report = reader.read_ops(model_file, feeds[0], threads, calls, dict(options or {}))
    ref_report = reader.read_ops(ref_file, feeds[1], threads, calls, dict(options or {})) if ref_file else None
    cpu = cpu_description()
    names, notes = extensions(cpu)
    found = findings(report, cpu, model_file)
    return Explanation(
        answer=answer(report, ref_report, latency, found),
        path=str(model_file),
        runtime=runtime,
        cpu=Cpu(model=str(cpu["model"]), arch=str(cpu["arch"]), extensions=names, notes=notes),
        latency=latency,
        model=report,
        reference=ref_report,
        findings=found,
    )


def synthetic_inputs(session: Any, path: Path, batch: int, sequence_length: int | None) -> dict[str, np.ndarray]:
    """The file's own synthetic inputs (seed 0), as ``bench`` makes them: token ids inside the vocabulary its
    artifact records. Each file gets its own: a full-integer model takes int8 where its FP32 parent takes float."""
    from edgepipe.benchmarks.inputs import synthetic_feeds
    from edgepipe.benchmarks.model_file import known_inputs, manifest_of
    from edgepipe.tensors import with_ranges

    known = known_inputs(path, manifest_of(path))
    names = {s.name for s in session.inputs}
    if len(known) == len(session.inputs) and not names & {k.name for k in known}:
        # A file that names its inputs its own way (litert-torch's args_0, args_1, ...): the artifact's, in order.
        known = [k.model_copy(update={"name": s.name}) for k, s in zip(known, session.inputs, strict=True)]
    return synthetic_feeds(with_ranges(session.inputs, known), batch, sequence_length)[0]


def _latency(sessions: list[Any], feeds: list[Any]) -> Latency:
    """The model (and its reference) timed in turns in this process: ROUNDS rounds of SECONDS_PER_TURN."""
    from edgepipe.benchmarks.stats import ratio_interval
    from edgepipe.benchmarks.timing import in_turns

    rounds = in_turns(sessions, feeds, ROUNDS, SECONDS_PER_TURN)
    clock = str(sessions[0].info.get("timer") or "Python call")
    out = Latency(model_ms=round(float(np.median(rounds[0])), 4), rounds=ROUNDS, clock=clock)
    if len(sessions) > 1:
        ratio, ci = ratio_interval(rounds[1], rounds[0], paired=True)
        out.reference_ms = round(float(np.median(rounds[1])), 4)
        out.speedup, out.ci95 = round(ratio, 3), [round(c, 3) for c in ci] if ci else None
    return out


def _nominal(report: OpReport) -> str:
    """What the model is called by: its lowest precision that computes anything (a dynamic INT8 model
    spends most of its time in float, and is still the INT8 model)."""
    compute = {k for k, v in report.by_precision.items() if v > 0 and k not in ("convert", "other")}
    ladder = [p for p in ("int4", "int8", "fp16", "bf16", "fp32") if p in compute]
    if ladder:
        return ladder[0].upper()
    return max(compute, key=lambda k: report.by_precision[k]).upper() if compute else "?"  # a GGUF's types


def answer(
    report: OpReport, reference: OpReport | None, latency: Latency | None, found: list[Finding], name: str = ""
) -> str:
    """The one line: the speed-up against FP32 (or the latency), then the largest cause. ``name``: what the
    model is called (a run's row knows its precision); by default, read from its operators."""
    name = name or _nominal(report)
    if latency and latency.speedup is not None:
        ci = latency.ci95
        verdict = "faster" if ci and ci[0] > 1 else "SLOWER" if ci and ci[1] < 1 else "not faster beyond the noise"
        head = f"{name} is x{latency.speedup:.2f} against FP32 on {report.runtime} ({verdict})"
    elif latency:
        head = f"{name} model at {latency.model_ms:.3f} ms on {report.runtime}"
    else:
        head = f"{name} model on {report.runtime}"
    timed = [f for f in found if f.share is not None and f.share >= CAUSE_SHARE]
    if timed:
        return f"{head}: {timed[0].message}"
    if report.clock and report.groups:
        top = report.groups[0]
        main = report.by_precision.get(top.precision, 0)
        tail = f"; {found[0].message}" if found and found[0].share is None else ""
        return (
            f"{head}: {main:.0%} of its operator time runs in {top.precision.upper()}, most in "
            f"{top.count} {top.op_type} ({top.share or 0:.0%}){tail}"
        )
    shares = report.by_precision
    what = "time" if report.clock else ("weight bytes" if report.runtime == "llama.cpp" else "operators")
    split = ", ".join(f"{v:.0%} {k.upper()}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v >= 0.01)
    tail = f"; {found[0].message}" if found else ""
    return f"{head}: {what} by precision {split}{tail}"


def render(e: Explanation, top: int = 8) -> str:
    """The answer, then the detail under it: CPU, time by precision, operator groups side by side, traps."""
    lines = [e.answer, ""]
    lines.append(f"CPU: {e.cpu.model} ({e.cpu.arch}); extensions: {', '.join(e.cpu.extensions) or 'none known'}")
    lines += [f"  - {n}" for n in e.cpu.notes]
    if e.latency:
        lat = e.latency
        ref = f", FP32 {lat.reference_ms:.3f} ms" if lat.reference_ms is not None else ""
        ci = f" [{lat.ci95[0]:.2f}, {lat.ci95[1]:.2f}]" if lat.ci95 else ""
        ratio = f", x{lat.speedup:.2f}{ci}" if lat.speedup is not None else ""
        lines.append(f"Latency ({lat.rounds} rounds in turns, {lat.clock}): {lat.model_ms:.3f} ms{ref}{ratio}")
    for label, rep in (("this model", e.model), ("FP32 reference", e.reference)):
        if rep is None:
            continue
        unit = "time" if rep.clock else ("weight bytes" if rep.runtime == "llama.cpp" else "operator count")
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(rep.by_precision.items(), key=lambda kv: -kv[1]))
        total = f"{rep.ops_ms:.3f} ms of operators per call, " if rep.ops_ms else ""
        lines += ["", f"{label}: {total}{unit} by precision: {shares}  ({rep.clock or 'no per-operator clock'})"]
        for g in rep.groups[:top]:
            ms = f"{g.ms:8.3f} ms {g.share:5.0%}" if g.ms is not None and g.share is not None else " " * 17
            kernels = f"  [{', '.join(g.kernels[:2])}]" if g.kernels else ""
            lines.append(f"  {g.op_type:28} {g.precision:8} x{g.count:<4} {ms}{kernels}")
    if e.findings:
        lines += ["", "Traps found:"] + [f"  - [{f.code}] {f.message}" for f in e.findings]
    for title, places in (
        ("Float ops between quantized ones", e.model.float_between_quantized),
        ("Q/DQ left unfused", e.model.unfused_qdq),
        ("Not delegated", e.model.not_delegated),
    ):
        if places:
            lines += ["", f"{title} ({len(places)}):"]
            for p in places[:top]:
                ms = f" {p.ms:.3f} ms" if p.ms is not None else ""
                lines.append(
                    f"  {p.node} ({p.op_type}, {p.precision}{ms}): {'/'.join(p.before)} -> {'/'.join(p.after)}"
                )
            if len(places) > top:
                lines.append(f"  ... and {len(places) - top} more")
    return "\n".join(lines)


def explain_rows(rows: list[Any], calls: int = 10, log: Any = None) -> dict[str, dict[str, Any]]:
    """The run report's explanations: for every quantized or reduced-precision row that ran (its first point
    only), what its runtime runs it as and against its FP32 row's file on the same runtime; the speed-up is
    the run's own (``vs_fp32``, measured in fresh processes), not timed again. Keyed by the row's label; a
    row that cannot be read gets its one-line reason instead."""
    from edgepipe.benchmarks.report import fp32_baseline
    from edgepipe.environment import cpu_description
    from edgepipe.errors import first_line
    from edgepipe.runtimes import get_runtime

    cpu = cpu_description()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        # OpenVINO records the precision it computed in for every row ("f32" too): only bf16 / f16 rename one.
        precision = row.session.get("inference_precision")
        precision = precision if precision in ("bf16", "f16") else None
        reduced = row.artifact.precision not in (None, "fp32") or precision is not None
        if row.status != "ok" or not reduced or row.runtime not in READERS or row.label in out:
            continue
        options = {"inference_precision": precision} if row.runtime == "openvino" and precision else {}
        base = fp32_baseline(row, rows)
        reader = importlib.import_module(f"edgepipe.benchmarks.{READERS[row.runtime]}")
        path = Path(row.artifact.path)

        def read(file: Path, options: dict[str, Any], row: Any = row, reader: Any = reader) -> OpReport:
            """``file`` on the row's runtime, fed its own inputs at the row's point."""
            feeds = None
            if row.runtime != "llama.cpp":
                with get_runtime(row.runtime).load(file, threads=row.threads, options=dict(options)) as session:
                    feeds = synthetic_inputs(session, file, row.batch_size or 1, row.sequence_length)
            return reader.read_ops(file, feeds, row.threads, calls, dict(options))

        try:
            report = read(path, options)
            reference = None
            if base is not None and base.artifact.path and row.runtime != "llama.cpp":
                reference = read(Path(base.artifact.path), {})
        except Exception as e:  # the explanation is a reading aid: a failure is said, the run goes on
            out[row.label] = {"error": first_line(e)}
            continue
        found = findings(report, cpu, path)
        vs = row.vs_fp32
        latency = None
        if vs is not None and row.latency_ms is not None:
            latency = Latency(
                model_ms=row.latency_ms.median, speedup=vs.ratio, ci95=vs.ci95, rounds=0, clock="the run's processes"
            )
        out[row.label] = {
            "answer": answer(report, reference, latency, found, (precision or row.artifact.precision).upper()),
            "model": report.model_dump(mode="json"),
            "reference": reference.model_dump(mode="json") if reference else None,
            "findings": [f.model_dump(mode="json") for f in found],
        }
        if log:
            log(f"[explain] {row.label}: {out[row.label]['answer']}")
    return out
