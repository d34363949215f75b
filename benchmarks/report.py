"""Comparisons within one run, and renderings of the one JSON contract (table, Markdown, CSV).

``results.json`` = ``{"schema_version", "recipe", "task", "environment", "results": [row, ...], "notes",
"wall_seconds"}``. The task kind says which metric and parity columns a table has; nothing is
measured here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from edgepipe.benchmarks.stats import speedup
from edgepipe.files import atomic_write_text
from edgepipe.results import Comparison, ResultRow
from edgepipe.tasks import Measure, Task


def fp32_baseline(row: ResultRow, rows: list[ResultRow]) -> ResultRow | None:
    """The FP32 row this row's artifact was made from (its parent), measured the same way.

    Pairing by lineage, not by format name, keeps two ONNX exports' INT8 variants apart. Rows of bare
    files (no lineage) pair by format.
    """
    parent = row.artifact.parent_sha256
    for b in rows:
        a = b.artifact
        if b.status != "ok" or a.precision != "fp32" or not b.same_setup(row):
            continue
        if (a.sha256 == parent) if parent else (a.format == row.artifact.format):
            return b
    return None


def _compare(row: ResultRow, base: ResultRow) -> tuple[Comparison, str]:
    """``row`` against ``base`` (same setup): the comparison, and a note's verdict on it."""
    assert row.latency_ms is not None and base.latency_ms is not None
    cmp = speedup(base.latency_ms.model_dump(), row.latency_ms.model_dump())
    deltas = {f"{m}_delta": v - base.metrics[m] for m, v in row.metrics.items() if m in base.metrics}
    comparison = Comparison(
        baseline=base.label,
        ratio=cmp["ratio"],
        significant=cmp["significant"],
        size_ratio=(row.artifact.size_bytes or 0) / (base.artifact.size_bytes or 1),
        ci95=cmp["ci95"],
        **deltas,
    )
    medians = f"median {row.latency_ms.median:.3f} vs {base.latency_ms.median:.3f} ms"
    interval = f", 95% interval {interval_text(cmp['ci95'])}" if cmp["ci95"] else ""
    if not cmp["significant"]:
        verdict = f"no significant latency difference, x{cmp['ratio']:.2f}{interval}"
    elif cmp["ratio"] >= 1:
        verdict = f"{cmp['ratio']:.2f}x faster{interval}"
    else:
        verdict = f"SLOWER, x{cmp['ratio']:.2f}{interval}"
    where = f" at {_point(row)}" if _point(row) else ""
    changes = "".join(f"; {m.removesuffix('_delta')} {d:+.4f}" for m, d in deltas.items())
    said = f"{row.label} vs {base.label}{where}: {verdict} ({medians}); size x{comparison.size_ratio:.2f}{changes}."
    return comparison, said


def interval_text(ci: list[float] | None) -> str:
    """``[2.91, 3.70]``: a ratio's interval, two decimals."""
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def ratio_text(vs: Comparison | None) -> str:
    """A table cell: ``x3.29 [2.91, 3.70]``, with ``(n.s.)`` when the interval holds 1."""
    if vs is None:
        return ""
    interval = f" {interval_text(vs.ci95)}" if vs.ci95 else ""
    return f"x{vs.ratio:.2f}{interval}" + ("" if vs.significant else " (n.s.)")


