"""Results: comparisons within one run, and renderings of the one JSON contract (table, Markdown, CSV).

``results.json`` = ``{"schema_version", "recipe", "environment", "results": [row, ...], "notes"}``.
Every rendering is made from those rows; nothing is measured here.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from edgepipe.artifact import atomic_write_text
from edgepipe.benchmarks.stats import speedup

RESULTS_SCHEMA_VERSION = 1


def _same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("runtime", "device", "threads", "batch_size")
    return all(a.get(k) == b.get(k) for k in keys) and a["artifact"]["format"] == b["artifact"]["format"]


def add_comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """Give each quantized row ``vs_fp32`` (speed-up, accuracy change) against the FP32 row of the
    same format, runtime, device, threads and batch in this run; return plain-language notes."""
    notes: list[str] = []
    ok = [r for r in rows if r.get("status") == "ok"]
    for row in ok:
        if row["artifact"].get("precision") in (None, "fp32"):
            continue
        base = next((b for b in ok if b["artifact"].get("precision") == "fp32" and _same_setup(b, row)), None)
        if base is None:
            continue
        cmp = speedup(base["latency_ms"], row["latency_ms"])
        cmp["baseline"] = row_label(base)
        for metric, value in row.get("metrics", {}).items():
            if metric in base.get("metrics", {}):
                cmp[f"{metric}_delta"] = value - base["metrics"][metric]
        row["vs_fp32"] = cmp
        what = f"{row_label(row)} vs {cmp['baseline']}"
        medians = f"median {row['latency_ms']['median']:.3f} vs {base['latency_ms']['median']:.3f} ms"
        if not cmp["significant"]:
            notes.append(f"{what}: no significant latency difference (x{cmp['ratio']:.2f}, {medians}).")
        elif cmp["ratio"] >= 1:
            notes.append(f"{what}: {cmp['ratio']:.2f}x faster ({medians}).")
        else:
            notes.append(f"{what}: SLOWER, x{cmp['ratio']:.2f} ({medians}).")
        size_ratio = row["artifact"]["size_bytes"] / base["artifact"]["size_bytes"]
        notes[-1] = notes[-1][:-1] + f"; size x{size_ratio:.2f}."
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
    "max |diff|",
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


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write results.json, results.md and results.csv atomically; return their paths."""
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md", "csv": out_dir / "results.csv"}
    atomic_write_text(paths["json"], json.dumps(results, indent=2) + "\n")
    atomic_write_text(paths["md"], render_markdown(results))
    atomic_write_text(paths["csv"], render_csv(results["results"]))
    return paths
