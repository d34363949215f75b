"""Results: comparisons within one run, and renderings of the one JSON contract (table, Markdown, CSV).

``results.json`` = ``{"schema_version", "recipe", "environment", "results": [row, ...], "notes"}``.
Every rendering is made from those rows; nothing is measured here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from edgepipe.artifact import atomic_write_text
from edgepipe.benchmarks.stats import speedup

RESULTS_SCHEMA_VERSION = 1


def _same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("runtime", "device", "threads", "batch_size"))


def fp32_baseline(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The FP32 row this quantized row was made from (its parent artifact), measured the same way.

    Pairing by lineage, not by format name, keeps two ONNX exports' INT8 variants apart. Rows of
    bare files (no lineage) pair by format.
    """
    parent = row["artifact"].get("parent_sha256")
    for b in rows:
        a = b["artifact"]
        if b.get("status") != "ok" or a.get("precision") != "fp32" or not _same_setup(b, row):
            continue
        if (a.get("sha256") == parent) if parent else (a.get("format") == row["artifact"].get("format")):
            return b
    return None


def add_comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """Give each quantized row ``vs_fp32`` (speed-up, metric changes, size ratio) against its FP32
    parent measured on the same runtime, device, threads and batch in this run; return notes."""
    notes: list[str] = []
    for row in rows:
        if row.get("status") != "ok" or row["artifact"].get("precision") in (None, "fp32"):
            continue
        base = fp32_baseline(row, rows)
        if base is None:
            continue
        cmp = speedup(base["latency_ms"], row["latency_ms"])
        cmp["baseline"] = row_label(base)
        cmp["size_ratio"] = row["artifact"]["size_bytes"] / base["artifact"]["size_bytes"]
        for metric, value in row.get("metrics", {}).items():
            if metric in base.get("metrics", {}):
                cmp[f"{metric}_delta"] = value - base["metrics"][metric]
        row["vs_fp32"] = cmp
        medians = f"median {row['latency_ms']['median']:.3f} vs {base['latency_ms']['median']:.3f} ms"
        if not cmp["significant"]:
            verdict = f"no significant latency difference, x{cmp['ratio']:.2f}"
        elif cmp["ratio"] >= 1:
            verdict = f"{cmp['ratio']:.2f}x faster"
        else:
            verdict = f"SLOWER, x{cmp['ratio']:.2f}"
        notes.append(f"{row_label(row)} vs {cmp['baseline']}: {verdict} ({medians}); size x{cmp['size_ratio']:.2f}.")
    for row in rows:
        if row.get("status") != "ok":
            notes.append(f"{row_label(row)}: {row.get('status')}: {row.get('error')}")
    return notes


def row_label(row: dict[str, Any]) -> str:
    a = row["artifact"] or {}
    return f"{a.get('format')}/{a.get('precision') or '?'}@{row['runtime']}"


def _mb(n: float | None) -> str:
    return "" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _f(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


COLUMNS = (
    "format",
    "precision",
    "runtime",
    "device",
    "threads",
    "size",
    "accuracy",
    "median ms",
    "p90 ms",
    "p99 ms",
    "n",
    "speed-up vs fp32",
    "top-1 agree",
    "max abs diff",
    "status",
)


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        a, lat, par = r.get("artifact") or {}, r.get("latency_ms") or {}, r.get("parity") or {}
        vs = r.get("vs_fp32")
        spd = "" if not vs else f"x{vs['ratio']:.2f}" + ("" if vs["significant"] else " (n.s.)")
        acc = (r.get("metrics") or {}).get("accuracy")
        out.append(
            [
                str(a.get("format")),
                str(a.get("precision") or "?"),
                r["runtime"],
                str(r.get("device")),
                str(r.get("threads") or "auto"),
                _mb(a.get("size_bytes")),
                _f(acc, ".4f"),
                _f(lat.get("median"), ".3f"),
                _f(lat.get("p90"), ".3f"),
                _f(lat.get("p99"), ".3f"),
                str(lat.get("n", "")),
                spd,
                _f(par.get("top1_agreement"), ".4f"),
                _f(par.get("max_abs_diff"), ".2e"),
                "gate failed" if not (r.get("gates") or {}).get("passed", True) else r.get("status", "?"),
            ]
        )
    return out


def render_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    body = table_rows(rows)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(COLUMNS)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded).rstrip()

    sep = ("|" + "|".join("-" * (w + 2) for w in widths) + "|") if markdown else "  ".join("-" * w for w in widths)
    return "\n".join([line(COLUMNS), sep, *(line(b) for b in body)])


def render_markdown(results: dict[str, Any]) -> str:
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
        "speed-ups compare medians within this run only; (n.s.) = the 95% intervals of the medians overlap.",
        "",
        render_table(results["results"], markdown=True),
        "",
    ]
    if results.get("notes"):
        parts += ["## Notes", "", *(f"- {n}" for n in results["notes"]), ""]
    return "\n".join(parts)


CSV_FIELDS = (
    "name",
    "format",
    "precision",
    "path",
    "size_bytes",
    "sha256",
    "runtime",
    "runtime_version",
    "device",
    "threads",
    "batch_size",
    "status",
    "accuracy",
    "latency_n",
    "latency_mean_ms",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_ci95_low_ms",
    "latency_ci95_high_ms",
    "load_ms",
    "peak_rss_mb",
    "speedup_vs_fp32",
    "speedup_significant",
    "top1_agreement",
    "max_abs_diff",
    "error",
)


def render_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        a, lat, par, vs = (
            r.get("artifact") or {},
            r.get("latency_ms") or {},
            r.get("parity") or {},
            r.get("vs_fp32") or {},
        )
        ci = lat.get("ci95") or [None, None]
        w.writerow(
            {
                "name": r.get("name"),
                "format": a.get("format"),
                "precision": a.get("precision"),
                "path": a.get("path"),
                "size_bytes": a.get("size_bytes"),
                "sha256": a.get("sha256"),
                "runtime": r["runtime"],
                "runtime_version": r.get("runtime_version"),
                "device": r.get("device"),
                "threads": r.get("threads"),
                "batch_size": r.get("batch_size"),
                "status": r.get("status"),
                "accuracy": (r.get("metrics") or {}).get("accuracy"),
                "latency_n": lat.get("n"),
                "latency_mean_ms": lat.get("mean"),
                "latency_median_ms": lat.get("median"),
                "latency_p90_ms": lat.get("p90"),
                "latency_p99_ms": lat.get("p99"),
                "latency_ci95_low_ms": ci[0],
                "latency_ci95_high_ms": ci[1],
                "load_ms": r.get("load_ms"),
                "peak_rss_mb": r.get("peak_rss_mb"),
                "speedup_vs_fp32": vs.get("ratio"),
                "speedup_significant": vs.get("significant"),
                "top1_agreement": par.get("top1_agreement"),
                "max_abs_diff": par.get("max_abs_diff"),
                "error": r.get("error"),
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


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write results.md, results.csv, then results.json (each atomically); return their paths.

    results.json goes last: a reader that sees a new one can trust the other two are from the same run.
    """
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md", "csv": out_dir / "results.csv"}
    atomic_write_text(paths["md"], render_markdown(results))
    atomic_write_text(paths["csv"], render_csv(results["results"]))
    atomic_write_text(paths["json"], to_json(results))
    return paths
