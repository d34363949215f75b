"""The quantization-explanation goals, measured and printed (never asserted in a timed test).

    python -m edgepipe.benchmarks.quant_goals [--skip-minilm] [--skip-cnn] [--out DIR] [--json]

**MiniLM, onnxruntime static QDQ.** Runs ``recipes/minilm.yaml`` with its ONNX target only: dynamic INT8,
static INT8 held to the recipe's gates (its search blames each miss and applies the fix the blame
proposes, then re-measures), and static INT8 as the tool makes it (``search: false``). Prints the blame
of the requested configuration (which quantizers cost the embeddings their quality, measured at the
output), every attempt with its fix and cosine on the tuning data, the shipped file's cosine on the test
split and its latency against dynamic INT8 (same run, fresh processes, in turns), and the share of the
INT8 file's operator time spent in float operators and in Q/DQ before (as-is) and after (shipped), read
with onnxruntime's profiler. Goal: mean cosine >= 0.995 at a latency below dynamic INT8's.

**CNN, a 0.3-point budget, and a calibration sweep.** Runs ``recipes/quantize-budget.yaml``. Per runtime:
the configuration the budget chose against the default one, their test-split accuracy drops (the budget
is never to be exceeded there) and latencies, and each sweep's recommendation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
COSINE_MEAN = 0.995


def _run(recipe: dict[str, Any], out: Path) -> dict[str, Any]:
    """The recipe through the real CLI (exit 4, a failed gate, still writes its results)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with (out / "run.log").open("w") as log:
        argv = [sys.executable, "-m", "edgepipe.cli", "run", str(path), "--out", str(out / "run")]
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode not in (0, 4):
        raise SystemExit(f"edgepipe run {path} failed with exit code {done.returncode} (see {out / 'run.log'})")
    return json.loads((out / "run" / "results.json").read_text())


def _rows(results: dict[str, Any], point: tuple[int, int | None] | None = None) -> dict[str, dict[str, Any]]:
    """Rows by artifact name, at one (batch, sequence length) point when given."""
    out: dict[str, dict[str, Any]] = {}
    for r in results["results"]:
        if r["status"] == "ok" and (point is None or (r["batch_size"], r.get("sequence_length")) == point):
            out.setdefault(r["artifact"]["name"], r)
    return out


def _float_share(explained: dict[str, Any], label: str) -> dict[str, float] | None:
    entry = explained.get(label) or {}
    shares = (entry.get("model") or {}).get("by_precision")
    return None if shares is None else {k: round(shares.get(k, 0.0), 3) for k in ("int8", "fp32", "convert")}


def minilm(out: Path) -> dict[str, Any]:
    recipe = yaml.safe_load((RECIPES / "minilm.yaml").read_text())
    recipe["name"] = "minilm-blame"
    recipe["targets"] = [
        {
            "format": "onnx",
            "quantize": [{"method": "dynamic"}, {"method": "static"}, {"method": "static", "search": False}],
        }
    ]
    recipe["benchmark"] = {
        "threads": 2,
        "batch_size": [1],
        "sequence_lengths": [16, 128],
        "warmup": "auto",
        "runs": 100,
        "processes": 3,
        "max_processes": 5,
        "time_budget_s": 120,
        "reference": False,
    }
    results = _run(recipe, out / "minilm")
    static = results["quantization"].get("onnx-int8-static") or {}
    search = static.get("search") or {}
    attempts = search.get("attempts", [])
    figures: dict[str, Any] = {
        "blame": attempts[0].get("blame") if attempts else None,
        "attempts": [
            {
                "changes": {k: (f"{len(v)} nodes" if isinstance(v, list) else v) for k, v in a["changes"].items()},
                "cosine_mean": a.get("metrics", {}).get("cosine_mean"),
                "failures": a.get("failures", [])[:1],
                "seconds": a.get("seconds"),
            }
            for a in attempts
        ],
        "met_bar": search.get("met_bar"),
        "points": {},
    }
    for length in (16, 128):
        rows = _rows(results, (1, length))
        point: dict[str, Any] = {}
        for name in ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "onnx-int8-static-as-is"):
            if row := rows.get(name):
                vs = row.get("vs_fp32") or {}
                point[name] = {
                    "cosine_mean": row["metrics"].get("cosine_mean"),
                    "median_ms": row["latency_ms"]["median"],
                    "ci95": row["latency_ms"].get("ci95"),
                    "vs_fp32": vs.get("ratio"),
                    "vs_fp32_ci95": vs.get("ci95"),
                }
        figures["points"][f"b1 s{length}"] = point
    explained = results.get("explain", {})
    figures["float_share"] = {
        "before (as-is)": _float_share(explained, "onnx-int8-static-as-is@onnxruntime"),
        "after (shipped)": _float_share(explained, "onnx-int8-static@onnxruntime"),
    }
    figures["answers"] = {k: v.get("answer") for k, v in explained.items()}
    return figures