def add_comparisons(
    rows: list[ResultRow],
    task: type[Task] | None = None,
    dense: set[str] | None = None,
    compressed: set[str] | None = None,
) -> list[str]:
    """Give each quantized row ``vs_fp32`` (speed-up, metric changes, size ratio) against its FP32 parent
    measured on the same runtime, device, threads and shape in this run; and each row of a compressed
    model's file (sha256 in ``compressed``) ``vs_dense`` against the dense model's FP32 file of the same
    format (sha256 in ``dense``), measured the same way. Return notes."""
    notes: list[str] = []
    for row in rows:
        if row.status != "ok" or row.artifact.precision in (None, "fp32") or row.latency_ms is None:
            continue
        base = fp32_baseline(row, rows)
        if base is None or base.latency_ms is None:
            continue
        row.vs_fp32, said = _compare(row, base)
        notes.append(said)
    for row in rows:
        if row.status != "ok" or row.latency_ms is None or row.artifact.sha256 not in (compressed or set()):
            continue
        base = next(
            (
                b
                for b in rows
                if b.status == "ok"
                and b.latency_ms is not None
                and b.artifact.sha256 in (dense or set())
                and b.artifact.precision == "fp32"
                and b.artifact.format == row.artifact.format
                and b.same_setup(row)
            ),
            None,
        )
        if base is not None:
            row.vs_dense, said = _compare(row, base)
            notes.append(f"vs dense: {said}")
    # One note per failure: an artifact that failed at every length failed once, for one reason.
    failures = [f"{row.label}: {row.status}: {row.error}" for row in rows if row.status != "ok"]
    return notes + list(dict.fromkeys(failures))


def _point(row: ResultRow) -> str:
    parts = []
    if row.batch_size not in (None, 1):
        parts.append(f"batch {row.batch_size}")
    if row.sequence_length is not None:
        parts.append(f"length {row.sequence_length}")
    return ", ".join(parts)