def cnn(out: Path) -> dict[str, Any]:
    recipe = yaml.safe_load((RECIPES / "quantize-budget.yaml").read_text())
    results = _run(recipe, out / "cnn")
    rows = _rows(results)
    quantization = results["quantization"]
    figures: dict[str, Any] = {}
    for fmt in ("onnx", "openvino"):
        fp32 = rows.get(f"{fmt}-fp32")
        default, budget = rows.get(f"{fmt}-int8-static"), rows.get(f"{fmt}-int8-static-within-0.3")
        if not (fp32 and default and budget):
            continue
        search = (quantization.get(f"{fmt}-int8-static-within-0.3") or {}).get("search") or {}
        chosen = search.get("attempts", [{}])[search.get("chosen", 0)]

        def drop(row: dict[str, Any], fp32: dict[str, Any] = fp32) -> float:
            return round(100 * (fp32["metrics"]["accuracy"] - row["metrics"]["accuracy"]), 2)

        figures[fmt] = {
            "budget_points": 0.3,
            "chosen_changes": chosen.get("changes"),
            "tuning_drop": chosen.get("drop"),
            "candidates": [
                {"changes": a["changes"], "drop": a.get("drop"), "latency_ms": a.get("latency_ms")}
                for a in search.get("attempts", [])
            ],
            "test_drop_default": drop(default),
            "test_drop_budget": drop(budget),
            "within_budget_on_test": drop(budget) <= 0.3,
            "median_ms_default": default["latency_ms"]["median"],
            "median_ms_budget": budget["latency_ms"]["median"],
            "vs_fp32_default": (default.get("vs_fp32") or {}).get("ratio"),
            "vs_fp32_budget": (budget.get("vs_fp32") or {}).get("ratio"),
        }
        sweep = (quantization.get(f"{fmt}-int8-static-sweep") or {}).get("calibration_sweep") or {}
        figures[fmt]["sweep"] = {"summary": sweep.get("summary"), "recommended": sweep.get("recommended")}
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-minilm", action="store_true")
    p.add_argument("--skip-cnn", action="store_true")
    p.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        figures = {}
        if not args.skip_cnn:
            figures["cnn"] = cnn(out)
        if not args.skip_minilm:
            figures["minilm"] = minilm(out)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    _print(figures)
    return 0


def _print(figures: dict[str, Any]) -> None:
    if m := figures.get("minilm"):
        print("\nMiniLM, onnxruntime static QDQ")
        blame = m["blame"] or {}
        print(f"  blame of the requested configuration: output SQNR {blame.get('output_sqnr_db')} dB")
        for g in blame.get("groups", [])[:4]:
            print(f"    {g['op_type']:22} {g['quantizers']:4} quantizers  +{g['output_gain_db']} dB without them")
        for s in blame.get("ranked", [])[:5]:
            print(f"    {s['tensor']:22} own SQNR {s['local_sqnr_db']} dB, +{s['output_gain_db']} dB without it")
        for i, a in enumerate(m["attempts"]):
            print(f"  attempt {i}: {a['changes'] or 'as requested'}: cosine {a['cosine_mean']}, {a['seconds']} s")
        for point, rows in m["points"].items():
            for name, r in rows.items():
                ratio = f"x{r['vs_fp32']:.2f}" if r["vs_fp32"] else ""
                print(f"  {point} {name:24} cosine {r['cosine_mean']}  {r['median_ms']:.3f} ms {ratio}")
            static, dynamic = rows.get("onnx-int8-static"), rows.get("onnx-int8-dynamic")
            if static and dynamic:
                ok = (static["cosine_mean"] or 0) >= COSINE_MEAN and static["median_ms"] < dynamic["median_ms"]
                print(f"  {point} goal (cosine >= {COSINE_MEAN}, faster than dynamic): {'MET' if ok else 'NOT MET'}")
        print(f"  operator time by precision: {m['float_share']}")
        for label, said in m["answers"].items():
            print(f"  {label}: {said}")
    if c := figures.get("cnn"):
        print("\nCNN (digits), budget 0.3 accuracy points")
        for fmt, f in c.items():
            print(
                f"  {fmt}: chose {f['chosen_changes'] or 'the requested configuration'} "
                f"(tuning drop {f['tuning_drop']}); "
                f"test drop {f['test_drop_budget']} (default {f['test_drop_default']}) "
                f"{'within' if f['within_budget_on_test'] else 'OVER'} the budget; "
                f"{f['median_ms_budget']:.3f} ms vs default {f['median_ms_default']:.3f} ms"
            )
            for a in f["candidates"]:
                print(f"    candidate {a['changes'] or 'requested'}: drop {a['drop']}, {a['latency_ms']} ms")
            rec = (f.get("sweep") or {}).get("recommended") or {}
            print(f"    sweep: {rec.get('why')}")


if __name__ == "__main__":
    raise SystemExit(main())