def _mb(n: float | None) -> str:
    return "" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _f(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def columns(rows: list[ResultRow], task: type[Task] | None) -> list[tuple[str, Any]]:
    """(header, row -> cell) for the table: the task kind's metrics before the latency, its parity
    measures after; batch and sequence columns only when some row has them."""
    metrics = task.metrics if task else ()
    parity = task.parity_measures if task else ()

    def measure(m: Measure, where: str) -> tuple[str, Any]:
        return m.label, lambda r: _f((getattr(r, where) or {}).get(m.name), m.fmt)

    def lat(key: str) -> Any:
        return lambda r: _f(getattr(r.latency_ms, key) if r.latency_ms else None, ".3f")

    cols: list[tuple[str, Any]] = [
        ("artifact", lambda r: r.name or r.artifact.name or f"{r.artifact.format}/{r.artifact.precision or '?'}"),
        ("runtime", lambda r: r.runtime),
        ("device", lambda r: str(r.device)),
        ("threads", lambda r: str(r.threads or "auto")),
    ]
    if any(r.batch_size not in (None, 1) for r in rows):
        cols.append(("batch", lambda r: str(r.batch_size or "")))
    if any(r.sequence_length is not None for r in rows):
        cols.append(("seq", lambda r: str(r.sequence_length or "")))
    cols.append(("size", lambda r: _mb(r.artifact.size_bytes)))
    if any(r.artifact.bits_per_weight for r in rows):
        cols.append(("bits/w", lambda r: _f(r.artifact.bits_per_weight, ".2f")))
    if any(r.session.get("tensor_types") for r in rows):
        cols.append(("weight types", lambda r: tensor_types(r.session.get("tensor_types") or {})))
    if any("max_abs_diff_vs_first" in (r.parity or {}) for r in rows):  # `bench --runtime a,b`
        cols.append(("max diff vs first", lambda r: _f((r.parity or {}).get("max_abs_diff_vs_first"), ".2e")))
    cols += [
        *(measure(m, "metrics") for m in metrics),
        ("median ms", lat("median")),
        ("p90 ms", lat("p90")),
        ("p99 ms", lat("p99")),
        ("n", lambda r: str(r.latency_ms.n) if r.latency_ms else ""),
        ("procs", lambda r: str(r.latency_ms.processes) if r.latency_ms else ""),
        ("speed-up vs fp32", lambda r: ratio_text(r.vs_fp32)),
    ]
    if any(r.vs_dense for r in rows):
        cols.append(("vs dense fp32", lambda r: _vs_dense(r.vs_dense)))
    if any(r.generation for r in rows):
        cols += [
            ("prompt tok/s", lambda r: _f(r.generation.prompt_tokens_per_s if r.generation else None, ".0f")),
            ("gen tok/s", lambda r: _f(r.generation.generation_tokens_per_s if r.generation else None, ".0f")),
            ("decode", lambda r: r.generation.method if r.generation else ""),
        ]
    cols += [
        *(measure(m, "parity") for m in parity),
        ("status", lambda r: "gate failed" if r.gates and not r.gates.passed else r.status),
    ]
    return cols


def _vs_dense(vs: Comparison | None) -> str:
    """``x9.12, 1/14.3 size``: a compressed model's file against the dense FP32 file on the same runtime."""
    if vs is None:
        return ""
    speed = ratio_text(vs)
    return f"{speed}, 1/{1 / vs.size_ratio:.1f} size" if vs.size_ratio else speed


def tensor_types(types: dict[str, int]) -> str:
    """``{"Q4_K": 9, "F32": 5}`` -> ``Q4_K 9, F32 5``, most tensors first."""
    return ", ".join(f"{k} {v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1]))


def recommend(rows: list[ResultRow], task: type[Task] | None, budget_mb: float) -> tuple[dict[str, Any], str]:
    """Of the artifacts whose file fits in ``budget_mb``, the one closest to the reference by the task's
    first parity measure (KLD for a language model), with its measured speed; and a note saying so."""
    if task is None or not task.parity_measures:
        return {"budget_mb": budget_mb, "artifact": None}, "no recommendation: this task has no parity measure"
    m = task.parity_measures[0]
    fits = [
        r
        for r in rows
        if r.status == "ok"
        and r.parity
        and m.name in r.parity
        and math.isfinite(r.parity[m.name])
        and (r.artifact.size_bytes or 0) <= budget_mb * 1e6
        and r.artifact.precision is not None
        and r.artifact.format != "torch"
    ]
    if not fits:
        return (
            {"budget_mb": budget_mb, "artifact": None},
            f"Memory budget {budget_mb:g} MB: no measured artifact fits.",
        )
    best = sorted(fits, key=lambda r: (-1 if m.higher_is_better else 1) * r.parity[m.name])[0]  # type: ignore[index]
    # The fastest measurement of that artifact on that runtime (its rows differ by threads and length).
    same = [r for r in fits if r.label == best.label]
    speed = max((r.generation.generation_tokens_per_s for r in same if r.generation), default=None)
    value = best.parity[m.name]  # type: ignore[index]
    if speed:
        said = f"{speed:.0f} generated tok/s"
    else:
        said = f"median {best.latency_ms.median:.3f} ms" if best.latency_ms else "no latency measured"
    pick = {
        "budget_mb": budget_mb,
        "artifact": best.name or best.artifact.name,
        "format": best.artifact.format,
        "precision": best.artifact.precision,
        "runtime": best.runtime,
        "size_bytes": best.artifact.size_bytes,
        m.name: value,
        "generation_tokens_per_s": speed,
        "peak_rss_mb": best.peak_rss_mb,
    }
    note = (
        f"Memory budget {budget_mb:g} MB: {best.label} ({_mb(best.artifact.size_bytes)} file) has the "
        f"{'highest' if m.higher_is_better else 'lowest'} {m.label} that fits ({format(value, m.fmt)}), {said}; "
        f"its process peaked at {best.peak_rss_mb:.0f} MB resident (runtime included)."
    )
    return pick, note


def render_table(rows: list[ResultRow], task: type[Task] | None = None, markdown: bool = False) -> str:
    cols = columns(rows, task)
    body = [[cell(r) for _, cell in cols] for r in rows]
    heads = [h for h, _ in cols]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded).rstrip()

    sep = ("|" + "|".join("-" * (w + 2) for w in widths) + "|") if markdown else "  ".join("-" * w for w in widths)
    return "\n".join([line(heads), sep, *(line(b) for b in body)])


def render_markdown(results: dict[str, Any], rows: list[ResultRow], task: type[Task] | None) -> str:
    env = results["environment"]
    cpu = env["cpu"]
    pk = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    parts = [
        f"# edgepipe results: {results.get('recipe', {}).get('name', '')}",
        "",
        f"- Machine: {cpu['model']} ({cpu['arch']}), {cpu['logical_cores']} logical cores, "
        f"flags: {' '.join(cpu['flags']) or 'none of note'}",
        f"- Memory: {env.get('memory_total_mb')} MB; OS: {env['os']}; Python {env['python']}",
        f"- Packages: {pk}",
        f"- Measured: {env['timestamp']}. Latency is per call at the batch size shown, after warm-up; "
        "each artifact ran in `procs` fresh processes, in turn with the others; speed-ups compare medians within "
        "this run only, with the 95% interval of the ratio from the paired process medians; (n.s.) = that "
        "interval holds 1.",
        "",
        render_table(rows, task, markdown=True),
        "",
    ]
    if results.get("notes"):
        parts += ["## Notes", "", *(f"- {n}" for n in results["notes"]), ""]
    return "\n".join(parts)


def render_csv(rows: list[ResultRow], task: type[Task] | None) -> str:
    measures = [*(task.metrics if task else ()), *(task.parity_measures if task else ())]
    fields = [
        "name", "format", "precision", "path", "size_bytes", "sha256", "runtime", "runtime_version", "device",
        "threads", "batch_size", "sequence_length", "status", *(m.name for m in measures), "latency_n",
        "latency_mean_ms", "latency_median_ms", "latency_p90_ms", "latency_p99_ms", "latency_ci95_low_ms",
        "latency_ci95_high_ms", "latency_processes", "throughput_per_s", "cold_start_ms", "load_ms", "peak_rss_mb",
        "speedup_vs_fp32", "speedup_ci95_low", "speedup_ci95_high", "speedup_significant", "error",
    ]  # fmt: skip
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        a, lat, vs = r.artifact, r.latency_ms, r.vs_fp32
        ci: list[float | None] = [None, None]
        if lat and lat.ci95:
            ci = [lat.ci95[0], lat.ci95[1]]
        values = {**(r.parity or {}), **r.metrics}
        w.writerow(
            {
                "name": r.name,
                "format": a.format,
                "precision": a.precision,
                "path": a.path,
                "size_bytes": a.size_bytes,
                "sha256": a.sha256,
                "runtime": r.runtime,
                "runtime_version": r.runtime_version,
                "device": r.device,
                "threads": r.threads,
                "batch_size": r.batch_size,
                "sequence_length": r.sequence_length,
                "status": r.status,
                **{m.name: values.get(m.name) for m in measures},
                "latency_n": lat.n if lat else None,
                "latency_mean_ms": lat.mean if lat else None,
                "latency_median_ms": lat.median if lat else None,
                "latency_p90_ms": lat.p90 if lat else None,
                "latency_p99_ms": lat.p99 if lat else None,
                "latency_ci95_low_ms": ci[0],
                "latency_ci95_high_ms": ci[1],
                "latency_processes": lat.processes if lat else None,
                "throughput_per_s": r.throughput_per_s,
                "cold_start_ms": r.cold_start_ms,
                "load_ms": r.load_ms,
                "peak_rss_mb": r.peak_rss_mb,
                "speedup_vs_fp32": vs.ratio if vs else None,
                "speedup_ci95_low": vs.ci95[0] if vs and vs.ci95 else None,
                "speedup_ci95_high": vs.ci95[1] if vs and vs.ci95 else None,
                "speedup_significant": vs.significant if vs else None,
                "error": r.error,
            }
        )
    return buf.getvalue()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON: NaN and infinities (e.g. from a model that outputs NaN) become null."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False) + "\n"


def write_results(
    results: dict[str, Any], rows: list[ResultRow], task: type[Task] | None, out_dir: Path
) -> dict[str, Path]:
    """Write results.md, results.csv, then results.json (each atomically); return their paths.

    results.json goes last: a reader that sees a new one can trust the other two are from the same run.
    """
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md", "csv": out_dir / "results.csv"}
    atomic_write_text(paths["md"], render_markdown(results, rows, task))
    atomic_write_text(paths["csv"], render_csv(rows, task))
    atomic_write_text(paths["json"], to_json({**results, "results": [r.to_dict() for r in rows]}))
    return paths
